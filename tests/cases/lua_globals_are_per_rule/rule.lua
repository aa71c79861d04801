-- A rule may keep its own globals (they live in its own environment).
counter = 0
return {
  check_on = "study",
  action = "download",
  match = function(study)
    counter = counter + 1
    contains = nil       -- shadows the prelude's helper for this rule only
    return counter == 1 and _G.counter == 1
  end,
}
