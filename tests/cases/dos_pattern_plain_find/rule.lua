-- Plain-search DoS: a long needle that almost matches everywhere (quadratic in Lua's own search).
-- Must be stopped by the rule budget, never hang the daemon.

return {
  check_on = "study",
  action = "download",
  match = function(study, series)
    local s, needle = ("a"):rep(4e6), ("a"):rep(1e4) .. "b"
    for i = 1, 1000 do
      s:find(needle, 1, true)
      contains(s, needle, true)
    end
    return true
  end,
}
