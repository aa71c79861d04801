return {
  check_on = "study",
  action = "download",
  match = function(study, series)
    error("boom at runtime")
  end,
}
