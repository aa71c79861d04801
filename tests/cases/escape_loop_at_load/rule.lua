-- Sandbox escape attempt: must fail, never run.
while true do end

return {
  check_on = "study",
  action = "download",
  match = function(study, series)
    return true
  end,
}
