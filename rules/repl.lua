-- repl.lua - the Lua side of `autorthanc repl` (bindings/repl.c drives it).
--
-- Called with a module table M of the REPL's own: M.cjson, M.c (C helpers
-- from bindings/repl.c: write, print, rules, rule_index, rule_record,
-- rule_source, sanitize_folder, peek_folder, reload), private instances of
-- M.prelude, M.sandbox, M.study and M.layout (the same embedded sources the
-- engine runs), M.orthanc (bindings/lua_orthanc.c: find, lookup, study; nil
-- without Orthanc) and M.fixture / M.fixture_name (text of --fixture FILE).
--
-- Promises:
--  * env: the REPL's environment, made like a rule's (sandbox.new_env: the
--    rules' frozen globals and prelude, reading an undefined global is an
--    error) plus the built-ins studies, study, rules, rule, try, name,
--    reload, help.  No io/os/debug/require: the REPL is a rule's world.
--  * feed(text): lua.c's design: try "return <text>" first (so expressions
--    print their values), then <text> itself; a syntax error ending in
--    "<eof>" answers "more" (keep reading); "=expr" is "return expr".  The
--    values are printed (tables pretty-printed with sorted keys, bounded
--    depth and width); errors are raised to the caller, which prints them.
--  * Study objects are the very read-only objects rules see (rules/study.lua
--    over Orthanc's three answers); try() and name() call the loaded rules'
--    own match and name functions on them.
local M = ...

local cjson, C = M.cjson, M.c
local type, tostring, pairs, ipairs, error, pcall, select, load =
    type, tostring, pairs, ipairs, error, pcall, select, load
local concat, sort = table.concat, table.sort
local format, rep = string.format, string.rep

local repl = {}

-- ---- printing values -------------------------------------------------------

local MAX_DEPTH, MAX_ITEMS, LINE = 4, 40, 100

local function quote(s)
    local q = format("%q", s):gsub("\\\n", "\\n")
    if #q > 400 then q = q:sub(1, 160) .. "...\" (" .. #s .. " bytes)" end
    return q
end

local KEY_ORDER = { number = 1, string = 2, boolean = 3 }

local function key_less(a, b)
    local ta, tb = type(a), type(b)
    if ta ~= tb then return (KEY_ORDER[ta] or 9) < (KEY_ORDER[tb] or 9) end
    if ta == "number" or ta == "string" then return a < b end
    return tostring(a) < tostring(b)
end

local function is_ident(k)
    return type(k) == "string" and k:match("^[%a_][%w_]*$") ~= nil
end

local show

-- Lines of a table value (indented by `indent`), or one line when short.
local function show_table(t, indent, depth, seen)
    if seen[t] then return "<cycle>" end
    if depth > MAX_DEPTH then return "{...}" end
    seen[t] = true
    local keys, n = {}, 0
    for k in pairs(t) do
        n = n + 1
        keys[n] = k
    end
    sort(keys, key_less)
    local len = #t
    local items = {}
    for i, k in ipairs(keys) do
        if i > MAX_ITEMS then
            items[#items + 1] = "... (" .. (n - MAX_ITEMS) .. " more)"
            break
        end
        local v = show(t[k], indent .. "  ", depth + 1, seen)
        if math.type(k) == "integer" and k >= 1 and k <= len then
            items[#items + 1] = v
        elseif is_ident(k) then
            items[#items + 1] = k .. " = " .. v
        else
            items[#items + 1] = "[" .. show(k, "", MAX_DEPTH, seen) .. "] = " .. v
        end
    end
    seen[t] = nil
    if #items == 0 then return "{}" end
    local one = "{ " .. concat(items, ", ") .. " }"
    if #one + #indent <= LINE and not one:find("\n", 1, true) then return one end
    return "{\n" .. indent .. "  " .. concat(items, ",\n" .. indent .. "  ") .. "\n" .. indent .. "}"
end

function show(v, indent, depth, seen)
    local t = type(v)
    if t == "string" then return quote(v) end
    if t == "table" then return show_table(v, indent or "", depth or 1, seen or {}) end
    return tostring(v)
end

-- The values of one evaluation, like lua.c: top-level strings as they are.
local function print_values(...)
    local n = select("#", ...)
    if n == 0 then return end
    local parts = {}
    for i = 1, n do
        local v = select(i, ...)
        parts[i] = type(v) == "string" and v or show(v)
    end
    C.write(concat(parts, "\t") .. "\n")
end

repl.show = show

-- ---- studies -------------------------------------------------------------------

local snaps = setmetatable({}, { __mode = "k" }) -- study view -> snapshot
local current                                     -- the last study loaded

local function decode(text, what)
    local ok, v = pcall(cjson.decode, text)
    if not ok then error(what .. ": invalid JSON: " .. tostring(v), 0) end
    return v
end

-- ud: a snapshot decoded by C (C.snapshot_answers / C.snapshot_fixture,
-- the daemon's own decoder)
local function adopt(ud)
    local snap = M.study.build(ud)
    snaps[snap.view] = snap
    current = snap.view
    return snap.view
end

local function orthanc()
    if not M.orthanc then error("no Orthanc connection in this REPL", 0) end
    return M.orthanc
end

local function is_orthanc_id(s)
    return #s == 44 and s:match("^[0-9a-f%-]+$") ~= nil
end

local function fetch(ref)
    local O, id = orthanc(), ref
    if not is_orthanc_id(ref) then
        local body, err = O.lookup(ref)
        if not body then error(err, 0) end
        id = nil
        for _, hit in ipairs(decode(body, "/tools/lookup")) do
            if type(hit) == "table" and hit.Type == "Study" and type(hit.ID) == "string" then
                id = hit.ID
                break
            end
        end
        if not id then error("no study has the id or StudyInstanceUID '" .. ref .. "'", 0) end
    end
    local st, series, instances = O.study(id)
    if not st then error(series, 0) end
    return adopt(C.snapshot_answers(st, series, instances))
end

-- A study object from what the user gave: a study, an id/UID, a row of
-- studies{}, or nothing (the last one loaded, or the fixture).
local function want_study(s)
    if s == nil then
        if not current then
            error("no study yet: study(\"<Orthanc id or StudyInstanceUID>\") loads one", 0)
        end
        return current, snaps[current]
    end
    if snaps[s] then return s, snaps[s] end
    if type(s) == "string" then
        local v = fetch(s)
        return v, snaps[v]
    end
    error("expected a study (from study()), an Orthanc id or a StudyInstanceUID, got " .. type(s), 0)
end

-- DICOM date query: "2024" (that year), "2024-" (since), "2024-01-31" (ISO)
local function date_query(v)
    local y = v:match("^(%d%d%d%d)$")
    if y then return y .. "0101-" .. y .. "1231" end
    y = v:match("^(%d%d%d%d)%-$")
    if y then return y .. "0101-" end
    local a, b, c = v:match("^(%d%d%d%d)%-(%d%d)%-(%d%d)$")
    if a then return a .. b .. c end
    return v
end

local function studies(q)
    if q == nil then q = {} end
    if type(q) ~= "table" then error("studies{Tag = \"value\", ...}: expected a table", 0) end
    local query, limit = {}, nil
    for k, v in pairs(q) do
        if k == "limit" then
            limit = math.tointeger(v)
            if not limit or limit < 1 then error("studies{}: limit must be a whole number >= 1", 0) end
        elseif type(k) ~= "string" or not k:match("^%u[%w]*$") then
            error("studies{}: keys are DICOM keywords like PatientID, StudyDate, Modality (got " ..
                tostring(k) .. ")", 0)
        else
            if type(v) == "number" then v = tostring(v) end
            if type(v) ~= "string" then error("studies{}: the value of " .. k .. " must be a string", 0) end
            if k:match("Date$") then v = date_query(v) end
            if k == "Modality" then k = "ModalitiesInStudy" end
            query[k] = v
        end
    end
    local body = { Level = "Study", Query = query, Expand = false }
    if limit then body.Limit = limit end
    local answer, err = orthanc().find(cjson.encode(body))
    if not answer then error(err, 0) end
    local list, out = decode(answer, "/tools/find"), {}
    for i, id in ipairs(list) do out[i] = tostring(id) end
    sort(out)
    return out
end

local function study(ref)
    if ref == nil and current then return current end
    return (want_study(ref))
end

-- ---- rules ------------------------------------------------------------------------

local function rule_of(r)
    if type(r) == "table" and type(r.name) == "string" then r = r.name end
    if type(r) ~= "string" then error("expected a rule name (see rules()), got " .. type(r), 0) end
    local i, info = C.rule_index(r)
    if not i then error(info, 0) end
    if not info.ok then error("rule " .. r .. " is broken: " .. info.error, 0) end
    return i, info, C.rule_record(i)
end

local function rule(name)
    local i, info = rule_of(name)
    info.source = C.rule_source(i)
    return info
end

local function series_label(rs)
    local t = rs.tags
    return "SE" .. (t.SeriesNumber or "?") .. " " .. (t.Modality or "?") ..
        (t.SeriesDescription and (" " .. quote(t.SeriesDescription)) or "")
end

local function verdict(rec, view, sview)
    local ok, m, why = pcall(rec.match, view, sview)
    if not ok then return false, "error: " .. tostring(m) end
    if why ~= nil and type(why) ~= "string" then why = tostring(why) end
    return m and true or false, why
end

-- try(rule, study): the verdict and why.  A series rule: whether any series
-- matched, and one line per series.
local function try(r, s)
    local _, info, rec = rule_of(r)
    local view, snap = want_study(s)
    local note = info.active and "" or " (inactive: the daemon does not run it)"
    if info.check_on ~= "series" then
        local m, why = verdict(rec, view, nil)
        if why == nil then why = m and "matched" or "no match (the rule gave no reason)" end
        return m, why .. note
    end
    local any, lines = false, {}
    for i, rs in ipairs(snap.real.series) do
        local m, why = verdict(rec, view, snap.wrap(rs))
        any = any or m
        lines[i] = series_label(rs) .. ": " .. (m and "match" or "no match") ..
            (why and (": " .. why) or "")
    end
    if note ~= "" then return any, lines, note:sub(2) end
    return any, lines
end

local function folder_of(rec, info, snap, rs)
    local comps
    if rec.name then
        comps = M.layout.components(rec.name(snap.view, rs and snap.wrap(rs) or nil), "name hook")
    end
    local folder = C.sanitize_folder(info.name, comps or M.layout.default_folder(snap.real, rs))
    local res = rs and rs.id or snap.real.id
    local actual, taken, holder = C.peek_folder(folder, info.name .. "|" .. res, res)
    if actual and taken then
        return folder, "collision: already owned by " .. (holder or "another study") ..
            " in the state database; this one would get " .. actual
    elseif actual and actual ~= folder then
        return folder, "already exported by this study as " .. actual
    end
    return folder
end

-- name(rule, study): the folder it would create under the storage folder.
local function name(r, s)
    local _, info, rec = rule_of(r)
    local _, snap = want_study(s)
    if info.action == "forward" then return "forward to modality " .. info.destination end
    if info.check_on ~= "series" then return folder_of(rec, info, snap, nil) end
    local out = {}
    for i, rs in ipairs(snap.real.series) do
        local f, note = folder_of(rec, info, snap, rs)
        out[i] = series_label(rs) .. ": " .. f .. (note and (" (" .. note .. ")") or "")
    end
    return out
end

local HELP = [[
Built-ins (everything else is the rules' own Lua: prelude helpers, string, table, math):
  studies{PatientID="P*", StudyDate="2024-", Modality="MR", limit=10}
                    Orthanc ids of the studies that match (POST /tools/find); dates:
                    "2024" (that year), "2024-" (since), "20240101-20240131"
  study(id_or_uid)  the study object rules see (tags, patient, series, ...);
                    study() is the last one loaded (or the --fixture)
  rules()           the loaded rules, their status and errors
  rule(name)        one rule; rule(name).source is the Lua it runs
  try(rule, study)  the verdict and why (which condition failed, with the actual value)
  name(rule, study) the folder it would export to, with collisions noted
  reload()          read the rules folder again
  help()            this text
Write =expr or just an expression to see its value; a statement may span lines.
Each line runs under the rules' instruction budget and deadline; Ctrl-C stops it.]]

local function help()
    C.write(HELP .. "\n")
end

local function reload()
    local n, broken = C.reload()
    return format("%d rule(s) loaded, %d broken", n, broken)
end

-- ---- the environment and the evaluator -----------------------------------------

local env = M.sandbox.new_env()
env.studies, env.study, env.rules, env.rule = studies, study, C.rules, rule
env.try, env.name, env.reload, env.help = try, name, reload, help
repl.env = env

if M.fixture then
    adopt(C.snapshot_fixture(M.fixture, M.fixture_name or "fixture"))
end

function repl.compile(text)
    local code = text
    if code:match("^%s*=") then code = "return " .. code:gsub("^%s*=", "", 1) end
    local fn = load("return " .. code, "=stdin", "t", env)
    if fn then return fn end
    local err
    fn, err = load(code, "=stdin", "t", env)
    if fn then return fn end
    if err:sub(-5) == "<eof>" then return nil, "more" end
    error(err, 0)
end

-- Returns "more" when text is an unfinished chunk; else runs it and prints.
function repl.feed(text)
    local fn, more = repl.compile(text)
    if not fn then return more end
    print_values(fn())
    return nil
end

function repl.has_study()
    return current ~= nil
end

return repl
