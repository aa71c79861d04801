-- Sandbox escape attempt: must fail, never run.

return {
  check_on = "study",
  action = "download",
  match = function(study, series)
    local mt = getmetatable(study)
    mt.__newindex = nil
    return true
  end,
}
