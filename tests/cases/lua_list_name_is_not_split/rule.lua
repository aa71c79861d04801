return {
  check_on = "study",
  action = "download",
  name = function(study)
    return { study.patient.PatientID, pn(study.patient.PatientName, "family") }
  end,
  match = function(study, series)
    return true
  end,
}
