-- Sandbox escape attempt: must fail, never run.

return {
  check_on = "study",
  action = "download",
  match = function(study, series)
    rawset(math, "floor", function() return 0 end)
    return true
  end,
}
