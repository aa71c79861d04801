-- study.lua - the study object rules see, built from Orthanc's answers.
--
-- build(study, series, instances) takes the decoded answers of
-- /studies/<id>, /studies/<id>/series and /studies/<id>/instances (Orthanc
-- 1.10 shapes), checks their types, and returns a snapshot:
--   snap.real        the plain study table (host side only):
--       { id, tags = MainDicomTags, patient = PatientMainDicomTags,
--         series = { { id, tags, instances_count, instances = {
--                      { id, tags, file_size }, ... } }, ... },
--         last_update, is_stable }
--       series sorted by SeriesNumber (numeric; non-numeric after), then id;
--       instances by InstanceNumber the same way.
--   snap.view        the same study as rules see it: a read-only proxy
--                    (index, #, ipairs, pairs work; writes raise)
--   snap.series_by_id[id] = real series;   snap.wrap(real) = its proxy
--   snap.series_ids (in order);   snap.instances_total
-- Tag values are kept only when they are strings (numbers are turned into
-- strings); null, lists and objects are dropped, so absent tags read as nil.
-- Instances whose series is not in the series answer are ignored (they
-- arrived between the requests and will come with the next stable event).
local M = ...

local type, tostring, tonumber, error = type, tostring, tonumber, error
local floor = math.floor
local sort = table.sort

local study = {}

local function fail(what, msg)
    error(what .. ": " .. msg, 0)
end

local function is_array(t)
    return type(t) == "table" and (next(t) == nil or t[1] ~= nil)
end

local function tags_of(v, what)
    local out = {}
    if v == nil or v == M.cjson.null then return out end
    if type(v) ~= "table" or v[1] ~= nil then
        fail(what, "expected an object of tags, got " .. (type(v) == "table" and "a list" or type(v)))
    end
    for k, val in pairs(v) do
        if type(k) == "string" then
            local t = type(val)
            if t == "string" then
                out[k] = val
            elseif t == "number" then
                out[k] = (val == floor(val) and val >= -2^53 and val <= 2^53)
                    and string.format("%d", val) or tostring(val)
            end
        end
    end
    return out
end

local function str_field(obj, key, what, optional)
    local v = obj[key]
    if type(v) == "string" then return v end
    if optional and (v == nil or v == M.cjson.null) then return nil end
    fail(what, key .. " must be a string, got " .. (v == M.cjson.null and "null" or type(v)))
end

-- Order by numeric key (present first, ascending), then by id.
local function by_number(key)
    return function(a, b)
        local na, nb = tonumber(a.tags[key]), tonumber(b.tags[key])
        if na ~= na then na = nil end -- NaN never compares
        if nb ~= nb then nb = nil end
        if na and nb then
            if na ~= nb then return na < nb end
        elseif na or nb then
            return na ~= nil
        end
        return a.id < b.id
    end
end

local function size_of(v)
    if type(v) ~= "number" or v ~= v or v < 0 or v >= 2^62 or v ~= floor(v) then return nil end
    return math.tointeger(v)
end

function study.build(st, series_list, instance_list)
    if type(st) ~= "table" or is_array(st) and next(st) ~= nil then
        fail("study", "expected an object")
    end
    if not is_array(series_list) then fail("series", "expected a list") end
    if not is_array(instance_list) then fail("instances", "expected a list") end

    local real = {
        id = str_field(st, "ID", "study"),
        tags = tags_of(st.MainDicomTags, "study MainDicomTags"),
        patient = tags_of(st.PatientMainDicomTags, "study PatientMainDicomTags"),
        series = {},
        last_update = str_field(st, "LastUpdate", "study", true),
        is_stable = st.IsStable == true,
    }
    local by_id = {}
    for i = 1, #series_list do
        local s = series_list[i]
        local what = "series[" .. i .. "]"
        if type(s) ~= "table" then fail(what, "expected an object") end
        local id = str_field(s, "ID", what)
        if by_id[id] then fail(what, "series " .. id .. " is listed twice") end
        local rs = {
            id = id,
            tags = tags_of(s.MainDicomTags, what .. ".MainDicomTags"),
            instances = {},
            instances_count = 0,
        }
        by_id[id] = rs
        real.series[#real.series + 1] = rs
    end
    for i = 1, #instance_list do
        local inst = instance_list[i]
        local what = "instances[" .. i .. "]"
        if type(inst) ~= "table" then fail(what, "expected an object") end
        local id = str_field(inst, "ID", what)
        local parent = str_field(inst, "ParentSeries", what)
        local rs = by_id[parent]
        if rs then
            rs.instances[#rs.instances + 1] = {
                id = id,
                tags = tags_of(inst.MainDicomTags, what .. ".MainDicomTags"),
                file_size = size_of(inst.FileSize),
            }
        end
    end
    local by_instance = by_number("InstanceNumber")
    for _, rs in ipairs(real.series) do
        sort(rs.instances, by_instance)
        rs.instances_count = #rs.instances
    end
    sort(real.series, by_number("SeriesNumber"))

    local wrap = M.sandbox.readonly("the study")
    local ids = {}
    for i, rs in ipairs(real.series) do ids[i] = rs.id end
    return {
        instances_total = #instance_list,
        real = real,
        view = wrap(real),
        wrap = wrap,
        series_by_id = by_id,
        series_ids = ids,
    }
end

return study
