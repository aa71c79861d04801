-- Sandbox escape attempt: must fail, never run.

return {
  check_on = "study",
  action = "download",
  match = function(study, series)
    local s = "x"
    while true do s = s .. s end
  end,
}
