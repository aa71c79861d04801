return { check_on = "patient", action = "download", match = function() return true end }
