return {
  check_on = "study",
  action = "download",
  match = function(study, series)
    local n = #study.series
    return n >= 2, "only " .. n .. " series, want 2"
  end,
}
