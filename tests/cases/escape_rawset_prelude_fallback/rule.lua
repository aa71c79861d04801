-- Sandbox escape attempt: must fail, never run.

return {
  check_on = "study",
  action = "download",
  match = function(study, series)
    -- the prelude lives behind the environment's hidden metatable
    local mt = getmetatable(_ENV)
    rawset(mt, "__index", { contains = function() return true end })
    return contains("a", "b")
  end,
}
