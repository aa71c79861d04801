-- Sandbox escape attempt: must fail, never run.

return {
  check_on = "study",
  action = "download",
  match = function(study, series)
    local f, err = load("\27LuaT\0junk")
    if not f then error(err) end
    return true
  end,
}
