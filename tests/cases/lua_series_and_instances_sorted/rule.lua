return {
  check_on = "study",
  action = "download",
  match = function(study, series)
    local numbers = {}
    for i, s in ipairs(study.series) do numbers[i] = s.tags.SeriesNumber end
    local got = table.concat(numbers, ",")
    if got ~= "1,2,3,4,10,99" then return false, "series order " .. got end
    local inst = study.series[1].instances
    if #inst ~= 3 or inst[3].tags.InstanceNumber ~= "3" or type(inst[1].file_size) ~= "number" then
      return false, "instances"
    end
    return true
  end,
}
