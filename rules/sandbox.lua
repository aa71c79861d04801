-- sandbox.lua - the environments rules run in.
--
-- Promises:
--  * one frozen `base` of allowed globals, shared by every rule: the base
--    library minus dofile/loadfile/collectgarbage (only "count")/warn/
--    require, with guarded getmetatable (nil for strings, so the shared
--    string metatable is out of reach), setmetatable (only tables whose
--    metatable is not protected; no __gc), rawset (never on a frozen or
--    read-only table); read-only views of string (without dump; its
--    pattern functions, also reached as methods on strings, bounded by the
--    budget: rules/lpattern.lua), table, math and utf8 (pairs on them
--    never hands out the table behind); and the prelude's helpers.
--    Reading a name base doesn't have raises "undefined global 'x'".
--    Nothing can write to base.
--  * new_env(): a fresh table per rule whose reads fall back to base, so
--    rules never see each other's globals; its `load` accepts text only and
--    binds the chunk to that rule's env; `_G` is the env itself.
--  * readonly(label): a factory of read-only proxies over plain tables that
--    still index, #, ipairs and pairs like the real thing (nested tables come
--    back as proxies too, cached, so identity is stable); writes raise
--    "<label> is read-only".
-- Called with the module table M (M.prelude may be absent while the
-- compiler helper is not there yet; M.c.print is the C print sink).
local M = ...

local error, type, next, select, tostring = error, type, next, select, tostring
local real_getmetatable, real_setmetatable = getmetatable, setmetatable
local real_rawset, real_rawget, real_load = rawset, rawget, load
local real_collectgarbage, real_xpcall = collectgarbage, xpcall
local concat = table.concat

local sandbox = {}

-- Read-only proxies ------------------------------------------------------

-- Lazy sequences (rules/study.lua's instance lists): tables that answer
-- t[i] and #t through their own metatable and hold nothing themselves;
-- a proxy over one iterates it by index.
local sequences = real_setmetatable({}, { __mode = "k" })
function sandbox.sequence(t)
    sequences[t] = true
    return t
end

function sandbox.readonly(label)
    -- Weak both ways (ephemerons): a proxy lives while its table does and
    -- something holds the proxy, so reading every instance of a big study
    -- once does not keep a proxy per instance.
    local real_of = real_setmetatable({}, { __mode = "k" })
    local proxy_of = real_setmetatable({}, { __mode = "k" })
    local msg = label .. " is read-only"
    local mt = {}
    local function wrap(t)
        local p = proxy_of[t]
        if p == nil then
            p = real_setmetatable({}, mt)
            real_of[p], proxy_of[t] = t, p
        end
        return p
    end
    mt.__index = function(p, k)
        local v = real_of[p][k]
        if type(v) == "table" then return wrap(v) end
        return v
    end
    mt.__newindex = function() error(msg, 2) end
    mt.__len = function(p) return #real_of[p] end
    mt.__pairs = function(p)
        local t = real_of[p]
        if sequences[t] then
            local n = #t
            return function(_, i)
                i = i + 1
                if i <= n then return i, p[i] end
            end, p, 0
        end
        return function(_, k)
            local nk, nv = next(t, k)
            if type(nv) == "table" then nv = wrap(nv) end
            return nk, nv
        end, p, nil
    end
    mt.__metatable = label
    return wrap
end

-- A read-only view of a flat table of functions (the libraries, the
-- prelude): __index is the table itself, the fast path.
local function frozen(t)
    return real_setmetatable({}, {
        __index = t,
        __newindex = function() error("this library table is read-only", 2) end,
        __len = function() return #t end,
        -- (never `next, t`: pairs would hand the rule the writable table)
        __pairs = function(p) return function(_, k) return next(t, k) end, p, nil end,
        __metatable = "read-only library",
    })
end

-- Guarded base functions -------------------------------------------------

-- Tables made by new_env: rawset on them is the rule's own business.
local is_env = real_setmetatable({}, { __mode = "k" })

-- A table is protected when its metatable is hidden behind __metatable
-- (proxies, frozen tables, environments).
local function protected(t)
    local mt = real_getmetatable(t)
    return mt ~= nil and type(mt) ~= "table"
end

local function safe_getmetatable(o)
    if type(o) == "string" then return nil end
    return real_getmetatable(o)
end

local function safe_setmetatable(t, mt)
    if type(t) ~= "table" then
        error("bad argument #1 to 'setmetatable' (table expected, got " .. type(t) .. ")", 2)
    end
    if protected(t) then
        error("cannot change a protected metatable", 2)
    end
    if type(mt) == "table" and real_rawget(mt, "__gc") ~= nil then
        error("setmetatable: __gc metamethods are not allowed in rules", 2)
    end
    return real_setmetatable(t, mt)
end

local function safe_rawset(t, k, v)
    if type(t) == "table" and protected(t) and not is_env[t] then
        error("rawset: this table is read-only", 2)
    end
    return real_rawset(t, k, v)
end

local function safe_collectgarbage(opt)
    if opt == "count" then return real_collectgarbage("count") end
    error("collectgarbage: only collectgarbage(\"count\") is allowed in rules", 2)
end

-- The rule's handler must not run inside the budget hook (hooks are off
-- there): bindings/sandbox.c's guard skips it once the call is over budget.
local xpcall_guard = M.c.xpcall_guard
local function safe_xpcall(f, handler, ...)
    return real_xpcall(f, xpcall_guard(handler), ...)
end

local function safe_print(...)
    local n = select("#", ...)
    local parts = {}
    for i = 1, n do parts[i] = tostring((select(i, ...))) end
    M.c.print(concat(parts, "\t"))
end

local function copy(t, without)
    local c = {}
    for k, v in next, t do
        if k ~= without then c[k] = v end
    end
    return c
end

-- The string library rules see: find/match/gmatch/gsub are the bounded
-- versions (rules/lpattern.lua), which the budget and deadline can stop.
-- Methods on strings ("x"):find(...) go through the string metatable, which
-- the whole state shares: its __index gets the same functions (host code
-- calling methods stays correct: the guard is native whenever cheap; host
-- modules call string.* through their own locals).
local guarded = M.lpattern and M.lpattern.guarded
local function string_library()
    local t = copy(string, "dump")
    for k, f in next, guarded or {} do t[k] = f end
    return t
end
if guarded then real_getmetatable("").__index = string_library() end

local base = {
    assert = assert, error = error, ipairs = ipairs, next = next, pairs = pairs,
    pcall = pcall, rawequal = rawequal, rawget = rawget, rawlen = rawlen,
    select = select, tonumber = tonumber, tostring = tostring, type = type,
    xpcall = safe_xpcall, _VERSION = _VERSION,
    getmetatable = safe_getmetatable, setmetatable = safe_setmetatable,
    rawset = safe_rawset, collectgarbage = safe_collectgarbage, print = safe_print,
    string = frozen(string_library()),
    table = frozen(copy(table)),
    math = frozen(copy(math)),
    utf8 = frozen(copy(utf8)),
}

-- The prelude's helpers become globals too; they never replace a base name.
local helpers = {}
for k, v in pairs(M.prelude or {}) do
    if type(k) == "string" and base[k] == nil then
        if type(v) == "table" then v = frozen(v) end
        base[k] = v
        helpers[#helpers + 1] = k
    end
end
table.sort(helpers)
sandbox.helpers = helpers

real_setmetatable(base, {
    __index = function(_, k)
        error("undefined global '" .. tostring(k) .. "'", 2)
    end,
    __newindex = function() error("the shared globals are read-only", 2) end,
    __metatable = false,
})

-- Rule environments ---------------------------------------------------------

local env_mt = { __index = base, __metatable = false }

function sandbox.new_env()
    local env = {}
    env._G = env
    env.load = function(chunk, chunkname, mode)
        if mode ~= nil and mode ~= "t" then
            error("load: only text chunks are allowed in rules", 2)
        end
        if type(chunk) == "string" and chunk:byte(1) == 27 then
            return nil, "attempt to load a binary chunk"
        end
        return real_load(chunk, chunkname, "t", env)
    end
    is_env[env] = true
    return real_setmetatable(env, env_mt)
end

-- Is name a global every rule can read? (for tools and tests)
function sandbox.has_global(name)
    return real_rawget(base, name) ~= nil
end

return sandbox
