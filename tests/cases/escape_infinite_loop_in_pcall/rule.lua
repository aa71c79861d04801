-- Sandbox escape attempt: must fail, never run.

return {
  check_on = "study",
  action = "download",
  match = function(study, series)
    for i = 1, 100 do
      pcall(function() while true do end end)
    end
    return true
  end,
}
