-- study.lua - the study object rules see, over a compact snapshot.
--
-- build(ud) takes a snapshot userdata (bindings/study.c: Orthanc's answers
-- already decoded, checked and ordered by core/snapshot.c) and returns:
--   snap.real        the plain study table (host side only):
--       { id, tags = MainDicomTags, patient = PatientMainDicomTags,
--         series = { { id, tags, instances_count, instances = <lazy list
--                      of { id, tags, file_size }> }, ... },
--         last_update, is_stable }
--       series in SeriesNumber order, instances in InstanceNumber order.
--   snap.view        the same study as rules see it: a read-only proxy
--                    (index, #, ipairs, pairs work; writes raise)
--   snap.series_by_id[id] = real series;   snap.wrap(real) = its proxy
--   snap.series_ids (in order);   snap.index_of[real series] = its position
--   snap.instances_total;   snap.ud (the snapshot itself)
-- Study and series tables are made here; an instance table is made when it
-- is first read and kept only while something holds it (a weak cache), so
-- a 100,000-instance study costs the C snapshot, not a table per instance.
local M = ...

local setmetatable, type, tointeger = setmetatable, type, math.tointeger

local study = {}

-- The instances of series k (n of them) as a lazy list.
local function lazy_instances(C, ud, k, n)
    local cache = setmetatable({}, { __mode = "v" })
    local list = setmetatable({}, {
        __index = function(_, j)
            if type(j) ~= "number" then return nil end
            j = tointeger(j)
            if not j or j < 1 or j > n then return nil end
            local inst = cache[j]
            if inst == nil then
                local id, tags, size = C.snap_instance(ud, k, j)
                inst = { id = id, tags = tags, file_size = size }
                cache[j] = inst
            end
            return inst
        end,
        __len = function() return n end,
        __newindex = function() error("the study is read-only", 2) end,
        __metatable = "the study",
    })
    M.sandbox.sequence(list)
    return list
end

function study.build(ud)
    local C = M.c
    local id, last_update, is_stable, tags, patient, nseries, listed = C.snap_study(ud)
    local real = {
        id = id, tags = tags, patient = patient, series = {},
        last_update = last_update, is_stable = is_stable,
    }
    local by_id, ids, index_of = {}, {}, {}
    for k = 1, nseries do
        local sid, stags, n = C.snap_series(ud, k)
        local rs = { id = sid, tags = stags, instances_count = n,
            instances = lazy_instances(C, ud, k, n) }
        real.series[k], by_id[sid], ids[k], index_of[rs] = rs, rs, sid, k
    end
    local wrap = M.sandbox.readonly("the study")
    return {
        instances_total = listed,
        real = real,
        view = wrap(real),
        wrap = wrap,
        series_by_id = by_id,
        series_ids = ids,
        index_of = index_of,
        ud = ud,
    }
end

return study
