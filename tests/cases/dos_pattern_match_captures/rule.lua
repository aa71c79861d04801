-- Pattern DoS: string.match(("a"):rep(n), "(.-)*(.-)*(.-)*b").  A '*' after
-- ')' is a literal, so every start position scans to the end: quadratic,
-- seconds in C for 50000 bytes.
-- Must be stopped by the rule budget, never hang the daemon.

return {
  check_on = "study",
  action = "download",
  match = function(study, series)
    return string.match(string.rep("a", 5000), "(.-)*(.-)*(.-)*b") == nil
      and string.match(string.rep("a", 50000), "(.-)*(.-)*(.-)*b") ~= nil
  end,
}
