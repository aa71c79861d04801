-- Naming hooks for rule.json (NamingHook): a table of name functions.
return {
  name = function(study)
    return { "hooked", study.tags.StudyID, study.tags.StudyDescription }
  end,
  series_name = function(study, series)
    return "series-" .. series.tags.SeriesNumber
  end,
  file_name = function(study, series, instance)
    return instance.tags.InstanceNumber .. ".dcm"
  end,
}
