-- priority is one of "urgent", "normal", "low"
return {
  check_on = "study",
  action = "download",
  priority = 1,
  match = function(study) return true end,
}
