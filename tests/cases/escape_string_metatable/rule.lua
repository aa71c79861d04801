-- Sandbox escape attempt: must fail, never run.

return {
  check_on = "study",
  action = "download",
  match = function(study, series)
    getmetatable("").__index.upper = function() return "pwned" end
    return true
  end,
}
