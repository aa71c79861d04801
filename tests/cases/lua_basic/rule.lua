-- A hand-written rule: MR brain studies with at least three DWI series.
return {
  check_on = "study",
  action = "download",
  comment = "hand-written",
  match = function(study)
    if not contains(study.tags.StudyDescription, "brain") then
      return false, "not a brain study"
    end
    local dwi = count(study.series, function(s) return matches(s.tags.SeriesDescription, "^dwi") end)
    return dwi >= 3, dwi .. " DWI series"
  end,
  -- a string is split on "/", so this is three folders
  name = function(study)
    return study.patient.PatientID .. "/" .. study.tags.StudyDate:sub(1, 4) .. "/" .. study.tags.StudyDescription
  end,
}
