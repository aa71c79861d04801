-- host.lua - the entry points the C side (bindings/*.c) calls.
--
-- Holds the loaded rules (by C index i, stored at [i+1]) and the study
-- snapshots the C side holds (by handle).  Every function here is called through the engine's one
-- protected door; the ones that run rule code (load_rule, evaluate, plan,
-- on_exported) are budgeted per call.  Data errors are raised as plain
-- messages (error(msg, 0)).  Orthanc's answers are decoded in C, never
-- here: the transport answers by core/orthanc_json.c, a study's by
-- core/snapshot.c (set_study gets the decoded snapshot).
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
        unconditional = rec.unconditional,
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

-- A view of snapshot userdata `ud` (bindings/study.c, already decoded and
-- checked by core/snapshot.c), kept under a new handle.
function host.set_study(ud)
    next_handle = next_handle + 1
    snapshots[next_handle] = M.study.build(ud)
    return next_handle
end

-- Forget snapshot h; a big one is collected at once, so the state does not
-- keep a dropped big study around (memory cap, RSS).
function host.drop_study(h)
    local snap = snapshots[h]
    snapshots[h] = nil
    if snap and snap.instances_total > 2000 then collectgarbage() end
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

function host.plan(i, h, series_id, out)
    local rec, snap, rs = target(i, h, series_id)
    if rec.check_on == "series" then
        if not rs then fail("a series rule needs a series to plan") end
    else
        rs = nil
    end
    return M.layout.plan(rec, snap, rs, out)
end

function host.on_exported(i, h, series_id, path)
    local rec, snap, rs = target(i, h, series_id)
    if rec.on_exported then
        rec.on_exported(snap.view, path, rs and snap.wrap(rs) or nil)
    end
end

return host
