return {
  check_on = "study",
  action = "download",
  name = function(study) error("cannot name this") end,
  match = function(study, series)
    return true
  end,
}
