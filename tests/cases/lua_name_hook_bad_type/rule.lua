return {
  check_on = "study",
  action = "download",
  name = function(study) return true end,
  match = function(study, series)
    return true
  end,
}
