-- A Lua rule using the prelude's date helpers.
return {
  check_on = "study",
  action = "download",
  match = function(study)
    local years = age_years(study.patient.PatientBirthDate, study.tags.StudyDate)
    if years ~= 43 then return false, "age is " .. tostring(years) end
    if date("20240131") ~= 20240131000000 or date("2024-02-30") ~= nil then return false, "date()" end
    if time("10:15") ~= 101500 or age("006M") ~= 0.5 then return false, "time()/age()" end
    return true
  end,
}
