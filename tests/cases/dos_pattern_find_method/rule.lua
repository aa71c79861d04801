-- Pattern DoS: backtracking find through a string method (runs in C natively).
-- Must be stopped by the rule budget, never hang the daemon.

return {
  check_on = "study",
  action = "download",
  match = function(study, series)
    return ("a"):rep(1e4):find(".-.-.-.-x") ~= nil
  end,
}
