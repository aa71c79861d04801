-- Sandbox escape attempt: must fail, never run.

return {
  check_on = "study",
  action = "download",
  match = function(study, series)
    local f = io.open("/etc/passwd")
    return f ~= nil
  end,
}
