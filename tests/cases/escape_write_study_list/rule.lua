-- Sandbox escape attempt: must fail, never run.

return {
  check_on = "study",
  action = "download",
  match = function(study, series)
    table.insert(study.series, { tags = {} })
    return true
  end,
}
