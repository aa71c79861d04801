return {
  check_on = "study",
  action = = "download",
}
