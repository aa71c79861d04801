-- Sandbox escape attempt: must fail, never run.

return {
  check_on = "study",
  action = "download",
  match = function(study, series)
    local s = string.rep("x", 1 << 30)
    return #s > 0
  end,
}
