-- Sandbox escape attempt: must fail, never run.

return {
  check_on = "study",
  action = "download",
  match = function(study, series)
    local function down(n) return down(n + 1) + 1 end
    return down(1) > 0
  end,
}
