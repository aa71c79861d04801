-- Pattern DoS through the prelude's matches().
-- Must be stopped by the rule budget, never hang the daemon.

return {
  check_on = "study",
  action = "download",
  match = function(study, series)
    return matches(("a"):rep(3000), ".-.-.-x")
  end,
}
