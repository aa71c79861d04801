-- Sandbox escape attempt: must fail, never run.

return {
  check_on = "study",
  action = "download",
  match = function(study, series)
    local bytes = string.dump(function() return 1 end)
    return bytes ~= nil
  end,
}
