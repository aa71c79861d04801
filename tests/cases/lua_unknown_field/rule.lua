return {
  check_on = "study",
  action = "download",
  priority = 3,
  match = function(study, series)
    return true
  end,
}
