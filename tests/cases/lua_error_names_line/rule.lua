return {
  check_on = "study",
  action = "download",
  match = function(study, series)
    local x = nil
    return x.field
  end,
}
