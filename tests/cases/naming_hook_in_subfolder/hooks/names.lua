return { name = function(study) return { "sub-" .. study.tags.StudyID } end }
