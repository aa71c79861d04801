return {
  check_on = "study",
  action = "download",
  urgency = 3,
  match = function(study, series)
    return true
  end,
}
