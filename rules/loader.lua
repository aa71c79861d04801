-- loader.lua - one rule file's text -> a checked rule record.
--
-- JSON rules are decoded with lua-cjson and compiled to Lua by
-- rules/compile.lua; Lua rules are used as they are.  Either way the Lua
-- source is loaded as text ("t") into a fresh sandbox environment and run;
-- it must return the rule table of the contract (see host.lua).  Every
-- failure raises a one-line message that names the file and, where known,
-- the line: "rules/x.lua:3: ...", "rules/x.json:4: invalid JSON: ...",
-- "rules/x.lua: check_on must be \"study\" or \"series\" (got nil)".
-- Chunk names: "@<file>" for Lua rules, "@<file> (compiled)" for JSON rules,
-- so runtime errors point at the rule, not at the engine.
local M = ...

local type, tostring, error, pcall, load = type, tostring, error, pcall, load

local loader = {}

local FIELDS = {
    check_on = true, action = true, destination = true, active = true, comment = true,
    priority = true, unconditional = true,
    match = true, name = true, series_name = true, file_name = true, on_exported = true,
}
local HOOKS = { "name", "series_name", "file_name", "on_exported" }

local function fail(file, msg)
    error(file .. ": " .. msg, 0)
end

local function line_of(text, pos)
    local line = 1
    for _ in text:sub(1, pos - 1):gmatch("\n") do line = line + 1 end
    return line
end

local function show(v)
    if type(v) == "string" then return string.format("%q", v) end
    return tostring(v)
end

-- The Lua source of a rule file and the chunk name to load it under.
function loader.source(file, kind, text)
    if kind ~= "json" then
        return text, "@" .. file
    end
    local ok, decoded = pcall(M.cjson.decode, text)
    if not ok then
        local msg = tostring(decoded)
        local pos = tonumber(msg:match("at character (%d+)"))
        if pos then
            error(file .. ":" .. line_of(text, pos) .. ": invalid JSON: " .. msg, 0)
        end
        fail(file, "invalid JSON: " .. msg)
    end
    if type(decoded) ~= "table" or decoded[1] ~= nil then
        fail(file, "a JSON rule must be an object")
    end
    if not M.compile then
        fail(file, "the JSON rule compiler (rules/compile.lua) is not available")
    end
    local cok, src, cerr = pcall(M.compile.compile, decoded, file)
    if not cok then fail(file, "compiler failure: " .. tostring(src)) end
    if type(src) ~= "string" then
        cerr = tostring(cerr or "could not compile")
        if cerr:find(file, 1, true) ~= 1 then cerr = file .. ": " .. cerr end
        error(cerr, 0)
    end
    return src, "@" .. file .. " (compiled)"
end

-- Check what a rule file returned; returns the record the host keeps.
function loader.validate(rule, file, kind)
    if type(rule) ~= "table" then
        fail(file, "the rule must return a table (got " .. type(rule) .. ")")
    end
    if kind == "lua" then
        for k in pairs(rule) do
            if not FIELDS[k] then
                fail(file, "unknown field " .. show(k) .. " (allowed: action, active, check_on, " ..
                    "comment, destination, file_name, match, name, on_exported, priority, series_name, " ..
                    "unconditional)")
            end
        end
    end
    local check_on, action = rule.check_on, rule.action
    if check_on ~= "study" and check_on ~= "series" then
        fail(file, "check_on must be \"study\" or \"series\" (got " .. show(check_on) .. ")")
    end
    if action ~= "download" and action ~= "forward" then
        fail(file, "action must be \"download\" or \"forward\" (got " .. show(action) .. ")")
    end
    local destination = rule.destination
    if action == "forward" then
        if type(destination) ~= "string" or destination == "" or #destination > 255 then
            fail(file, "a forward rule needs destination = \"<modality>\" (got " .. show(destination) .. ")")
        end
    else
        destination = nil
    end
    local active = rule.active
    if active == nil then active = true end
    if type(active) ~= "boolean" then
        fail(file, "active must be true or false (got " .. show(active) .. ")")
    end
    local priority = rule.priority
    if priority == nil then priority = "normal" end
    if priority ~= "urgent" and priority ~= "normal" and priority ~= "low" then
        fail(file, "priority must be \"urgent\", \"normal\" or \"low\" (got " .. show(priority) .. ")")
    end
    local comment = rule.comment
    if comment ~= nil and type(comment) ~= "string" then
        fail(file, "comment must be a string (got " .. type(comment) .. ")")
    end
    if type(rule.match) ~= "function" then
        fail(file, "match must be a function (got " .. type(rule.match) .. ")")
    end
    local naming_hook = nil
    if kind == "json" and rule.naming_hook ~= nil then
        naming_hook = rule.naming_hook
        if type(naming_hook) ~= "string" or naming_hook == "" then
            fail(file, "naming_hook must be a file name")
        end
    end
    local rec = {
        check_on = check_on, action = action, destination = destination, active = active,
        priority = priority, comment = comment, match = rule.match, rule = rule, naming_hook = naming_hook,
        -- no conditions (the JSON compiler says so): it matches everything
        unconditional = rule.unconditional == true,
    }
    for _, h in ipairs(HOOKS) do
        local f = rule[h]
        if f ~= nil and type(f) ~= "function" then
            fail(file, h .. " must be a function (got " .. type(f) .. ")")
        end
        rec[h] = f
    end
    return rec
end

-- A naming hook file (JSON rules' "NamingHook"): run in the rule's own env,
-- it returns a table with any of name / series_name / file_name.
function loader.naming_hook(rec, path, text)
    local fn, err = load(text, "@" .. path, "t", rec.env)
    if not fn then
        err = tostring(err)
        if not err:find(path, 1, true) then err = path .. ": " .. err end
        error(err, 0)
    end
    local t = fn()
    if type(t) ~= "table" then
        fail(path, "a naming hook file must return a table (got " .. type(t) .. ")")
    end
    for k, v in pairs(t) do
        if k ~= "name" and k ~= "series_name" and k ~= "file_name" then
            fail(path, "unknown field " .. show(k) .. " (allowed: file_name, name, series_name)")
        end
        if type(v) ~= "function" then
            fail(path, k .. " must be a function (got " .. type(v) .. ")")
        end
        rec[k] = v
    end
end

-- Run a rule's source in a fresh environment and check the result.
-- Returns the record (with .env).
function loader.instantiate(file, kind, source, chunkname)
    local env = M.sandbox.new_env()
    local fn, err = load(source, chunkname, "t", env)
    if not fn then
        err = tostring(err)
        if not err:find(file, 1, true) then err = file .. ": " .. err end
        error(err, 0)
    end
    local rec = loader.validate(fn(), file, kind)
    rec.env = env
    return rec
end

return loader
