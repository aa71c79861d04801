-- Sandbox escape attempt: must fail, never run.

return {
  check_on = "study",
  action = "download",
  match = function(study, series)
    error(setmetatable({}, { __tostring = function() while true do end end }))
  end,
}
