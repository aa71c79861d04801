-- Sandbox escape attempt: must fail, never run.
local os = require("os")

return {
  check_on = "study",
  action = "download",
  match = function(study, series)
    return true
  end,
}
