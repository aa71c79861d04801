-- Sandbox escape attempt: must fail, never run.

return {
  check_on = "study",
  action = "download",
  match = function(study, series)
    while true do end
  end,
}
