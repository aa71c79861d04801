-- layout.lua - the names of an export: folder, series folders, file names.
--
-- Returns raw path components; the C side (bindings/plan.c) sanitises each
-- one, so nothing here needs to be safe, only deterministic.
-- Default layout (the original autorthanc's):
--   folder         "<PatientID|NoPID>-<PatientName family|UNKNOWN>-EX<StudyID|UNKNOWN>"
--                  (+ "-SE<SeriesNumber|XX>" for series rules)
--   series folder  "SE<SeriesNumber|XX>-<SeriesDate|UNKNOWN>-<SeriesInstanceUID|UNKNOWN>"
--   file           "<SOPInstanceUID|orthanc instance id>.dcm"
-- A tag that is absent or only spaces counts as absent.  A rule's hook
-- (name / series_name / file_name) replaces the default when present: it
-- returns a string (split on "/"; empty pieces dropped) or a list of
-- components (never split), or nil/false for "use the default".
local M = ...

local type, tostring, error = type, tostring, error

local layout = {}

local MAX_COMPONENTS = 32

local function present(v)
    if type(v) ~= "string" then return nil end
    if not v:find("%S") then return nil end -- empty or only spaces
    return v:match("^%s*(.*%S)")
end

function layout.family(patient_name)
    local pn = present(patient_name)
    if not pn then return nil end
    return present(pn:match("^([^%^]*)"))
end

function layout.default_folder(study, series)
    local t, p = study.tags, study.patient
    local name = (present(p.PatientID) or "NoPID") .. "-" ..
        (layout.family(p.PatientName) or "UNKNOWN") .. "-EX" ..
        (present(t.StudyID) or "UNKNOWN")
    if series then
        name = name .. "-SE" .. (present(series.tags.SeriesNumber) or "XX")
    end
    return name
end

function layout.default_series(series)
    local t = series.tags
    return "SE" .. (present(t.SeriesNumber) or "XX") .. "-" ..
        (present(t.SeriesDate) or "UNKNOWN") .. "-" ..
        (present(t.SeriesInstanceUID) or "UNKNOWN")
end

function layout.default_file(instance)
    return (present(instance.tags.SOPInstanceUID) or instance.id) .. ".dcm"
end

-- A hook's answer as a string (one component) or a list of strings;
-- nil when the hook wants the default.
function layout.components(v, what)
    local t = type(v)
    if v == nil or v == false then return nil end
    if t == "number" then v, t = tostring(v), "string" end
    if t == "string" then
        local parts = {}
        for piece in v:gmatch("[^/]+") do
            parts[#parts + 1] = piece
            if #parts > MAX_COMPONENTS then
                error(what .. ": more than " .. MAX_COMPONENTS .. " path components", 0)
            end
        end
        if #parts == 1 then return parts[1] end
        if #parts == 0 then return "" end
        return parts
    end
    if t == "table" then
        local n = #v
        if n > MAX_COMPONENTS then
            error(what .. ": more than " .. MAX_COMPONENTS .. " path components", 0)
        end
        local parts = {}
        for i = 1, n do
            local c = v[i]
            if type(c) == "number" then c = tostring(c) end
            if type(c) ~= "string" then
                error(what .. ": component " .. i .. " is a " .. type(c) .. ", not a string", 0)
            end
            parts[i] = c
        end
        if n == 0 then return "" end
        return parts
    end
    error(what .. " returned a " .. t .. " (expected a string or a list of strings)", 0)
end

-- The raw plan of rule `rec` on snapshot `snap` (see bindings/plan.c),
-- handed to C as it is made so no list of 100,000 names builds up here:
--   out.series(k, comps)     the folder of snapshot series k
--   out.file(k, j, comps)    the name of instance j of series k
-- and the folder's components returned.  `only` is the real series of a
-- series rule, nil for a study rule.  Each hook call gets its own
-- instruction budget and deadline (renew), and so does every run of
-- RENEW_EVERY default-named files: planning 100,000 instances is as bounded
-- per file as planning one.
local RENEW_EVERY = 1000

function layout.plan(rec, snap, only, out)
    local renew = M.c.renew_budget or function() end -- the REPL has no budget to renew
    local real, view, wrap = snap.real, snap.view, snap.wrap
    local sview = only and wrap(only) or nil
    local folder
    if rec.name then
        renew()
        folder = layout.components(rec.name(view, sview), "name hook")
    end
    folder = folder or layout.default_folder(real, only)

    local list = only and { only } or real.series
    local n = 0
    for _, s in ipairs(list) do
        local k = snap.index_of[s]
        local sv = wrap(s)
        local sname
        if rec.series_name then
            renew()
            sname = layout.components(rec.series_name(view, sv), "series_name hook")
        end
        out.series(k, sname or layout.default_series(s))
        local file_name = rec.file_name
        local instances = s.instances
        for j = 1, #instances do
            local inst = instances[j]
            n = n + 1
            local fname
            if file_name then
                renew()
                fname = layout.components(file_name(view, sv, wrap(inst)), "file_name hook")
            elseif n % RENEW_EVERY == 0 then
                renew()
            end
            out.file(k, j, fname or layout.default_file(inst))
        end
    end
    return folder
end

return layout
