-- Sandbox escape attempt: must fail, never run.

return {
  check_on = "study",
  action = "download",
  match = function(study, series)
    return debug.getinfo(1) ~= nil
  end,
}
