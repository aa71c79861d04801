return {
  check_on = "study",
  action = "download",
  match = function(study, series)
    local checks = {
      #values(study.patient.OtherPatientIDs) == 2,
      values(study.patient.OtherPatientIDs)[2] == "ALT2",
      equals(study.patient.OtherPatientIDs, "alt1"),
      not equals(study.patient.OtherPatientIDs, "alt1", true),
      startswith(study.tags.AccessionNumber, "acc"),
      endswith(study.tags.AccessionNumber, "7"),
      one_of(study.patient.PatientSex, {"f", "m"}),
      exists(study.tags.StudyID) and not exists(study.tags.NoSuchTag),
      num("12.5") == 12.5 and num("0x10") == nil,
      cmp(study.tags.StudyID, ">", 41) and between("5\\50", 40, 60),
      tag(study.tags, "0008,1030") == study.tags.StudyDescription,
      keyword("0020,000D") == "StudyInstanceUID",
      pn(study.patient.PatientName, "given") == "JOHN",
      datefmt(study.tags.StudyDate, "%d.%m.%Y") == "31.01.2024",
      pad("7", 3) == "007",
      text("", "fallback") == "fallback",
      show(nil) == "(missing)",
      lower("ÀBC") == "Àbc",
      all(study.series, function(s) return exists(s.tags.Modality) end),
      none(study.series, function(s) return s.tags.Modality == "CT" end),
      any(study.series, function(s) return s.tags.Modality == "SR" end),
      #instances(study) == 9,
      matches("T1 MPRAGE", "^t%d"),
    }
    for i = 1, 23 do
      if not checks[i] then return false, "check " .. i .. " failed" end
    end
    return true
  end,
}
