return {
  check_on = "series",
  action = "download",
  match = function(study, series)
    return series.instances_count >= 3, "too few instances"
  end,
}
