-- lpattern_probe.lua - a rule that exercises the pattern functions rules get.
--
-- tests/unit/test_lpattern.c runs this file twice: as a rule in the engine
-- (string.find/match/gmatch/gsub and string methods are the guarded ones:
-- native when cheap, rules/lpattern.lua otherwise) and in a plain Lua state
-- with the native functions.  match() returns true and, as its reason, one
-- "<case>=<hash of the results>" per case; both runs must give the same
-- text.  The cases are chosen so that many take the Lua path in the engine
-- (long subjects, backtracking patterns) yet finish quickly, and cover
-- number arguments, string and negative inits, plain search, replacement
-- functions and tables, error messages and their positions.

local text = ("lorem ipsum dolor sit amet, "):rep(200)
local digits = ("1"):rep(3000) .. "2"
local big = ("a"):rep(200000) .. "needle"

local function hash(s)
    local h = 2166136261
    for i = 1, #s do
        h = ((h ~ s:byte(i)) * 16777619) & 0xffffffff
    end
    return string.format("%08x", h)
end

local function show(...)
    local out = {}
    for i = 1, select("#", ...) do
        local v = select(i, ...)
        out[i] = type(v) == "string" and ("%q"):format(v) or tostring(v)
    end
    return table.concat(out, ",")
end

-- An error message without the file name (the two runs name it differently).
local function clean(e)
    e = tostring(e)
    return (e:gsub("^.-probe%.lua:", "probe:"))
end

local function try(f)
    local r = table.pack(pcall(f))
    if r[1] then return show(table.unpack(r, 2, r.n)) end
    return "error " .. clean(r[2])
end

local function collect(it)
    local out = {}
    for a, b in it do out[#out + 1] = tostring(a) .. "/" .. tostring(b) end
    return #out .. ":" .. table.concat(out, " ", 1, math.min(#out, 50))
end

local cases = {
    { "cheap_find", function() return string.find("hello world", "o w") end },
    { "cheap_method", function() return ("key=value"):match("(%w+)=(%w+)") end },
    { "number_subject", function() return string.find(1234512345, 45, 1), string.gsub(12345, "3", "x") end },
    { "number_init", function() return ("abcabc"):find("b", 3.0), ("abcabc"):find("b", "4") end },
    { "backref_slow", function() return (("ab"):rep(2000) .. "abx"):find("(a)(b)%1%2x") end },
    { "gsub_slow", function() return text:gsub("%s+", " ") end },
    { "gsub_slow_max", function() return text:gsub("%s+", "_", 5) end },
    { "gsub_slow_fn", function() return text:gsub("(%a+)", function(w) return #w > 4 and w:upper() end) end },
    { "gsub_slow_tbl", function() return text:gsub("%a+", { lorem = "L", sit = false }) end },
    { "gsub_slow_pos", function() return text:gsub("()dolor()", "%2-%1") end },
    { "gsub_slow_cap", function() return text:gsub("%s+(%a)", "%1", 7) end },
    { "gsub_slow_fn2", function() return text:gsub("(%a+)%s", function(w) return #w end) end },
    { "gsub_slow_tbl2", function() return text:gsub("%a+%f[%A]", { dolor = 1 }) end },
    { "gmatch_slow2", function() return collect(text:gmatch("%a+%f[%A]")) end },
    { "gmatch_slow", function() return collect(text:gmatch("%a+")) end },
    { "gmatch_slow_pairs", function() return collect(string.gmatch(text, "(%a+) (%a+)")) end },
    { "gmatch_init", function() return collect(text:gmatch("(%a+),", -40)) end },
    { "match_slow", function() return text:match("(%a+) (%a+),$") end },
    { "find_slow_init", function() return digits:find("1-2", "10"), digits:find("1-2", -50) end },
    { "find_slow_caps", function() return digits:find("(1-)()2") end },
    { "plain_big", function() return big:find(("a"):rep(10) .. "needle", 1, true) end },
    { "plain_big_init", function() return big:find("aneedle", -100, true), big:find("aaneedle", 7) end },
    { "plain_big_miss", function() return big:find(("a"):rep(10) .. "x", 1, true) end },
    { "frontier_slow", function() return collect(text:gmatch("%f[%a]%a%a%a%f[%A]")) end },
    { "balance_slow", function() return (("(x)"):rep(1000) .. "((y))"):find("%b()%)") end },
    { "err_cheap", function() return try(function() return ("abc"):find("[a") end) end },
    { "err_slow", function() return try(function() return ("a"):rep(3000):find("a*a*a*[") end) end },
    { "err_slow_line", function() return try(function()
        local r = string.match(("a"):rep(3000), "a*a*a*%1")
        return r
    end) end },
    { "err_gmatch_slow", function() return try(function()
        for _ in ("a"):rep(3000):gmatch("a*a*(") do end
    end) end },
    { "err_gsub_repl", function() return try(function() return text:gsub("%s+", "%2") end) end },
    { "err_gsub_value", function() return try(function() return text:gsub("%a+", function() return {} end) end) end },
    { "err_fn_inside", function() return try(function()
        return text:gsub("%a+", function(w) if w == "amet" then error("stop at " .. w) end end)
    end) end },
    { "err_arg1", function() return try(function() local r = string.find(nil, "x") return r end) end },
    { "err_arg3", function() return try(function() local r = ("x"):find("x", 1.5) return r end) end },
    { "err_gsub_arg", function() return try(function() local r = text:gsub("%s+", true) return r end) end },
    { "err_gsub_max", function() return try(function() local r = text:gsub("%s+", "", "x") return r end) end },
}

local function probe()
    local out = {}
    for _, c in ipairs(cases) do
        out[#out + 1] = c[1] .. "=" .. hash(try(c[2]))
    end
    return table.concat(out, " ")
end

return {
    check_on = "study",
    action = "download",
    match = function() return true, probe() end,
}
