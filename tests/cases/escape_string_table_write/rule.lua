-- Sandbox escape attempt: must fail, never run.

return {
  check_on = "study",
  action = "download",
  match = function(study, series)
    string.find = function() return 1 end
    return true
  end,
}
