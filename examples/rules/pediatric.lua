-- A Lua rule: children's head/brain studies, decided on the patient's age at the
-- study date.  A Lua rule returns a table; `match` gets the study (see the README's
-- "Study object") and returns true/false and, optionally, a reason shown by tools.
return {
  check_on = "study",
  action = "download",
  comment = "patients under 18 at the study date, head or brain studies",

  match = function(study)
    local age = age_years(study.patient.PatientBirthDate, study.tags.StudyDate)
    if not age then
      return false, "no usable PatientBirthDate/StudyDate"
    end
    if age >= 18 then
      return false, "patient is " .. age .. " years old"
    end
    local desc = study.tags.StudyDescription or ""
    return contains(desc, "head") or contains(desc, "brain"), "description: " .. desc
  end,

  -- Folder: <year of study>/<PatientID>-<StudyID>.  Returning a list keeps each value in
  -- one component even if it contains a "/"; every component is sanitised anyway.
  name = function(study)
    local d = study.tags.StudyDate or "UNKNOWN"
    return { d:sub(1, 4), (study.patient.PatientID or "NoPID") .. "-" .. (study.tags.StudyID or "UNKNOWN") }
  end,
}
