-- Pattern DoS in an xpcall message handler (it runs under the budget too).
-- Must be stopped by the rule budget, never hang the daemon.

return {
  check_on = "study",
  action = "download",
  match = function(study, series)
    local s = ("a"):rep(1e4)
    xpcall(function() error("boom") end, function(m) return s:find(".-.-.-.-x") end)
    return true
  end,
}
