-- Sandbox escape attempt: must fail, never run.
dofile("/etc/passwd")

return {
  check_on = "study",
  action = "download",
  match = function(study, series)
    return true
  end,
}
