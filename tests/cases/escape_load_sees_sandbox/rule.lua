-- Sandbox escape attempt: must fail, never run.

return {
  check_on = "study",
  action = "download",
  match = function(study, series)
    local f = assert(load("return io.open"))
    return f() ~= nil
  end,
}
