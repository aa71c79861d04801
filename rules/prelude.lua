-- prelude.lua - the helper functions every rule sees as read-only globals.
--
-- Promises:
--  * Pure functions of their arguments: no io/os/require, no globals read or
--    written, no state a rule can observe (the one internal table is a bounded
--    cache of case-folded Lua patterns).  Only functions are exported, so the
--    sandbox can expose the returned table read-only as it is.
--  * Total on odd input: a nil or non-string tag value never raises, it just
--    does not pass ("a missing tag does not pass").  Only a rule author's
--    mistakes raise: a malformed Lua pattern given to matches(), an unknown
--    cmp() operator or kind, pn() part or datefmt() code.
--  * exists(v) means present and not empty: DICOM type 2 tags may be sent
--    empty, and an empty tag "exists" for no rule.
--  * Case folding is ASCII only: A-Z and a-z compare equal when
--    case_sensitive is not true; "É"/"é" or "Ω"/"ω" are different letters.
--  * Multi-valued tags (Orthanc gives "A\\B" with a backslash separator): the
--    string tests (contains, equals, startswith, endswith, matches, one_of)
--    and the comparisons (cmp, between) pass when ANY value passes.  When the
--    needle / pattern itself holds a backslash the whole raw value is tested.
--  * Dates: date() maps DICOM DA ("20240131"), DT ("20240131120000.5+0100",
--    partial forms allowed, the UTC offset is ignored) and ISO
--    ("2024-01-31", "2024-01-31T12:00") to one comparable number
--    YYYYMMDDhhmmss[.ffffff]; time() maps TM ("120000.5", "12:00") to
--    hhmmss[.ffffff]; age() maps AS ("045Y", "006M") to years.
-- The JSON compiler (compile.lua) emits calls to exactly these functions, so
-- `check --emit-lua` output runs unchanged as a hand-written Lua rule.

local type, tostring, tonumber, error, pairs = type, tostring, tonumber, error, pairs
local floor = math.floor
local setmetatable = setmetatable
local find, sub, gsub, match, byte, char, format, rep =
    string.find, string.sub, string.gsub, string.match, string.byte, string.char,
    string.format, string.rep
local concat = table.concat

-- Patterns run on what rules pass in (values, needles, patterns): use the
-- budget-bounded versions (rules/lpattern.lua; native whenever provably
-- cheap), so no argument can make a helper run unbounded in C.
local M = ...
local guarded = type(M) == "table" and M.lpattern and M.lpattern.guarded
if guarded then find, gsub, match = guarded.find, guarded.gsub, guarded.match end

local P = {}

-- ---- strings ---------------------------------------------------------------

-- The text of a tag value: strings as they are, numbers as their decimal
-- text (integers without ".0"), anything else nil.
local function str(v)
    local t = type(v)
    if t == "string" then return v end
    if t == "number" then
        if v == floor(v) and v > -1e15 and v < 1e15 then return format("%d", v) end
        return tostring(v)
    end
    return nil
end

local UPPER_TO_LOWER = {}
for c = 65, 90 do UPPER_TO_LOWER[char(c)] = char(c + 32) end

-- ASCII-only lower case (string.lower follows the C locale, this does not).
local function lower(s)
    s = str(s)
    if s == nil then return nil end
    if not find(s, "[A-Z]") then return s end
    return (gsub(s, "[A-Z]", UPPER_TO_LOWER))
end
P.lower = lower

local function trim(s)
    return match(s, "^[ %z]*(.-)[ %z]*$")
end

-- values("A\\B") -> {"A", "B"}; values(nil) -> {}.
function P.values(s)
    s = str(s)
    local out = {}
    if s == nil then return out end
    local i, n = 1, 0
    while true do
        local j = find(s, "\\", i, true)
        n = n + 1
        if not j then
            out[n] = sub(s, i)
            return out
        end
        out[n] = sub(s, i, j - 1)
        i = j + 1
    end
end

-- Call test(value, a, b, c) for each value of a (possibly multi-valued) tag
-- value s; true when one passes.  whole: test the raw string only.
local function any_value(s, whole, test, a, b, c)
    if whole or not find(s, "\\", 1, true) then return test(s, a, b, c) end
    local i = 1
    while true do
        local j = find(s, "\\", i, true)
        if test(sub(s, i, j and j - 1 or nil), a, b, c) then return true end
        if not j then return false end
        i = j + 1
    end
end

local function has_backslash(s)
    return find(s, "\\", 1, true) ~= nil
end

-- contains(value, needle [, case_sensitive]): needle is a substring.
function P.contains(s, needle, cs)
    s, needle = str(s), str(needle)
    if s == nil or needle == nil then return false end
    if not cs then s, needle = lower(s), lower(needle) end
    return find(s, needle, 1, true) ~= nil
end

local function eq(v, x) return v == x end
local function starts(v, x) return sub(v, 1, #x) == x end
local function ends(v, x) return #x == 0 or sub(v, -#x) == x end

local function string_test(test)
    return function(s, x, cs)
        s, x = str(s), str(x)
        if s == nil or x == nil then return false end
        if not cs then s, x = lower(s), lower(x) end
        return any_value(s, has_backslash(x), test, x)
    end
end

-- equals / startswith / endswith(value, text [, case_sensitive])
P.equals = string_test(eq)
P.startswith = string_test(starts)
P.endswith = string_test(ends)

-- one_of(value, {"A", "B"} [, case_sensitive]): a value equals one of the list.
function P.one_of(s, list, cs)
    s = str(s)
    if s == nil or type(list) ~= "table" then return false end
    if not cs then s = lower(s) end
    for i = 1, #list do
        local x = str(list[i])
        if x ~= nil then
            if not cs then x = lower(x) end
            if any_value(s, has_backslash(x), eq, x) then return true end
        end
    end
    return false
end

-- exists(value): present and not empty (DICOM type 2 tags may be present
-- but empty; such a tag does not "exist" for a rule).
function P.exists(s)
    s = str(s)
    return s ~= nil and trim(s) ~= ""
end

-- ---- Lua patterns with ASCII case folding -----------------------------------

-- Rewrite a Lua pattern so that it matches letters in either case: a letter
-- outside a set becomes "[xX]", inside a set both cases are listed, and a
-- letter range "a-f" gets its other-case twin "A-F".  %-escapes (classes
-- like %a, %U; %b and %f arguments; back-references) are kept as they are.
-- Malformed patterns are returned unchanged so string.find reports them.
local function is_letter(c)
    return c and ((c >= "a" and c <= "z") or (c >= "A" and c <= "Z"))
end
local function other_case(c)
    local b = byte(c)
    if b >= 97 then return char(b - 32) end
    return char(b + 32)
end

local function fold_set(p, i, out)
    -- p[i] is "[" ; returns the index after the closing "]" or nil.
    out[#out + 1] = "["
    i = i + 1
    if sub(p, i, i) == "^" then out[#out + 1] = "^"; i = i + 1 end
    local first = true
    while true do
        local c = sub(p, i, i)
        if c == "" then return nil end
        if c == "]" and not first then
            out[#out + 1] = "]"
            return i + 1
        end
        first = false
        if c == "%" then
            local e = sub(p, i + 1, i + 1)
            if e == "" then return nil end
            out[#out + 1] = c .. e
            i = i + 2
        elseif sub(p, i + 1, i + 1) == "-" and sub(p, i + 2, i + 2) ~= "]" and sub(p, i + 2, i + 2) ~= "" then
            local hi = sub(p, i + 2, i + 2)
            out[#out + 1] = c .. "-" .. hi
            if is_letter(c) and is_letter(hi) and (c <= "Z") == (hi <= "Z") then
                out[#out + 1] = other_case(c) .. "-" .. other_case(hi)
            end
            i = i + 3
        else
            out[#out + 1] = c
            if is_letter(c) then out[#out + 1] = other_case(c) end
            i = i + 1
        end
    end
end

local function fold_pattern(p)
    local out, i, n = {}, 1, #p
    while i <= n do
        local c = sub(p, i, i)
        if c == "%" then
            local e = sub(p, i + 1, i + 1)
            if e == "" then return p end
            if e == "b" then
                out[#out + 1] = sub(p, i, i + 3)
                i = i + 4
            elseif e == "f" then
                out[#out + 1] = "%f"
                if sub(p, i + 2, i + 2) ~= "[" then return p end
                i = fold_set(p, i + 2, out)
                if not i then return p end
            else
                out[#out + 1] = c .. e
                i = i + 2
            end
        elseif c == "[" then
            i = fold_set(p, i, out)
            if not i then return p end
        elseif is_letter(c) then
            out[#out + 1] = "[" .. c .. other_case(c) .. "]"
            i = i + 1
        else
            out[#out + 1] = c
            i = i + 1
        end
    end
    return concat(out)
end

local folded_cache, folded_count = {}, 0
local function folded(p)
    local f = folded_cache[p]
    if f then return f end
    f = fold_pattern(p)
    if folded_count >= 512 then folded_cache, folded_count = {}, 0 end
    folded_cache[p] = f
    folded_count = folded_count + 1
    return f
end

local function pattern_test(v, pat) return find(v, pat) ~= nil end

-- matches(value, lua_pattern [, case_sensitive]): string.find semantics
-- (unanchored unless the pattern says ^ / $); letters fold unless cs.
function P.matches(s, pat, cs)
    s = str(s)
    if s == nil then return false end
    if type(pat) ~= "string" then error("matches: the pattern must be a string", 2) end
    local p = cs and pat or folded(pat)
    return any_value(s, has_backslash(pat), pattern_test, p)
end

-- ---- numbers, dates, times, ages --------------------------------------------

-- num("12.5") -> 12.5; DICOM IS/DS text only (no hex, inf, nan).
local function num(s)
    if type(s) == "number" then return s end
    s = str(s)
    if s == nil then return nil end
    s = trim(s)
    if match(s, "^[+-]?%d+%.?%d*$") or match(s, "^[+-]?%.%d+$")
        or match(s, "^[+-]?%d+%.?%d*[eE][+-]?%d+$") or match(s, "^[+-]?%.%d+[eE][+-]?%d+$") then
        return tonumber(s)
    end
    return nil
end
P.num = num

local function leap(y) return (y % 4 == 0 and y % 100 ~= 0) or y % 400 == 0 end
local MONTH_DAYS = { 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31 }

-- Parse DICOM DT (of which DA is a prefix) into its parts; nil if invalid.
local function dt_parts(s)
    s = str(s)
    if s == nil then return nil end
    s = trim(s)
    -- ISO forms: 2024-01-31, 2024-01-31T12:30[:45[.5]], "2024/01/31", "2024.01.31"
    local y, mo, d, rest = match(s, "^(%d%d%d%d)[-./](%d%d)[-./](%d%d)(.*)$")
    if y then
        if rest ~= "" then
            local h, mi, tail = match(rest, "^[T ](%d%d):(%d%d)(.*)$")
            if not h then return nil end
            local sec, frac = match(tail, "^:(%d%d)(%.?%d*)$")
            if tail ~= "" and not sec then return nil end
            rest = h .. mi .. (sec or "") .. (frac or "")
        end
        s = y .. mo .. d .. rest
    end
    local digits, frac, zone = match(s, "^(%d+)(%.?%d*)(.*)$")
    if not digits then return nil end
    local nd = #digits
    if nd < 4 or nd > 14 or nd % 2 ~= 0 then return nil end
    if frac ~= "" and (nd ~= 14 or #frac < 2 or #frac > 7) then return nil end
    if zone ~= "" and not match(zone, "^[+-]%d%d%d%d$") then return nil end
    local p = {
        year = tonumber(sub(digits, 1, 4)),
        month = tonumber(sub(digits, 5, 6)) or 1,
        day = tonumber(sub(digits, 7, 8)) or 1,
        hour = tonumber(sub(digits, 9, 10)) or 0,
        min = tonumber(sub(digits, 11, 12)) or 0,
        sec = tonumber(sub(digits, 13, 14)) or 0,
        frac = frac ~= "" and tonumber("0" .. frac) or 0,
    }
    if p.month < 1 or p.month > 12 or p.day < 1 or p.hour > 23 or p.min > 59 or p.sec > 60 then
        return nil
    end
    local md = MONTH_DAYS[p.month]
    if p.month == 2 and leap(p.year) then md = 29 end
    if p.day > md then return nil end
    return p
end

-- date(s) -> YYYYMMDDhhmmss (+ fraction) as a number, or nil.
function P.date(s)
    local p = dt_parts(s)
    if not p then return nil end
    local v = p.year * 10000000000 + p.month * 100000000 + p.day * 1000000
        + p.hour * 10000 + p.min * 100 + p.sec
    if p.frac ~= 0 then v = v + p.frac end
    return v
end

-- time(s) -> hhmmss (+ fraction) as a number, or nil.  "12", "1230",
-- "123045.5" and "12:30[:45[.5]]".
function P.time(s)
    s = str(s)
    if s == nil then return nil end
    s = trim(s)
    local h, mi, tail = match(s, "^(%d%d):(%d%d)(.*)$")
    if h then
        local sec, frac = match(tail, "^:(%d%d)(%.?%d*)$")
        if tail ~= "" and not sec then return nil end
        s = h .. mi .. (sec or "") .. (frac or "")
    end
    local digits, frac = match(s, "^(%d+)(%.?%d*)$")
    if not digits then return nil end
    local nd = #digits
    if nd < 2 or nd > 6 or nd % 2 ~= 0 then return nil end
    if frac ~= "" and (nd ~= 6 or #frac < 2 or #frac > 7) then return nil end
    local hh = tonumber(sub(digits, 1, 2))
    local mm = tonumber(sub(digits, 3, 4)) or 0
    local ss = tonumber(sub(digits, 5, 6)) or 0
    if hh > 23 or mm > 59 or ss > 60 then return nil end
    local v = hh * 10000 + mm * 100 + ss
    if frac ~= "" then v = v + tonumber("0" .. frac) end
    return v
end

-- age("045Y") -> 45; "006M" -> 0.5; "014D" -> days / 365.25; a plain number
-- is taken as years.
function P.age(s)
    if type(s) == "number" then return s end
    s = str(s)
    if s == nil then return nil end
    s = trim(s)
    local n, unit = match(s, "^(%d+)([DWMYdwmy]?)$")
    if not n then return num(s) end
    n = tonumber(n)
    unit = lower(unit)
    if unit == "d" then return n / 365.25 end
    if unit == "w" then return n * 7 / 365.25 end
    if unit == "m" then return n / 12 end
    return n
end

-- age_years(birth, at): whole years from the DA/DT birth to the DA/DT at
-- (e.g. age_years(study.patient.PatientBirthDate, study.tags.StudyDate)).
function P.age_years(birth, at)
    local b, a = dt_parts(birth), dt_parts(at)
    if not b or not a then return nil end
    local years = a.year - b.year
    if a.month < b.month or (a.month == b.month and a.day < b.day) then years = years - 1 end
    return years
end

local CONVERT = { number = num, date = P.date, time = P.time, age = P.age }
local COMPARE = {
    ["<"] = function(x, y) return x < y end,
    ["<="] = function(x, y) return x <= y end,
    [">"] = function(x, y) return x > y end,
    [">="] = function(x, y) return x >= y end,
    ["=="] = function(x, y) return x == y end,
    ["~="] = function(x, y) return x ~= y end,
}

local function converter(kind)
    local conv = CONVERT[kind or "number"]
    if not conv then error("unknown kind '" .. tostring(kind) .. "' (allowed: number, date, time, age)", 3) end
    return conv
end

local function cmp_one(v, conv, f, bound)
    local x = conv(v)
    return x ~= nil and f(x, bound)
end

-- cmp(value, op, bound [, kind]): op is <, <=, >, >=, ==, ~=; kind says how
-- both sides are read: "number" (default), "date", "time" or "age".
function P.cmp(s, op, bound, kind)
    local conv = converter(kind)
    local f = COMPARE[op]
    if not f then error("cmp: unknown operator '" .. tostring(op) .. "' (allowed: <, <=, >, >=, ==, ~=)", 2) end
    s = str(s)
    local b = conv(bound)
    if s == nil or b == nil then return false end
    return any_value(s, false, cmp_one, conv, f, b)
end

local function within(v, conv, lo, hi)
    local x = conv(v)
    return x ~= nil and x >= lo and x <= hi
end

-- between(value, low, high [, kind]): low <= value <= high.
function P.between(s, lo, hi, kind)
    local conv = converter(kind)
    s = str(s)
    lo, hi = conv(lo), conv(hi)
    if s == nil or lo == nil or hi == nil then return false end
    return any_value(s, false, within, conv, lo, hi)
end

-- ---- lists ------------------------------------------------------------------

-- count(list, pred): how many items pass pred(item).
function P.count(list, pred)
    local n = 0
    if type(list) ~= "table" then return 0 end
    for i = 1, #list do
        if pred(list[i]) then n = n + 1 end
    end
    return n
end

-- any(list, pred): at least one item passes.
function P.any(list, pred)
    if type(list) ~= "table" then return false end
    for i = 1, #list do
        if pred(list[i]) then return true end
    end
    return false
end

-- all(list, pred): no item fails (true for an empty list).
function P.all(list, pred)
    if type(list) ~= "table" then return true end
    for i = 1, #list do
        if not pred(list[i]) then return false end
    end
    return true
end

-- none(list, pred): no item passes.
function P.none(list, pred)
    return not P.any(list, pred)
end

-- instances(study [, series]): the instances of one series, or of every
-- series of the study in order: a read-only list that reads each instance
-- when asked (a 100,000-instance study is not copied).
function P.instances(study, series)
    if series ~= nil then return series.instances or {} end
    local lists, ends, n = {}, {}, 0
    local list = study and study.series
    if type(list) ~= "table" then return {} end
    for i = 1, #list do
        local inst = list[i].instances
        if type(inst) == "table" and #inst > 0 then
            n = n + #inst
            local k = #lists + 1
            lists[k], ends[k] = inst, n
        end
    end
    local function at(_, j)
        if type(j) ~= "number" or j < 1 or j > n or j ~= floor(j) then return nil end
        local lo, hi = 1, #ends -- the first list ending at or after j
        while lo < hi do
            local mid = (lo + hi) // 2
            if ends[mid] >= j then hi = mid else lo = mid + 1 end
        end
        return lists[lo][j - (ends[lo] - #lists[lo])]
    end
    return setmetatable({}, {
        __index = at,
        __len = function() return n end,
        __pairs = function(t)
            return function(_, j)
                j = j + 1
                if j <= n then return j, at(t, j) end
            end, t, 0
        end,
        __newindex = function() error("the study is read-only", 2) end,
        __metatable = "the study",
    })
end

-- ---- tags by number -----------------------------------------------------------

-- Orthanc 1.10's main DICOM tags (what study.patient / study.tags /
-- series.tags / instance.tags hold), by number.
local KEYWORD = {
    ["0010,0010"] = "PatientName", ["0010,0020"] = "PatientID",
    ["0010,0030"] = "PatientBirthDate", ["0010,0040"] = "PatientSex",
    ["0010,1000"] = "OtherPatientIDs",
    ["0008,0020"] = "StudyDate", ["0008,0030"] = "StudyTime", ["0020,0010"] = "StudyID",
    ["0008,1030"] = "StudyDescription", ["0008,0050"] = "AccessionNumber",
    ["0020,000d"] = "StudyInstanceUID", ["0032,1060"] = "RequestedProcedureDescription",
    ["0008,0080"] = "InstitutionName", ["0032,1032"] = "RequestingPhysician",
    ["0008,0090"] = "ReferringPhysicianName",
    ["0008,0021"] = "SeriesDate", ["0008,0031"] = "SeriesTime", ["0008,0060"] = "Modality",
    ["0008,0070"] = "Manufacturer", ["0008,1010"] = "StationName",
    ["0008,103e"] = "SeriesDescription", ["0018,0015"] = "BodyPartExamined",
    ["0018,0024"] = "SequenceName", ["0018,1030"] = "ProtocolName",
    ["0020,0011"] = "SeriesNumber", ["0018,1090"] = "CardiacNumberOfImages",
    ["0020,1002"] = "ImagesInAcquisition", ["0020,0105"] = "NumberOfTemporalPositions",
    ["0054,0081"] = "NumberOfSlices", ["0054,0101"] = "NumberOfTimeSlices",
    ["0020,000e"] = "SeriesInstanceUID", ["0020,0037"] = "ImageOrientationPatient",
    ["0054,1000"] = "SeriesType", ["0008,1070"] = "OperatorsName",
    ["0040,0254"] = "PerformedProcedureStepDescription",
    ["0018,1400"] = "AcquisitionDeviceProcessingDescription",
    ["0018,0010"] = "ContrastBolusAgent",
    ["0008,0012"] = "InstanceCreationDate", ["0008,0013"] = "InstanceCreationTime",
    ["0020,0012"] = "AcquisitionNumber", ["0054,1330"] = "ImageIndex",
    ["0020,0013"] = "InstanceNumber", ["0028,0008"] = "NumberOfFrames",
    ["0020,0100"] = "TemporalPositionIdentifier", ["0008,0018"] = "SOPInstanceUID",
    ["0020,0032"] = "ImagePositionPatient", ["0020,4000"] = "ImageComments",
}

-- "0008,1030", "(0008,1030)", "00081030" -> "0008,1030" (lower-case hex).
local function tag_number(key)
    local g, e = match(key, "^%(?(%x%x%x%x),?(%x%x%x%x)%)?$")
    if not g then return nil end
    return lower(g .. "," .. e)
end

-- keyword("0008,1030") -> "StudyDescription" (main tags only), else nil.
function P.keyword(key)
    if type(key) ~= "string" then return nil end
    local n = tag_number(key)
    return n and KEYWORD[n]
end

-- tag(tags, key): a tag by keyword or by number "gggg,eeee".
function P.tag(tbl, key)
    if type(tbl) ~= "table" or type(key) ~= "string" then return nil end
    local n = tag_number(key)
    if not n then return tbl[key] end
    local kw = KEYWORD[n]
    if kw then return tbl[kw] end
    return tbl[n]
end

-- ---- person names ------------------------------------------------------------

local PN_PART = { family = 1, given = 2, middle = 3, prefix = 4, suffix = 5 }
local PN_GROUP = { alphabetic = 1, ideographic = 2, phonetic = 3 }

local function split(s, sep)
    local out, i = {}, 1
    while true do
        local j = find(s, sep, i, true)
        out[#out + 1] = sub(s, i, j and j - 1 or nil)
        if not j then return out end
        i = j + 1
    end
end

-- pn(value, part): a part of a DICOM person name "Family^Given^Middle^
-- Prefix^Suffix" (with "=" groups: alphabetic=ideographic=phonetic).
-- part: family, given, middle, prefix, suffix (taken from the first group
-- that has any text, so "=山田^太郎" gives "山田"), or alphabetic,
-- ideographic, phonetic (a whole group).  The first value of a multi-valued
-- name is used.  nil when the part is empty or missing.
function P.pn(s, part)
    s = str(s)
    if s == nil then return nil end
    s = split(s, "\\")[1]
    local groups = split(s, "=")
    local g = PN_GROUP[part]
    local v
    if g then
        v = groups[g]
    else
        local k = PN_PART[part]
        if not k then
            error("pn: unknown part '" .. tostring(part) ..
                "' (allowed: family, given, middle, prefix, suffix, alphabetic, ideographic, phonetic)", 2)
        end
        for i = 1, #groups do
            if trim((gsub(groups[i], "%^", ""))) ~= "" then
                v = split(groups[i], "^")[k]
                break
            end
        end
    end
    if v == nil then return nil end
    v = trim(v)
    if v == "" then return nil end
    return v
end

-- ---- naming helpers ------------------------------------------------------------

-- text(value, fallback): the value trimmed of DICOM padding, or fallback
-- when it is missing or empty.
function P.text(v, fallback)
    v = str(v)
    if v ~= nil then
        v = trim(v)
        if v ~= "" then return v end
    end
    return fallback
end

local function two(n) return format("%02d", n) end
local DATE_CODE = {
    Y = function(p) return format("%04d", p.year) end,
    y = function(p) return two(p.year % 100) end,
    m = function(p) return two(p.month) end,
    d = function(p) return two(p.day) end,
    H = function(p) return two(p.hour) end,
    M = function(p) return two(p.min) end,
    S = function(p) return two(p.sec) end,
}

local function tm_parts(s)
    local v = P.time(s)
    if not v then return nil end
    local whole = floor(v)
    return { year = 0, month = 0, day = 0, hour = whole // 10000, min = whole // 100 % 100, sec = whole % 100 }
end

-- datefmt(value, "%Y/%m/%d"): format a DICOM DA/DT (or TM with %H %M %S
-- only) value; %Y %y %m %d %H %M %S %%.  nil when the value is not a date.
function P.datefmt(s, fmt)
    if type(fmt) ~= "string" then error("datefmt: the format must be a string", 2) end
    local p = dt_parts(s)
    if not p then
        if find(fmt, "%%[Yymd]") then return nil end
        p = tm_parts(s)
        if not p then return nil end
    end
    local bad
    local out = gsub(fmt, "%%(.?)", function(c)
        if c == "%" then return "%" end
        local f = DATE_CODE[c]
        if not f then bad = c; return "" end
        return f(p)
    end)
    if bad then error("datefmt: unknown format code '%" .. bad .. "' (allowed: %Y, %y, %m, %d, %H, %M, %S, %%)", 2) end
    return out
end

-- pad(value, width): an integer value zero-padded ("7", 4 -> "0007"); a
-- value that is not an integer is returned trimmed; nil when missing.
function P.pad(s, width)
    s = str(s)
    if s == nil then return nil end
    s = trim(s)
    if s == "" then return nil end
    local n = match(s, "^[+]?(%d+)$")
    if not n then return s end
    n = gsub(n, "^0+(%d)", "%1")
    if #n >= width then return n end
    return rep("0", width - #n) .. n
end

-- show(value): a short quoted form of a value for reasons and messages.
function P.show(v)
    if v == nil then return "(missing)" end
    local s = str(v)
    if s == nil then return "(" .. type(v) .. ")" end
    if #s > 80 then
        local cut = 80
        while cut > 1 and (byte(s, cut + 1) or 0) >= 0x80 and (byte(s, cut + 1) or 0) < 0xC0 do cut = cut - 1 end
        s = sub(s, 1, cut) .. "..."
    end
    s = gsub(s, '[%c"\\]', function(c)
        if c == '"' then return '\\"' end
        if c == "\\" then return "\\\\" end
        return format("\\%03d", byte(c))
    end)
    return '"' .. s .. '"'
end

-- ---- reasons (what a failed match says) -------------------------------------

-- show_all(list, get): the distinct values get(item) takes over a list, each
-- as show() writes it, in order of first appearance: '"CT", "SR", (missing)'.
-- At most 8, then "... (N more)".
function P.show_all(list, get)
    if type(list) ~= "table" then return "(none)" end
    local out, seen, more = {}, {}, 0
    for i = 1, #list do
        local v = P.show(get(list[i]))
        if not seen[v] then
            seen[v] = true
            if #out < 8 then out[#out + 1] = v else more = more + 1 end
        end
    end
    if #out == 0 then return "(none)" end
    if more > 0 then out[#out + 1] = "... (" .. more .. " more)" end
    return concat(out, ", ")
end

-- why(items): the parts of a group that failed, each item { passed,
-- "<JSON path>: <condition>", "(value: ...)" or nil }, as
-- "; Tags[1].All[2]: ... (value: ...); ..." ("" when none failed).
function P.why(items)
    local out = {}
    if type(items) ~= "table" then return "" end
    for i = 1, #items do
        local it = items[i]
        if type(it) == "table" and not it[1] then
            out[#out + 1] = tostring(it[2]) .. (it[3] ~= nil and (" " .. tostring(it[3])) or "")
        end
    end
    if #out == 0 then return "" end
    return "; " .. concat(out, "; ")
end

-- Nothing but functions is exported (see the header).
for k, v in pairs(P) do
    if type(v) ~= "function" then error("prelude: " .. k .. " is not a function") end
end

return P
