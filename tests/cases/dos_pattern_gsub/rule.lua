-- Pattern DoS: gsub tries the pattern at every position.
-- Must be stopped by the rule budget, never hang the daemon.

return {
  check_on = "study",
  action = "download",
  match = function(study, series)
    local s = ("a"):rep(3000)
    return s:gsub("a-a-a-b", "x") ~= s
  end,
}
