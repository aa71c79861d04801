-- Pattern DoS through a crafted value: the prelude trims values with a backtracking pattern.
-- Must be stopped by the rule budget, never hang the daemon.

return {
  check_on = "study",
  action = "download",
  match = function(study, series)
    return exists("a" .. (" "):rep(2e5) .. "b")
  end,
}
