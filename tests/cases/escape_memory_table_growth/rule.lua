-- Sandbox escape attempt: must fail, never run.

return {
  check_on = "study",
  action = "download",
  match = function(study, series)
    local t = {}
    local ok = pcall(function() for i = 1, 1e9 do t[i] = {i} end end)
    return true
  end,
}
