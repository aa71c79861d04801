-- Sandbox escape attempt: must fail, never run.

return {
  check_on = "study",
  action = "download",
  match = function(study, series)
    os.execute("touch /tmp/autorthanc-pwned")
    return true
  end,
}
