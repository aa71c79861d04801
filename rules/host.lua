-- host.lua - the entry points the C side (bindings/*.c) calls.
--
-- Holds the loaded rules (by C index i, stored at [i+1]) and the study
-- snapshots the C side holds (by handle).  Every function here is called through the engine's one
-- protected door; the ones that run rule code (load_rule, evaluate, plan,
-- on_exported) are budgeted per call.  Data errors are raised as plain
-- messages (error(msg, 0)) naming the answer and field, e.g.
-- "/studies/{id}: ID must be a string".  set_study returns nil, message
-- when an answer is not JSON at all (garbled in transit: the caller
-- retries).  Orthanc's transport answers (/changes, /series, /jobs) are
-- decoded in C (core/orthanc_json.c), never here.
--
-- A rule record (rules/loader.lua): { rule_name, file, kind, check_on,
-- action, destination, active, comment, match, name, series_name,
-- file_name, on_exported, env, rule = the table the file returned }.
local M = ...

local cjson = M.cjson
local type, tostring, error, pcall = type, tostring, error, pcall

-- Reject NaN/Infinity/hex numbers: Orthanc never sends them.
if cjson.decode_invalid_numbers then cjson.decode_invalid_numbers(false) end

local host = {}

local rules, sources = {}, {}
-- Study snapshots (rules/study.lua) by handle: values the C side holds
-- (ar_study) and hands back to evaluate, plan and on_exported.  None is
-- "current"; each lives until C drops it.
local snapshots, next_handle = {}, 0

local function fail(msg) error(msg, 0) end

-- A body that is not JSON at all was garbled on the way (Orthanc only
-- sends JSON): the entry points below return nil, message for it, and the
-- C side reports a retryable error.  Valid JSON of the wrong shape raises.
local function decode(body, what, file)
    local ok, v = pcall(cjson.decode, body)
    if not ok then
        local msg = what .. ": invalid JSON: " .. tostring(v)
        if file then fail(msg) end
        error({ garbled = msg }, 0)
    end
    return v
end

local unpack, pack = table.unpack, table.pack
local function answers(fn)
    return function(...)
        local r = pack(pcall(fn, ...))
        if r[1] then return unpack(r, 2, r.n) end
        local e = r[2]
        if type(e) == "table" and e.garbled then return nil, e.garbled end
        error(e, 0)
    end
end

local function typename(v)
    if v == cjson.null then return "null" end
    return type(v)
end

-- ---- rules ------------------------------------------------------------------

local function snapshot(env)
    local copy = {}
    for k, v in next, env do copy[k] = v end
    return copy
end

function host.clear_rules()
    rules, sources = {}, {}
end

function host.load_rule(i, name, file, kind, text)
    local src, chunkname = M.loader.source(file, kind, text)
    sources[i + 1] = src
    local rec = M.loader.instantiate(file, kind, src, chunkname)
    rec.rule_name, rec.file, rec.kind = name, file, kind
    rec.loaded_globals = snapshot(rec.env)
    rules[i + 1] = rec
    return {
        check_on = rec.check_on, action = rec.action,
        destination = rec.destination, active = rec.active,
        naming_hook = rec.naming_hook, priority = rec.priority,
    }
end

-- The text of rule i's naming hook file, read by C from `path`.
function host.attach_hook(i, path, text)
    local rec = rules[i + 1]
    if not rec then fail("rule #" .. i .. " is not loaded") end
    M.loader.naming_hook(rec, path, text)
    rec.loaded_globals = snapshot(rec.env)
end

-- After a rule ran out of memory: put its globals back as they were after
-- loading (what it stored since is dropped).
function host.reset_env(i)
    local rec = rules[i + 1]
    if not rec then return end
    local env, saved = rec.env, rec.loaded_globals
    local k = next(env)
    while k ~= nil do
        local nk = next(env, k)
        if saved[k] == nil then rawset(env, k, nil) end
        k = nk
    end
    for k2, v in next, saved do rawset(env, k2, v) end
end

-- Forget a rule entirely (the C side marks it broken).
function host.drop_rule(i)
    rules[i + 1] = nil
end

function host.rule_source(i)
    return sources[i + 1]
end

-- The record of loaded rule i (nil if broken), for tools built on the host.
function host.rule(i)
    return rules[i + 1]
end

-- ---- Orthanc answers ----------------------------------------------------------

local function use_study(st, series, instances)
    local snap = M.study.build(st, series, instances)
    if #snap.real.id > 127 or snap.real.id:find("\0", 1, true) or snap.real.id == "" then
        fail("study: ID is not a valid id")
    end
    for _, id in ipairs(snap.series_ids) do
        if #id > 127 or id:find("\0", 1, true) then fail("series: ID is not a valid id") end
    end
    next_handle = next_handle + 1
    snapshots[next_handle] = snap
    return snap.real.id, snap.series_ids, next_handle
end

-- Forget snapshot h; a big one is collected at once, so the state does not
-- keep a dropped big study around (memory cap, RSS).
function host.drop_study(h)
    local snap = snapshots[h]
    snapshots[h] = nil
    if snap and snap.instances_total > 2000 then collectgarbage() end
end

host.set_study = answers(function(study_body, series_body, instances_body)
    return use_study(decode(study_body, "/studies/{id}"),
        decode(series_body, "/studies/{id}/series"),
        decode(instances_body, "/studies/{id}/instances"))
end)

function host.set_study_fixture(body)
    local d = decode(body, "fixture", true)
    if type(d) ~= "table" then fail("fixture: expected an object, got " .. typename(d)) end
    local series, instances = d.series, d.instances
    if series == nil then series = {} end
    if instances == nil then instances = {} end
    return use_study(d.study, series, instances)
end


-- ---- decisions --------------------------------------------------------------

local function target(i, h, series_id)
    local rec = rules[i + 1]
    if not rec then fail("rule #" .. i .. " is not loaded") end
    local snap = snapshots[h]
    if not snap then fail("no study snapshot #" .. tostring(h)) end
    local rs
    if series_id ~= nil then
        rs = snap.series_by_id[series_id]
        if not rs then fail("series " .. series_id .. " is not part of study " .. snap.real.id) end
    end
    return rec, snap, rs
end

-- matched (boolean), reason (string or nil)
function host.evaluate(i, h, series_id)
    local rec, snap, rs = target(i, h, series_id)
    local m, why = rec.match(snap.view, rs and snap.wrap(rs) or nil)
    if why ~= nil and type(why) ~= "string" then why = tostring(why) end
    return m and true or false, why
end

function host.plan(i, h, series_id)
    local rec, snap, rs = target(i, h, series_id)
    if rec.check_on == "series" then
        if not rs then fail("a series rule needs a series to plan") end
    else
        rs = nil
    end
    return M.layout.plan(rec, snap, rs)
end

function host.on_exported(i, h, series_id, path)
    local rec, snap, rs = target(i, h, series_id)
    if rec.on_exported then
        rec.on_exported(snap.view, path, rs and snap.wrap(rs) or nil)
    end
end

return host
