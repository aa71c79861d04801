-- A naming hook used by named_by_hook.json ("NamingHook": "hooks/names.lua"; hooks live
-- in a sub-folder so they are not loaded as rules).  It returns a
-- table with any of name / series_name / file_name; each gets the study (and series,
-- instance) and returns a string ("/" makes sub-folders) or a list of components.
return {
  name = function(study)
    return (study.tags.AccessionNumber or "NOACC") .. "_" .. (study.tags.StudyDate or "")
  end,
  series_name = function(study, series)
    return string.format("%03d_%s", tonumber(series.tags.SeriesNumber) or 0,
                         series.tags.SeriesDescription or "")
  end,
  file_name = function(study, series, instance)
    return string.format("%05d.dcm", tonumber(instance.tags.InstanceNumber) or 0)
  end,
}
