-- Pattern DoS inside pcall: the stop can't be swallowed.
-- Must be stopped by the rule budget, never hang the daemon.

return {
  check_on = "study",
  action = "download",
  match = function(study, series)
    local s = ("a"):rep(1e4)
    for i = 1, 100 do
      pcall(string.find, s, ".-.-.-.-x")
      pcall(function() return s:match("(.-)*(.-)*b") end)
    end
    return true
  end,
}
