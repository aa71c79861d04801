-- compile.lua - JSON rule (as decoded by lua-cjson) -> Lua rule source.
--
-- Promises:
--  * compile(rule_table, filename) returns the source of a Lua chunk that
--    returns the rule table of the Lua-side contract (check_on, action,
--    destination, active, comment, match, name, series_name, file_name,
--    naming_hook), or nil and "<filename>: <JSON path>: <what> (allowed: ...)".
--  * Every mistake is found here, at load time: unknown fields, wrong types,
--    unknown Level/Operator/Action/CheckOn/Quantifier, tags Orthanc 1.10 does
--    not store at that level, malformed Lua patterns, bad dates, unknown
--    template placeholders.  JSON paths count list items from 1 (Tags[1] is
--    the first tag).
--  * The source is deterministic (same input, same bytes), readable (one
--    commented `if` per condition), and uses only the prelude's functions and
--    the study object: it runs unchanged in a rule's sandbox and is a valid
--    starting point for a hand-written rules/<name>.lua.
--  * User text never escapes its string literal: every string from the JSON
--    is emitted as an escaped Lua literal, also inside comments.
--  * Old files keep their meaning: Value is a case-insensitive substring of
--    the tag (contains), a missing tag does not pass, every tag must pass,
--    Series tags of a study rule pass in any series, IsActive missing means
--    inactive (as in the original autorthanc).
-- Pure Lua: no io/os/require; runs in the engine's trusted state.

local type, tostring, pairs, ipairs, error, pcall, next = type, tostring, pairs, ipairs, error, pcall, next
local format, find, sub, gsub, match, byte = string.format, string.find, string.sub,
    string.gsub, string.match, string.byte
local concat, sort = table.concat, table.sort
local floor, tointeger = math.floor, math.tointeger

local M = {}

-- ---- what Orthanc 1.10 stores (its "main DICOM tags") ----------------------

-- number, keyword, VR, level(s)
local MAIN_TAGS = {
    { "0010,0010", "PatientName", "PN", "Patient" },
    { "0010,0020", "PatientID", "LO", "Patient" },
    { "0010,0030", "PatientBirthDate", "DA", "Patient" },
    { "0010,0040", "PatientSex", "CS", "Patient" },
    { "0010,1000", "OtherPatientIDs", "LO", "Patient" },
    { "0008,0020", "StudyDate", "DA", "Study" },
    { "0008,0030", "StudyTime", "TM", "Study" },
    { "0020,0010", "StudyID", "SH", "Study" },
    { "0008,1030", "StudyDescription", "LO", "Study" },
    { "0008,0050", "AccessionNumber", "SH", "Study" },
    { "0020,000d", "StudyInstanceUID", "UI", "Study" },
    { "0032,1060", "RequestedProcedureDescription", "LO", "Study" },
    { "0008,0080", "InstitutionName", "LO", "Study" },
    { "0032,1032", "RequestingPhysician", "PN", "Study" },
    { "0008,0090", "ReferringPhysicianName", "PN", "Study" },
    { "0008,0021", "SeriesDate", "DA", "Series" },
    { "0008,0031", "SeriesTime", "TM", "Series" },
    { "0008,0060", "Modality", "CS", "Series" },
    { "0008,0070", "Manufacturer", "LO", "Series" },
    { "0008,1010", "StationName", "SH", "Series" },
    { "0008,103e", "SeriesDescription", "LO", "Series" },
    { "0018,0015", "BodyPartExamined", "CS", "Series" },
    { "0018,0024", "SequenceName", "SH", "Series" },
    { "0018,1030", "ProtocolName", "LO", "Series" },
    { "0020,0011", "SeriesNumber", "IS", "Series" },
    { "0018,1090", "CardiacNumberOfImages", "IS", "Series" },
    { "0020,1002", "ImagesInAcquisition", "IS", "Series" },
    { "0020,0105", "NumberOfTemporalPositions", "IS", "Series" },
    { "0054,0081", "NumberOfSlices", "US", "Series" },
    { "0054,0101", "NumberOfTimeSlices", "US", "Series" },
    { "0020,000e", "SeriesInstanceUID", "UI", "Series" },
    { "0020,0037", "ImageOrientationPatient", "DS", "Series", "Instance" },
    { "0054,1000", "SeriesType", "CS", "Series" },
    { "0008,1070", "OperatorsName", "PN", "Series" },
    { "0040,0254", "PerformedProcedureStepDescription", "LO", "Series" },
    { "0018,1400", "AcquisitionDeviceProcessingDescription", "LO", "Series" },
    { "0018,0010", "ContrastBolusAgent", "LO", "Series" },
    { "0008,0012", "InstanceCreationDate", "DA", "Instance" },
    { "0008,0013", "InstanceCreationTime", "TM", "Instance" },
    { "0020,0012", "AcquisitionNumber", "IS", "Instance" },
    { "0054,1330", "ImageIndex", "US", "Instance" },
    { "0020,0013", "InstanceNumber", "IS", "Instance" },
    { "0028,0008", "NumberOfFrames", "IS", "Instance" },
    { "0020,0100", "TemporalPositionIdentifier", "IS", "Instance" },
    { "0008,0018", "SOPInstanceUID", "UI", "Instance" },
    { "0020,0032", "ImagePositionPatient", "DS", "Instance" },
    { "0020,4000", "ImageComments", "LT", "Instance" },
}

local BY_NUMBER, BY_KEYWORD, BY_LOWER_KEYWORD = {}, {}, {}
local LEVEL_KEYWORDS = { Patient = {}, Study = {}, Series = {}, Instance = {} }
for _, t in ipairs(MAIN_TAGS) do
    local info = { number = t[1], keyword = t[2], vr = t[3], levels = {} }
    for i = 4, #t do
        info.levels[t[i]] = true
        local l = LEVEL_KEYWORDS[t[i]]
        l[#l + 1] = t[2]
    end
    info.home = t[4]
    BY_NUMBER[t[1]] = info
    BY_KEYWORD[t[2]] = info
    BY_LOWER_KEYWORD[t[2]:lower()] = info
end
for _, l in pairs(LEVEL_KEYWORDS) do sort(l) end

-- TM keywords of the DICOM dictionary (names ending in Time are not all TM:
-- EchoTime and RepetitionTime are numbers).  Names ending in Date are DA,
-- names ending in DateTime are DT.
local TM_KEYWORDS = {}
for kw in ([[AcquisitionTime AdmittingTime CalibrationTime ContentTime ContrastBolusStartTime
    ContrastBolusStopTime CreationTime InstanceCreationTime IntendedFractionStartTime
    InterventionDrugStartTime InterventionDrugStopTime IssueTimeOfImagingServiceRequest
    PatientBirthTime PerformedProcedureStepEndTime PerformedProcedureStepStartTime
    PresentationCreationTime RTPlanTime RadiopharmaceuticalStartTime RadiopharmaceuticalStopTime
    ReviewTime SafePositionExitTime SafePositionReturnTime ScheduledProcedureStepEndTime
    ScheduledProcedureStepStartTime SecondaryReviewTime SeriesTime SourceStrengthReferenceTime
    StructureSetTime StudyTime TimeOfGainCalibration TimeOfLastCalibration
    TimeOfLastDetectorCalibration TimeOfSecondaryCapture TreatmentControlPointTime
    TreatmentTime]]):gmatch("%a+") do
    TM_KEYWORDS[kw] = true
end

local PN_PARTS = { "family", "given", "middle", "prefix", "suffix", "alphabetic", "ideographic", "phonetic" }

local TOP_FIELDS = { "CheckOn", "IsActive", "Action", "DestinationModality", "Comment", "Tags", "Any",
    "All", "Naming", "SeriesNaming", "FileNaming", "NamingHook", "Priority" }
local TAG_FIELDS = { "TagName", "Level", "Value", "Operator", "Negate", "CaseSensitive", "Quantifier",
    "MinCount", "Comment" }
local GROUP_FIELDS = { "Any", "All", "Negate", "Comment" }
local LEVELS = { "Patient", "Study", "Series", "Instance" }
local OPERATORS = { "contains", "equals", "startswith", "endswith", "matches", "in", "exists", "absent",
    "<", "<=", ">", ">=", "between" }
local QUANTIFIERS = { "any", "all", "none" }

local STRING_OPS = { contains = true, equals = true, startswith = true, endswith = true, matches = true,
    ["in"] = true }
local COMPARE_OPS = { ["<"] = true, ["<="] = true, [">"] = true, [">="] = true, between = true }
local OP_WORDS = { contains = "contains", equals = "equals", startswith = "starts with",
    endswith = "ends with", matches = "matches", ["in"] = "is one of", exists = "exists",
    absent = "is absent", ["<"] = "<", ["<="] = "<=", [">"] = ">", [">="] = ">=", between = "is between" }

-- ---- errors -------------------------------------------------------------------

local FAIL = {}

local function fail(ctx, path, what, allowed)
    local msg = ctx.file .. ": " .. path .. ": " .. what
    if allowed then msg = msg .. " (allowed: " .. concat(allowed, ", ") .. ")" end
    error({ [FAIL] = msg }, 0)
end

local function is_null(v)
    return type(v) == "userdata" -- cjson.null
end

local function json_type(v)
    if v == nil or is_null(v) then return "null" end
    local t = type(v)
    if t == "table" then
        if next(v) == nil then return "empty list or object" end
        if v[1] ~= nil then return "list" end
        return "object"
    end
    if t == "boolean" then return "true/false" end
    return t
end

local function is_list(v)
    if type(v) ~= "table" then return false end
    local n = 0
    for k in pairs(v) do
        if type(k) ~= "number" then return false end
        n = n + 1
    end
    return n == #v
end

local function is_object(v)
    if type(v) ~= "table" then return false end
    for k in pairs(v) do
        if type(k) ~= "string" then return false end
    end
    return true
end

-- field of a decoded object, with JSON null read as absent
local function get(obj, key)
    local v = obj[key]
    if is_null(v) then return nil end
    return v
end

local function check_fields(ctx, path, obj, allowed)
    local known = {}
    for _, f in ipairs(allowed) do known[f] = true end
    local unknown = {}
    for k in pairs(obj) do
        if not known[k] then unknown[#unknown + 1] = tostring(k) end
    end
    if #unknown == 0 then return end
    sort(unknown)
    local where = path == "" and "" or path .. "."
    if #unknown == 1 then
        fail(ctx, where .. unknown[1], "unknown field", allowed)
    end
    fail(ctx, path == "" and "(top level)" or path, "unknown fields " .. concat(unknown, ", "), allowed)
end

local function want_string(ctx, path, v, nonempty)
    if type(v) ~= "string" then fail(ctx, path, "expected a string, got " .. json_type(v)) end
    if nonempty and not find(v, "%S") then fail(ctx, path, "must not be empty") end
    return v
end

local function want_bool(ctx, path, v)
    if type(v) ~= "boolean" then fail(ctx, path, "expected true or false, got " .. json_type(v)) end
    return v
end

-- a word from a fixed list, any case; returns the list's spelling
local function want_choice(ctx, path, v, choices, what)
    if type(v) ~= "string" then
        fail(ctx, path, "expected a string, got " .. json_type(v), choices)
    end
    local lv = v:lower()
    for _, c in ipairs(choices) do
        if c:lower() == lv then return c end
    end
    fail(ctx, path, "unknown " .. what .. " '" .. v .. "'", choices)
end

-- ---- Lua text -------------------------------------------------------------------

-- A Lua string literal for any bytes: readable UTF-8 stays as it is; quotes,
-- backslashes, control characters (C0 and C1), invalid UTF-8 bytes, and the
-- code points that make source read differently from what it does (bidi
-- overrides and isolates, line/paragraph separators) are escaped.
local function invisible(cp)
    return cp < 0xA0 or cp == 0x200E or cp == 0x200F or (cp >= 0x2028 and cp <= 0x202E)
        or (cp >= 0x2066 and cp <= 0x2069)
end

local function lit(s)
    local out, i, n = {}, 1, #s
    while i <= n do
        local c = byte(s, i)
        if c < 128 then
            local ch = sub(s, i, i)
            if ch == '"' then
                ch = '\\"'
            elseif ch == "\\" then
                ch = "\\\\"
            elseif ch == "\n" then
                ch = "\\n"
            elseif ch == "\t" then
                ch = "\\t"
            elseif c < 32 or c == 127 then
                ch = format("\\%03d", c)
            end
            out[#out + 1] = ch
            i = i + 1
        else
            local len = (c >= 0xC2 and c <= 0xDF and 2) or (c >= 0xE0 and c <= 0xEF and 3)
                or (c >= 0xF0 and c <= 0xF4 and 4) or nil
            local seq = len and sub(s, i, i + len - 1)
            if seq and #seq == len and utf8.len(seq) == 1 then
                local cp = utf8.codepoint(seq)
                out[#out + 1] = invisible(cp) and format("\\u{%X}", cp) or seq
                i = i + len
            else
                out[#out + 1] = format("\\%03d", c)
                i = i + 1
            end
        end
    end
    return '"' .. concat(out) .. '"'
end

local function numlit(n)
    local i = tointeger(n)
    if i then return format("%d", i) end
    return format("%.17g", n)
end

-- JSON number or string -> text (3 -> "3", 2.5 -> "2.5")
local function as_text(v)
    if type(v) == "number" then
        if v == floor(v) and v > -1e15 and v < 1e15 then return format("%d", v) end
        return format("%.17g", v)
    end
    return v
end

-- ---- Lua pattern validation (string.find on "" misses most mistakes) -----------

local function check_set(p, i)
    -- p[i] == "["; returns the index after "]" or nil, message
    i = i + 1
    if sub(p, i, i) == "^" then i = i + 1 end
    local first = true
    while true do
        local c = sub(p, i, i)
        if c == "" then return nil, "missing ']'" end
        if c == "]" and not first then return i + 1 end
        first = false
        if c == "%" then
            if sub(p, i + 1, i + 1) == "" then return nil, "pattern ends with '%'" end
            i = i + 2
        else
            i = i + 1
        end
    end
end

local function pattern_error(p)
    local i, n, open, closed = 1, #p, 0, 0
    local stack = {}
    while i <= n do
        local c = sub(p, i, i)
        if c == "%" then
            local e = sub(p, i + 1, i + 1)
            if e == "" then return "pattern ends with '%'" end
            if e == "b" then
                if #sub(p, i + 2, i + 3) < 2 then return "missing arguments to '%b'" end
                i = i + 4
            elseif e == "f" then
                if sub(p, i + 2, i + 2) ~= "[" then return "missing '[' after '%f'" end
                local j, err = check_set(p, i + 2)
                if not j then return err end
                i = j
            elseif match(e, "%d") then
                local k = e + 0
                if k == 0 or k > closed then return "invalid capture index %" .. e end
                i = i + 2
            else
                i = i + 2
            end
        elseif c == "[" then
            local j, err = check_set(p, i)
            if not j then return err end
            i = j
        elseif c == "(" then
            open = open + 1
            stack[#stack + 1] = open
            i = i + 1
        elseif c == ")" then
            if #stack == 0 then return "unmatched ')'" end
            stack[#stack] = nil
            closed = closed + 1
            i = i + 1
        else
            i = i + 1
        end
    end
    if #stack > 0 then return "unfinished capture" end
    local ok, err = pcall(find, "", p)
    if not ok then return tostring(err) end
    return nil
end

-- ---- tags ------------------------------------------------------------------------

local function normalize_number(name)
    local g, e = match(name, "^%(?(%x%x%x%x),?(%x%x%x%x)%)?$")
    if not g then return nil end
    return (g .. "," .. e):lower()
end

-- The kind of comparison a tag asks for: number, date, time or age.
local function tag_kind(keyword, vr)
    if vr == "DA" or vr == "DT" then return "date" end
    if vr == "TM" then return "time" end
    if vr == "AS" then return "age" end
    if keyword then
        if match(keyword, "Date$") or match(keyword, "DateTime$") then return "date" end
        if TM_KEYWORDS[keyword] then return "time" end
        if keyword == "PatientAge" then return "age" end
    end
    return "number"
end

-- Resolve TagName at a level: {keyword=, number=, vr=, kind=} or a load error.
local function resolve_tag(ctx, path, name, level)
    want_string(ctx, path, name, true)
    local info
    local number = normalize_number(name)
    if number then
        info = BY_NUMBER[number]
        if not info then
            if level ~= "Instance" then
                fail(ctx, path, "tag " .. name .. " is not one Orthanc stores at the " .. level ..
                    " level", LEVEL_KEYWORDS[level])
            end
            return { number = number, kind = "number", label = name }
        end
    else
        if not match(name, "^%a[%w]*$") then
            fail(ctx, path, "'" .. name .. "' is neither a DICOM keyword nor a tag number 'gggg,eeee'")
        end
        info = BY_KEYWORD[name]
        if not info then
            local near = BY_LOWER_KEYWORD[name:lower()]
            if near then
                fail(ctx, path, "unknown tag '" .. name .. "' (keywords are case-sensitive: did you mean " ..
                    near.keyword .. "?)")
            end
            if level ~= "Instance" then
                fail(ctx, path, "'" .. name .. "' is not a tag Orthanc stores at the " .. level ..
                    " level (Level Instance reads any tag)", LEVEL_KEYWORDS[level])
            end
            return { keyword = name, kind = tag_kind(name, nil), label = name }
        end
    end
    if level ~= "Instance" and not info.levels[level] then
        local allowed = {}
        for _, l in ipairs(LEVELS) do
            if info.levels[l] or l == "Instance" then allowed[#allowed + 1] = l end
        end
        fail(ctx, (path:gsub("TagName$", "Level")), info.keyword .. " is a " .. info.home ..
            "-level tag, not a " .. level .. "-level one", allowed)
    end
    return { keyword = info.keyword, number = info.number, vr = info.vr,
        kind = tag_kind(info.keyword, info.vr), label = info.keyword }
end

local function access(base, t)
    if t.keyword then return base .. "." .. t.keyword end
    return "tag(" .. base .. ", " .. lit(t.number) .. ")"
end

-- ---- one tag test ------------------------------------------------------------------

local function value_text(ctx, path, v)
    if type(v) == "number" then return as_text(v) end
    if type(v) ~= "string" then fail(ctx, path, "expected a string, got " .. json_type(v)) end
    return v
end

-- Value checks shared with the prelude's parsers (kept here so the compiler
-- needs nothing but itself).
local function dt_valid(s)
    local y, mo, d, rest = match(s, "^(%d%d%d%d)[-./](%d%d)[-./](%d%d)(.*)$")
    if y then
        if rest ~= "" then
            local h, mi, tail = match(rest, "^[T ](%d%d):(%d%d)(.*)$")
            if not h then return false end
            local sec, frac = match(tail, "^:(%d%d)(%.?%d*)$")
            if tail ~= "" and not sec then return false end
            rest = h .. mi .. (sec or "") .. (frac or "")
        end
        s = y .. mo .. d .. rest
    end
    local digits, frac, zone = match(s, "^(%d+)(%.?%d*)(.*)$")
    if not digits then return false end
    local nd = #digits
    if nd < 4 or nd > 14 or nd % 2 ~= 0 then return false end
    if frac ~= "" and (nd ~= 14 or #frac < 2 or #frac > 7) then return false end
    if zone ~= "" and not match(zone, "^[+-]%d%d%d%d$") then return false end
    local year = sub(digits, 1, 4) + 0
    local month = (sub(digits, 5, 6) ~= "" and sub(digits, 5, 6) + 0) or 1
    local day = (sub(digits, 7, 8) ~= "" and sub(digits, 7, 8) + 0) or 1
    local hour = (sub(digits, 9, 10) ~= "" and sub(digits, 9, 10) + 0) or 0
    local min = (sub(digits, 11, 12) ~= "" and sub(digits, 11, 12) + 0) or 0
    local sec = (sub(digits, 13, 14) ~= "" and sub(digits, 13, 14) + 0) or 0
    if month < 1 or month > 12 or day < 1 or hour > 23 or min > 59 or sec > 60 then return false end
    local md = ({ 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31 })[month]
    if month == 2 and ((year % 4 == 0 and year % 100 ~= 0) or year % 400 == 0) then md = 29 end
    return day <= md
end
local function tm_valid(s)
    local h, mi, tail = match(s, "^(%d%d):(%d%d)(.*)$")
    if h then
        local sec, frac = match(tail, "^:(%d%d)(%.?%d*)$")
        if tail ~= "" and not sec then return false end
        s = h .. mi .. (sec or "") .. (frac or "")
    end
    local digits, frac = match(s, "^(%d+)(%.?%d*)$")
    if not digits or #digits < 2 or #digits > 6 or #digits % 2 ~= 0 then return false end
    if frac ~= "" and (#digits ~= 6 or #frac < 2 or #frac > 7) then return false end
    local hh = sub(digits, 1, 2) + 0
    local mm = (sub(digits, 3, 4) ~= "" and sub(digits, 3, 4) + 0) or 0
    local ss = (sub(digits, 5, 6) ~= "" and sub(digits, 5, 6) + 0) or 0
    return hh <= 23 and mm <= 59 and ss <= 60
end

-- A bound of a comparison, checked against the kind; returns Lua text.
local function bound(ctx, path, v, kind)
    if kind == "number" or kind == "age" then
        if type(v) == "number" then return numlit(v), as_text(v) end
        if type(v) == "string" then
            local s = match(v, "^%s*(.-)%s*$")
            local ok = match(s, "^[+-]?%d+%.?%d*$") or match(s, "^[+-]?%.%d+$")
                or match(s, "^[+-]?%d+%.?%d*[eE][+-]?%d+$")
            if kind == "age" and match(s, "^%d+[DWMYdwmy]$") then return lit(s), s end
            if ok then return numlit(s + 0), s end
        end
        fail(ctx, path, "expected a number" .. (kind == "age" and " of years or an age like \"045Y\"" or "") ..
            ", got " .. (type(v) == "string" and "'" .. v .. "'" or json_type(v)))
    end
    local s = value_text(ctx, path, v)
    if kind == "date" then
        if not dt_valid(s) then
            fail(ctx, path, "'" .. s .. "' is not a date (use \"YYYYMMDD\", \"YYYY-MM-DD\" or a DICOM DT " ..
                "\"YYYYMMDDhhmmss\")")
        end
    elseif kind == "time" then
        if not tm_valid(s) then
            fail(ctx, path, "'" .. s .. "' is not a time (use \"hhmmss\" or \"hh:mm[:ss]\")")
        end
    end
    return lit(s), s
end

-- Compile one {TagName, Level, ...} object.  Returns a node:
-- { expr = Lua expression, desc = human text, value = Lua expr of the value
--   shown in reasons (nil when quantified) }
local function compile_tag(ctx, path, obj)
    check_fields(ctx, path, obj, TAG_FIELDS)
    local p = path .. "."
    local level = get(obj, "Level")
    if level == nil then fail(ctx, p .. "Level", "missing", LEVELS) end
    level = want_choice(ctx, p .. "Level", level, LEVELS, "level")
    local name = get(obj, "TagName")
    if name == nil then fail(ctx, p .. "TagName", "missing") end
    local t = resolve_tag(ctx, p .. "TagName", name, level)

    local op = get(obj, "Operator")
    if op == nil then op = "contains" else op = want_choice(ctx, p .. "Operator", op, OPERATORS, "operator") end

    local negate = get(obj, "Negate")
    if negate ~= nil then want_bool(ctx, p .. "Negate", negate) end
    local cs = get(obj, "CaseSensitive")
    if cs ~= nil then
        want_bool(ctx, p .. "CaseSensitive", cs)
        if cs and not STRING_OPS[op] then
            fail(ctx, p .. "CaseSensitive", "has no meaning with operator '" .. op .. "'",
                { "contains", "equals", "startswith", "endswith", "matches", "in" })
        end
    end
    local comment = get(obj, "Comment")
    if comment ~= nil then want_string(ctx, p .. "Comment", comment) end

    -- where the value is read, and over what it is quantified
    local base, over, var
    if level == "Patient" then
        base = "study.patient"
    elseif level == "Study" then
        base = "study.tags"
    elseif level == "Series" and ctx.check_on == "series" then
        base = "series.tags"
    elseif level == "Series" then
        over, var, base = "study.series", "s", "s.tags"
    else
        over = ctx.check_on == "series" and "instances(study, series)" or "instances(study)"
        var, base = "i", "i.tags"
    end
    local v = access(base, t)

    -- the test itself
    local value = obj.Value
    if is_null(value) then value = nil end
    local vp = p .. "Value"
    local csarg = cs and ", true" or ""
    local expr, shown
    if op == "exists" or op == "absent" then
        if value ~= nil then fail(ctx, vp, "not used with operator '" .. op .. "' (remove it)") end
        expr = (op == "exists" and "" or "not ") .. "exists(" .. v .. ")"
        shown = ""
    elseif op == "in" then
        if not is_list(value) or #value == 0 then
            fail(ctx, vp, "operator 'in' needs a non-empty list of strings, got " .. json_type(value))
        end
        local items = {}
        for i, x in ipairs(value) do
            items[i] = lit(value_text(ctx, vp .. "[" .. i .. "]", x))
        end
        expr = "one_of(" .. v .. ", {" .. concat(items, ", ") .. "}" .. csarg .. ")"
        shown = " {" .. concat(items, ", ") .. "}"
    elseif op == "between" then
        if not is_list(value) or #value ~= 2 then
            fail(ctx, vp, "operator 'between' needs a list [low, high], got " .. json_type(value))
        end
        local lo, los = bound(ctx, vp .. "[1]", value[1], t.kind)
        local hi, his = bound(ctx, vp .. "[2]", value[2], t.kind)
        local conv = t.kind == "number" and function(x) return x + 0 end
            or t.kind == "age" and function() return nil end
            or t.kind == "date" and function(x) return (gsub(x, "%D", "") .. "00000000000000"):sub(1, 14) + 0 end
            or function(x) return (gsub(x, "%D", "") .. "000000"):sub(1, 6) + 0 end
        local a, b = conv(los), conv(his)
        if a and b and a > b then fail(ctx, vp, "the low bound " .. los .. " is above the high bound " .. his) end
        local kind = t.kind == "number" and "" or ", " .. lit(t.kind)
        expr = "between(" .. v .. ", " .. lo .. ", " .. hi .. kind .. ")"
        shown = " " .. los .. " and " .. his
    elseif COMPARE_OPS[op] then
        if value == nil then fail(ctx, vp, "missing") end
        local b, bs = bound(ctx, vp, value, t.kind)
        local kind = t.kind == "number" and "" or ", " .. lit(t.kind)
        expr = "cmp(" .. v .. ", " .. lit(op) .. ", " .. b .. kind .. ")"
        shown = " " .. bs
    else
        if value == nil then fail(ctx, vp, "missing") end
        local s = value_text(ctx, vp, value)
        if op == "matches" then
            local err = pattern_error(s)
            if err then fail(ctx, vp, "invalid Lua pattern " .. lit(s) .. ": " .. err) end
        end
        expr = op .. "(" .. v .. ", " .. lit(s) .. csarg .. ")"
        shown = " " .. lit(s)
    end
    if negate then
        if sub(expr, 1, 4) == "not " then expr = sub(expr, 5) else expr = "not " .. expr end
    end

    local desc = t.label .. " " .. OP_WORDS[op] .. shown .. (cs and " (case-sensitive)" or "")
    if negate then
        -- per value: with a quantifier the negation applies to each item
        desc = over and "NOT (" .. desc .. ")" or "NOT " .. desc
    end

    -- quantifier over series / instances
    local q = get(obj, "Quantifier")
    local minc = get(obj, "MinCount")
    if not over then
        if q ~= nil then
            fail(ctx, p .. "Quantifier", "only for Series-level tags of a study rule and Instance-level tags")
        end
        if minc ~= nil then
            fail(ctx, p .. "MinCount", "only for Series-level tags of a study rule and Instance-level tags")
        end
        return { expr = expr, desc = desc, value = v,
            detail = "\"(value: \" .. show(" .. v .. ") .. \")\"" }
    end
    if q ~= nil then q = want_choice(ctx, p .. "Quantifier", q, QUANTIFIERS, "quantifier") else q = "any" end
    local what = var == "s" and "series" or "instance"
    local fn = "function(" .. var .. ") return " .. expr .. " end"
    local values = "show_all(" .. over .. ", function(" .. var .. ") return " .. v .. " end)"
    if minc ~= nil then
        if type(minc) ~= "number" or minc ~= floor(minc) or minc < 1 then
            fail(ctx, p .. "MinCount", "expected a whole number >= 1, got " ..
                (type(minc) == "number" and as_text(minc) or json_type(minc)))
        end
        if q ~= "any" then
            fail(ctx, p .. "MinCount", "only with Quantifier any (at least MinCount items pass)", { "any" })
        end
        local n = numlit(minc)
        return { expr = "count(" .. over .. ", " .. fn .. ") >= " .. n,
            desc = desc .. " in at least " .. n .. " " .. what .. (what == "series" and "" or "s"),
            detail = "\"(\" .. count(" .. over .. ", " .. fn .. ") .. \" passed; values: \" .. " ..
                values .. " .. \")\"" }
    end
    local words = { any = "in any ", all = "in every ", none = "in no " }
    return { expr = q .. "(" .. over .. ", " .. fn .. ")", desc = desc .. " " .. words[q] .. what,
        detail = "\"(values: \" .. " .. values .. " .. \")\"" }
end

-- ---- conditions and groups -------------------------------------------------------------

local compile_list

local function compile_item(ctx, path, obj)
    if not is_object(obj) or (type(obj) == "table" and next(obj) == nil) then
        fail(ctx, path, "expected an object {TagName, Level, Value, ...} or {Any: [...]} / {All: [...]}, got " ..
            json_type(obj))
    end
    local any, all = get(obj, "Any"), get(obj, "All")
    if any == nil and all == nil then return compile_tag(ctx, path, obj) end
    check_fields(ctx, path, obj, GROUP_FIELDS)
    if any ~= nil and all ~= nil then
        fail(ctx, path, "a group has either Any or All, not both (nest them instead)")
    end
    local negate = get(obj, "Negate")
    if negate ~= nil then want_bool(ctx, path .. ".Negate", negate) end
    local comment = get(obj, "Comment")
    if comment ~= nil then want_string(ctx, path .. ".Comment", comment) end
    local key = any ~= nil and "Any" or "All"
    local node = compile_list(ctx, path .. "." .. key, any or all, key, true)
    if negate then
        node.negate = true
        node.desc = "NOT (" .. node.desc .. ")"
    end
    return node
end

-- A list of items; as a group node { kind = "Any"|"All", items = {...} }.
function compile_list(ctx, path, list, kind, nonempty)
    if not is_list(list) then
        fail(ctx, path, "expected a list, got " .. json_type(list))
    end
    if nonempty and #list == 0 then fail(ctx, path, "must not be empty") end
    local items = {}
    for i = 1, #list do
        local ip = path .. "[" .. i .. "]"
        local node = compile_item(ctx, ip, list[i])
        node.path = ip
        items[i] = node
    end
    local desc = (kind == "Any" and "at least one of " or "all of ") .. #items .. " condition" ..
        (#items == 1 and "" or "s")
    return { kind = kind, items = items, desc = desc }
end

-- Lua expression of a node, spread over lines for groups.
local function node_expr(node, indent)
    if not node.kind then return node.expr end
    local inner = indent .. "  "
    local joiner = node.kind == "Any" and "or " or "and "
    local lines = { (node.negate and "not " or "") .. "(" }
    for i, item in ipairs(node.items) do
        lines[#lines + 1] = "\n" .. inner .. (i > 1 and joiner or "") .. node_expr(item, inner) ..
            (item.kind and "" or "  -- " .. item.path .. ": " .. item.desc)
    end
    lines[#lines + 1] = "\n" .. indent .. ")"
    return concat(lines)
end

-- ---- naming templates ------------------------------------------------------------------

local function template_levels(ctx, field)
    if field == "FileNaming" then return { "Patient", "Study", "Series", "Instance" } end
    if field == "SeriesNaming" or ctx.check_on == "series" then return { "Patient", "Study", "Series" } end
    return { "Patient", "Study" }
end

local BASES = { Patient = "study.patient", Study = "study.tags", Series = "series.tags",
    Instance = "instance.tags" }
local DEFAULT_FALLBACK = { PatientID = "NoPID", SeriesNumber = "XX" }
local DATE_CODES = { DA = "Yymd", DT = "YymdHMS", TM = "HMS" }

-- One placeholder "{Name[.part][:format][|fallback]}" -> list of Lua
-- expressions, one per output component (a date format with '/' spans more).
local function placeholder(ctx, path, body, levels)
    local spec, fallback = match(body, "^([^|]*)|(.*)$")
    if not spec then spec = body end
    local function bad()
        fail(ctx, path, "bad placeholder {" .. body .. "}: expected {TagName[.part][:format][|fallback]}")
    end
    local name, rest = match(spec, "^([%w,()]+)(.*)$")
    if not name then bad() end
    local part, fmt
    if sub(rest, 1, 1) == "." then
        part, rest = match(rest, "^%.(%a+)(.*)$")
        if not part then bad() end
    end
    if rest ~= "" then
        fmt = match(rest, "^:(.+)$")
        if not fmt then bad() end
    end
    local number = normalize_number(name)
    local info = number and BY_NUMBER[number] or BY_KEYWORD[name]
    local allowed = {}
    for _, l in ipairs(levels) do
        for _, k in ipairs(LEVEL_KEYWORDS[l]) do allowed[#allowed + 1] = k end
    end
    local level
    if info then
        for _, l in ipairs(levels) do
            if info.levels[l] then level = l; break end
        end
    end
    if not level then
        fail(ctx, path, "unknown placeholder {" .. name .. "}" ..
            (info and " (a " .. info.home .. "-level tag, not available here)" or ""), allowed)
    end
    local v = BASES[level] .. "." .. info.keyword
    if fallback and find(fallback, "[/\\{}]") then
        fail(ctx, path, "the fallback of {" .. body .. "} must not contain '/', '\\', '{' or '}'")
    end
    local fb = lit(fallback or DEFAULT_FALLBACK[info.keyword] or "UNKNOWN")
    if part then
        if info.vr ~= "PN" then fail(ctx, path, "." .. part .. " only applies to person names (PN tags)") end
        local ok = false
        for _, x in ipairs(PN_PARTS) do ok = ok or x == part end
        if not ok then fail(ctx, path, "unknown name part '" .. part .. "'", PN_PARTS) end
        v = "pn(" .. v .. ", " .. lit(part) .. ")"
    end
    if not fmt then return { "text(" .. v .. ", " .. fb .. ")" } end
    if part then fail(ctx, path, "a name part and a format cannot be combined") end
    local width = match(fmt, "^0?(%d+)$")
    if width then
        if not ({ IS = true, US = true })[info.vr] then
            fail(ctx, path, "a width :" .. fmt .. " only applies to integer tags (SeriesNumber, InstanceNumber, ...)")
        end
        width = width + 0
        if width < 1 or width > 32 then fail(ctx, path, "width must be 1..32") end
        return { "text(pad(" .. v .. ", " .. width .. "), " .. fb .. ")" }
    end
    local codes = DATE_CODES[info.vr]
    if not codes then fail(ctx, path, "a date format only applies to date and time tags (DA, DT, TM)") end
    local out = {}
    for piece in (fmt .. "/"):gmatch("([^/]*)/") do
        if piece == "" then fail(ctx, path, "empty folder name in format '" .. fmt .. "'") end
        local i = 1
        while true do
            local j = find(piece, "%", i, true)
            if not j then break end
            local c = sub(piece, j + 1, j + 1)
            if c ~= "%" and (c == "" or not find(codes, c, 1, true)) then
                local list = {}
                for k in codes:gmatch(".") do list[#list + 1] = "%" .. k end
                list[#list + 1] = "%%"
                fail(ctx, path, "unknown format code '%" .. c .. "' for " .. info.keyword, list)
            end
            i = j + 2
        end
        if find(piece, "[\\{}]") then fail(ctx, path, "a format must not contain '\\', '{' or '}'") end
        out[#out + 1] = "text(datefmt(" .. v .. ", " .. lit(piece) .. "), " .. fb .. ")"
    end
    return out
end

-- A template -> list of components, each a list of Lua expressions.
local function compile_template(ctx, field, tpl)
    local path = field
    want_string(ctx, path, tpl, true)
    local levels = template_levels(ctx, field)
    local comps = { {} }
    local literal = {}
    local function flush()
        if #literal > 0 then
            local s = concat(literal)
            local cur = comps[#comps]
            cur[#cur + 1] = { lit = s }
            literal = {}
        end
    end
    local i, n = 1, #tpl
    while i <= n do
        local c = sub(tpl, i, i)
        if c == "{" and sub(tpl, i + 1, i + 1) == "{" then
            literal[#literal + 1] = "{"
            i = i + 2
        elseif c == "}" and sub(tpl, i + 1, i + 1) == "}" then
            literal[#literal + 1] = "}"
            i = i + 2
        elseif c == "}" then
            fail(ctx, path, "unmatched '}' at character " .. i .. " (write }} for a literal brace)")
        elseif c == "{" then
            local j = find(tpl, "}", i + 1, true)
            if not j then fail(ctx, path, "unclosed '{' at character " .. i) end
            flush()
            local exprs = placeholder(ctx, path, sub(tpl, i + 1, j - 1), levels)
            for k, e in ipairs(exprs) do
                if k > 1 then comps[#comps + 1] = {} end
                local cur = comps[#comps]
                cur[#cur + 1] = { expr = e }
            end
            i = j + 1
        elseif c == "/" then
            flush()
            comps[#comps + 1] = {}
            i = i + 1
        elseif c == "\\" then
            fail(ctx, path, "'\\' in a template (use '/' for sub-folders)")
        else
            literal[#literal + 1] = c
            i = i + 1
        end
    end
    flush()
    for k, comp in ipairs(comps) do
        if #comp == 0 then
            fail(ctx, path, "empty folder name (component " .. k .. " of " .. lit(tpl) .. ")")
        end
        if #comp == 1 and comp[1].lit then
            local s = match(comp[1].lit, "^%s*(.-)%s*$")
            if s == "." or s == ".." or s == "" then
                fail(ctx, path, "'" .. comp[1].lit .. "' is not a usable folder name")
            end
        end
    end
    return comps
end

-- ---- the whole rule ---------------------------------------------------------------------

local function emitter()
    local lines = {}
    return lines, function(s) lines[#lines + 1] = s end
end

local function emit_condition(add, node, path)
    local indent = "    "
    add(indent .. "-- " .. path .. ": " .. node.desc)
    if node.kind then
        add(indent .. "if not " .. node_expr(node, indent) .. " then")
        if node.negate then
            add(indent .. "  return false, " .. lit(path .. " failed: " .. node.desc))
        else
            -- which parts failed, with the values they saw
            add(indent .. "  return false, " .. lit(path .. " failed: " .. node.desc) .. " .. why({")
            for _, item in ipairs(node.items) do
                add(indent .. "    { " .. node_expr(item, indent .. "    ") .. ", " ..
                    lit(item.path .. ": " .. item.desc) .. ", " .. (item.detail or "nil") .. " },")
            end
            add(indent .. "  })")
        end
    else
        -- "if not <test> then", without "not not" and with parentheses
        -- only where precedence needs them
        local e = node.expr
        local cond
        if match(e, "^not [%w_]+%b()$") then
            cond = sub(e, 5)
        elseif match(e, "^[%w_]+%b()$") then
            cond = "not " .. e
        else
            cond = "not (" .. e .. ")"
        end
        add(indent .. "if " .. cond .. " then")
        if node.detail then
            add(indent .. "  return false, " .. lit(path .. " failed: " .. node.desc .. " ") ..
                " .. " .. node.detail)
        else
            add(indent .. "  return false, " .. lit(path .. " failed: " .. node.desc))
        end
    end
    add(indent .. "end")
end

local function emit_naming(add, fn, args, field, tpl, comps)
    add("")
    add("  -- " .. field .. ": " .. lit(tpl))
    add("  " .. fn .. " = function(" .. args .. ")")
    add("    return {")
    for _, comp in ipairs(comps) do
        local parts = {}
        for _, piece in ipairs(comp) do
            parts[#parts + 1] = piece.lit and lit(piece.lit) or piece.expr
        end
        add("      " .. concat(parts, " .. ") .. ",")
    end
    add("    }")
    add("  end,")
end

local function compile_rule(rule, filename)
    local ctx = { file = filename }
    if not is_object(rule) or next(rule) == nil then
        fail(ctx, "(top level)", "expected a JSON object with CheckOn, Action, Tags, ..., got " .. json_type(rule))
    end
    check_fields(ctx, "", rule, TOP_FIELDS)

    local check_on = get(rule, "CheckOn")
    if check_on == nil then fail(ctx, "CheckOn", "missing", { "Study", "Series" }) end
    check_on = want_choice(ctx, "CheckOn", check_on, { "Study", "Series" }, "value")
    ctx.check_on = check_on:lower()

    local action = get(rule, "Action")
    if action == nil then fail(ctx, "Action", "missing", { "DOWNLOAD", "FORWARD" }) end
    action = want_choice(ctx, "Action", action, { "DOWNLOAD", "FORWARD" }, "action"):lower()

    local dest = get(rule, "DestinationModality")
    if dest ~= nil then want_string(ctx, "DestinationModality", dest) end
    if action == "forward" then
        if dest == nil then
            fail(ctx, "DestinationModality", "missing (a FORWARD rule needs the modality to send to)")
        end
        want_string(ctx, "DestinationModality", dest, true)
        if find(dest, "[%c/\\]") then
            fail(ctx, "DestinationModality", "must not contain '/', '\\' or control characters")
        end
    end

    local active = get(rule, "IsActive")
    if active ~= nil then want_bool(ctx, "IsActive", active) end
    local comment = get(rule, "Comment")
    if comment ~= nil then want_string(ctx, "Comment", comment) end
    local priority = get(rule, "Priority")
    if priority ~= nil then
        priority = want_choice(ctx, "Priority", priority, { "urgent", "normal", "low" }, "priority"):lower()
    end

    -- conditions: Tags (all must pass), All (all must pass), Any (one must pass)
    local tags, all, any = get(rule, "Tags"), get(rule, "All"), get(rule, "Any")
    if tags == nil and all == nil and any == nil then
        fail(ctx, "Tags", "missing (give Tags, All or Any; an empty Tags list matches everything)")
    end
    local conds = {}
    if tags ~= nil then
        for _, node in ipairs(compile_list(ctx, "Tags", tags, "All", false).items) do conds[#conds + 1] = node end
    end
    if all ~= nil then
        for _, node in ipairs(compile_list(ctx, "All", all, "All", true).items) do conds[#conds + 1] = node end
    end
    local any_node
    if any ~= nil then
        any_node = compile_list(ctx, "Any", any, "Any", true)
        any_node.path = "Any"
    end

    -- naming
    local naming = {}
    for _, f in ipairs({ "Naming", "SeriesNaming", "FileNaming" }) do
        local tpl = get(rule, f)
        if tpl ~= nil then
            if action ~= "download" then fail(ctx, f, "only DOWNLOAD rules name folders") end
            naming[f] = { tpl = tpl, comps = compile_template(ctx, f, tpl) }
        end
    end
    local hook = get(rule, "NamingHook")
    if hook ~= nil then
        want_string(ctx, "NamingHook", hook, true)
        if action ~= "download" then fail(ctx, "NamingHook", "only DOWNLOAD rules name folders") end
        -- a relative path inside the rule's folder: "names.lua", "hooks/names.lua"
        local ok = match(hook, "%.lua$") ~= nil
        for comp in (hook .. "/"):gmatch("([^/]*)/") do
            if not match(comp, "^[%w_][%w_.%-]*$") or find(comp, "..", 1, true) then ok = false end
        end
        if not ok then
            fail(ctx, "NamingHook", "'" .. hook .. "' must be a .lua file beside the rule, e.g. " ..
                "\"names.lua\" or \"hooks/names.lua\" (letters, digits, '_', '-', '.'; no '..')")
        end
        for _, f in ipairs({ "Naming", "SeriesNaming", "FileNaming" }) do
            if naming[f] then
                fail(ctx, "NamingHook", "cannot be combined with " .. f ..
                    " (name every level in the hook file, or use templates only)")
            end
        end
    end

    -- ---- emit ----
    local lines, add = emitter()
    local fname = match(filename, "([^/]*)$")
    add("-- Compiled from " .. lit(fname) .. " by autorthanc's JSON rule compiler.")
    add("-- This is an ordinary Lua rule: save it as rules/<name>.lua to edit it by hand.")
    add("-- contains/equals/cmp/any/text/... are prelude helpers; tag tests fold ASCII case only,")
    add("-- a missing tag never passes, and a multi-valued tag (\"A\\\\B\") passes if any value does.")
    add("return {")
    add("  check_on = " .. lit(ctx.check_on) .. ",")
    add("  action = " .. lit(action) .. ",")
    if action == "forward" then add("  destination = " .. lit(dest) .. ",") end
    if active == nil then
        add("  active = false,  -- IsActive missing: inactive, as in the original autorthanc")
    else
        add("  active = " .. tostring(active) .. ",")
    end
    if comment ~= nil then add("  comment = " .. lit(comment) .. ",") end
    if priority ~= nil then add("  priority = " .. lit(priority) .. ",") end
    if hook then add("  naming_hook = " .. lit(hook) .. ",  -- name/series_name/file_name from this file") end
    if #conds == 0 and not any_node then
        add("  unconditional = true,  -- no conditions: `autorthanc check` warns")
    end
    add("")
    add("  match = function(study, series)")
    if #conds == 0 and not any_node then
        add("    -- no conditions: every " .. ctx.check_on .. " matches")
    end
    for _, node in ipairs(conds) do
        emit_condition(add, node, node.path)
    end
    if any_node then emit_condition(add, any_node, "Any") end
    add("    return true")
    add("  end,")
    if naming.Naming then
        emit_naming(add, "name", "study, series", "Naming", naming.Naming.tpl, naming.Naming.comps)
    end
    if naming.SeriesNaming then
        emit_naming(add, "series_name", "study, series", "SeriesNaming", naming.SeriesNaming.tpl,
            naming.SeriesNaming.comps)
    end
    if naming.FileNaming then
        emit_naming(add, "file_name", "study, series, instance", "FileNaming", naming.FileNaming.tpl,
            naming.FileNaming.comps)
    end
    add("}")
    return concat(lines, "\n") .. "\n"
end

-- compile(rule_table, filename) -> lua_source | nil, error_message
function M.compile(rule, filename)
    filename = type(filename) == "string" and filename or "rule.json"
    local ok, res = pcall(compile_rule, rule, filename)
    if ok then return res end
    if type(res) == "table" and res[FAIL] then return nil, res[FAIL] end
    return nil, filename .. ": internal compiler error: " .. tostring(res)
end

return M
