-- Pattern DoS: gmatch iterator.
-- Must be stopped by the rule budget, never hang the daemon.

return {
  check_on = "study",
  action = "download",
  match = function(study, series)
    for _ in ("a"):rep(3000):gmatch("a*a*a*b") do end
    return true
  end,
}
