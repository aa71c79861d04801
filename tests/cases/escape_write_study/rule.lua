-- Sandbox escape attempt: must fail, never run.

return {
  check_on = "study",
  action = "download",
  match = function(study, series)
    study.tags.StudyDescription = "changed"
    return true
  end,
}
