-- lpattern_diff.lua - rules/lpattern.lua against Lua's own pattern functions.
--
-- Run by tests/unit/test_lpattern.c in a plain Lua state (all libraries,
-- native string functions) with the lpattern module table as its argument.
-- Compares find, match, gmatch and gsub call by call (results, or the error
-- message) on a hand-written table of tricky cases and on generated
-- (subject, pattern) pairs; returns the number of comparisons and a list
-- of the first mismatches, each one line.
local lp, ngenerated, seed = ...
ngenerated = ngenerated or 3000

local native = { find = string.find, match = string.match, gmatch = string.gmatch, gsub = string.gsub }
local impl = { find = lp.find, match = lp.match, gmatch = lp.gmatch, gsub = lp.gsub }

local format, concat, pack = string.format, table.concat, table.pack

local function show1(v)
    if type(v) == "string" then return (format("%q", v):gsub("\n", "n")) end
    return tostring(v)
end

local function show(r)
    local out = {}
    for i = 1, r.n do out[i] = show1(r[i]) end
    return concat(out, ",")
end

-- One call as text: "ok:<results>" or "err:<message>".
local function run(fns, op, s, p, a, b)
    local r
    if op == "gmatch" then
        r = pack(pcall(function()
            local out, it = {}, fns.gmatch(s, p, a)
            for _ = 1, 200 do
                local v = pack(it())
                if v[1] == nil then break end
                out[#out + 1] = "(" .. show(v) .. ")"
            end
            return concat(out)
        end))
    else
        r = pack(pcall(fns[op], s, p, a, b))
    end
    if r[1] then return "ok:" .. show(pack(table.unpack(r, 2, r.n))) end
    return "err:" .. tostring(r[2])
end

local count, fails = 0, {}
local function compare(op, s, p, a, b)
    count = count + 1
    local want = run(native, op, s, p, a, b)
    local got = run(impl, op, s, p, a, b)
    if want ~= got and #fails < 20 then
        fails[#fails + 1] = format("%s(%s, %s, %s, %s): native %s, lpattern %s", op, show1(s),
            show1(p), show1(a), type(b) == "function" and "function" or show1(b), want, got)
    end
end

-- Replacements for gsub.
local function repl_fn(...)
    local n = select("#", ...)
    if n % 2 == 0 and (...) ~= "a" then return nil end
    local parts = {}
    for i = 1, n do parts[i] = tostring((select(i, ...))) end
    return "<" .. concat(parts, "|") .. ">"
end
local repl_tbl = setmetatable({ a = "A", b = false, c = 7 }, {
    __index = function(_, k)
        if type(k) == "number" then return k * 10 end
        if #k % 2 == 1 then return k:upper() end
        return nil
    end,
})
local REPLS = { "<%0>", "%1", "[%1|%2]", "%%", "x", "", "%", "%x", "%9", "%1%0%1", 42, repl_fn, repl_tbl }

-- ---- hand-written cases ----------------------------------------------------------

local cases = {
    -- plain search, specials, init
    { "find", "a.c.d", ".", 1, true }, { "find", "a+b", "+" }, { "find", "a)b", ")" },
    { "find", "a]b", "]" }, { "find", "abc", "", 10 }, { "find", "abc", "", 4 }, { "find", "abc", "", 5 },
    { "find", "abc", "b", -100 }, { "find", "abc", "b", -2 }, { "find", "abc", "b", 0 },
    { "find", "abc", "c", 3 }, { "find", "abc", "[a-c]", -1 }, { "find", "", "" }, { "find", "", "^$" },
    { "find", "aaa", "^a", 2 }, { "find", "a\0b", "\0", 1, true }, { "find", "a\0b", "a\0" },
    { "find", "a\0b", "%z" }, { "find", "a\0b", "[%z]" }, { "find", "a\0b", "[^%z]+", 2 },
    -- anchors
    { "find", "abc", "^b" }, { "find", "abc", "c$" }, { "find", "a$c", "$c" }, { "find", "a$", "a$$" },
    { "find", "abc", "$" }, { "match", "^abc", "^^a" }, { "find", "x", "^*" }, { "match", "**", "^**" },
    -- classes and sets
    { "match", "Hello World 42!", "%u%l+" }, { "match", "x_1 y", "[%w_]+" }, { "match", "d%a", "[a-%d]+" },
    { "match", "]a^b", "[]]" }, { "match", "b]", "[^]]+" }, { "match", "a-b", "[a-]+" },
    { "match", "-]^", "[%]-]+" }, { "match", "^x", "[^^]" }, { "match", "x^", "[x^]+" },
    { "match", "_]`a", "[]-a]+" }, { "match", "abc123", "[%a-z]+" }, { "match", "\t\n x", "%s+" },
    { "match", "\1\31\127", "%c+" }, { "match", "~!", "%p+" }, { "match", "aF9g", "%x+" },
    { "match", "a b", "%g+" }, { "match", "AZ", "%U" }, { "match", "a1.", "%W" }, { "match", "a%b", "%%" },
    { "match", "ab", "%q" }, { "match", "%.", "%." }, { "match", "\200\255", "[\128-\255]+" },
    -- quantifiers
    { "match", "aaab", "a-b" }, { "match", "aaab", "a*" }, { "match", "aaa", "a+a" }, { "match", "b", "a?b" },
    { "match", "ab", "a?b" }, { "match", "key = value", "(%w+)%s*=%s*(%w+)" },
    { "match", "  trim me  ", "^%s*(.-)%s*$" }, { "match", "<a><b>", "<(.-)>" }, { "match", "<a><b>", "<(.*)>" },
    { "match", "aaaa", "(a-)(a+)" }, { "match", "", "a*" }, { "match", "", ".-$" },
    -- captures
    { "match", "hello", "()ll()" }, { "find", "hello", "()ll()" }, { "match", "hello", "(h)(e)(l)(l)(o)" },
    { "match", "abc", "((a)(b))" }, { "match", "aa", "(a)%1" }, { "match", "ab", "()%1" },
    { "match", "abab", "(ab)%1" }, { "match", "abcabc", "(a(b)c)%1%2" }, { "match", "x", "()" },
    { "find", "x", string.rep("(", 33) .. "x" .. string.rep(")", 33) },
    { "find", "x", string.rep("(", 32) .. "x" .. string.rep(")", 32) },
    { "match", string.rep("a", 300), string.rep("a?", 250) },
    { "match", string.rep("a", 300), string.rep("a?", 190) },
    -- %b and %f
    { "match", "f(a(b)c)d", "%b()" }, { "match", "f(a(b c)d", "%b()" }, { "match", "[[x]]", "%[(%b[])%]" },
    { "match", "\"q\"", "%b\"\"" }, { "find", "THE (quick) fox", "%f[%a]%a+", 5 },
    { "match", "aXb", "%f[%u]." }, { "gsub", "hello world", "%f[%w]%w+", "<%0>" },
    { "find", "end", "%f[%z]" }, { "find", "end", "%f[%Z]" }, { "find", "x", "%f[^%z]" },
    -- malformed patterns (errors only where matching reaches them)
    { "find", "abc", "a%" }, { "find", "b", "a%" }, { "find", "abc", "[a" }, { "find", "abc", "[]" },
    { "find", "abc", "[^]" }, { "find", "abc", "[%" }, { "find", "abc", "[%]" }, { "find", "abc", "%f" },
    { "find", "abc", "%fa" }, { "find", "abc", "%f[a" }, { "find", "abc", "%b" }, { "find", "abc", "%ba" },
    { "find", "abc", "(()" }, { "find", "abc", "(a" }, { "match", "abc", "a)" }, { "find", "xyz", "a)" },
    { "match", "abc", "%1" }, { "match", "abc", "%0" }, { "match", "abc", "(a%1)" }, { "match", "abc", "(a)%2" },
    { "match", "zzz", "x%" },
    -- gmatch
    { "gmatch", "one two  three", "%a+" }, { "gmatch", "abc", "" }, { "gmatch", "abc", ".", 2 },
    { "gmatch", "abc", ".", -1 }, { "gmatch", "abc", ".", 10 }, { "gmatch", "abc", "", 4 },
    { "gmatch", "a^b^", "^b" }, { "gmatch", "k=v, a=b", "(%w+)=(%w+)" }, { "gmatch", "abc", "()" },
    { "gmatch", "aaa", "a*" }, { "gmatch", "abab", "b*" }, { "gmatch", "abc", "[" },
    -- gsub
    { "gsub", "abc", "", "-" }, { "gsub", "abc", "^", "-" }, { "gsub", "abc", "$", "!" },
    { "gsub", "abc", ".-", "x" }, { "gsub", "abc", "b*", "-" }, { "gsub", "hello world", "(o)", "%1%1", 1 },
    { "gsub", "hello", "l", "L", 0 }, { "gsub", "hello", "l", "L", -1 }, { "gsub", "abc", "%w", "%" },
    { "gsub", "abc", "(b)", "%2" }, { "gsub", "abc", "b", "%1" }, { "gsub", "abc", "()b", "%1" },
    { "gsub", "abc", "%w", "%0%0" }, { "gsub", "hello", "", "%1" }, { "gsub", "abc", "%w", { a = 1, b = true } },
    { "gsub", "abc", "%w", { a = {} } }, { "gsub", "abc", "%w", function() return {} end },
    { "gsub", "abc", "%w", function(c) return c == "b" and 2.5 or nil end }, { "gsub", "abc", "x*", "-" },
    { "gsub", "a b c", " ", "%%" }, { "gsub", "abc", "^(a)", "%1%1" }, { "gsub", "abc", "(", "x" },
    { "gsub", "", "", "e" }, { "gsub", "abc", "b", "%\0" }, { "gsub", "abc", "a", "x%" },
    -- subjects longer than lpattern copies into a table (read through string.byte)
    { "find", ("ab"):rep(150000) .. "c", "(a)(b)c" }, { "match", ("ab"):rep(150000) .. "c", "%f[c]." },
    { "find", ("ab"):rep(150000), "b", -3 }, { "gsub", ("ab"):rep(140000), "ba", "x" },
    { "match", ("ab"):rep(140000) .. "(x)", "%b()" },
}
for _, c in ipairs(cases) do compare(c[1], c[2], c[3], c[4], c[5]) end

-- Error positions: the caller's line, as with the native functions.  (Not
-- through a tail call: Lua 5.4 keeps the caller's frame when it tail-calls
-- a C function, not a Lua one; rules reach lpattern through the C guard,
-- whose own frame keeps the position right, see test_lpattern.c.)
do
    local function where(fns, src)
        local f = assert(load(src, "=here", "t", { F = fns, pcall = pcall }))
        local _, e = f()
        return e
    end
    local srcs = {
        "local ok, e = pcall(function() local r = F.find('abc', '[a') return r end) return ok, e",
        "local ok, e = pcall(function() local r = F.match('abc', '%1') return r end) return ok, e",
        "local ok, e = pcall(function() local r = F.gsub('abc', 'b', '%2') return r end) return ok, e",
        "local ok, e = pcall(function()\n for x in F.gmatch('abc', '(') do end\n end) return ok, e",
        "local ok, e = pcall(function() return F.gsub('abc', 'b', function() error('boom') end) end) return ok, e",
    }
    for _, src in ipairs(srcs) do
        count = count + 1
        local want, got = where(native, src), where(impl, src)
        if want ~= got and #fails < 20 then
            fails[#fails + 1] = format("error position: native %s, lpattern %s", tostring(want), tostring(got))
        end
    end
end

-- ---- generated cases ----------------------------------------------------------------

math.randomseed(seed or 20240131)
local random = math.random

local SUBJECT_CHARS = { "a", "b", "a", "b", "c", "(", ")", "[", "]", "%", "-", " ", "1", "A", "\0", ".", "^", "$" }
local ATOMS = {
    "a", "b", "c", ".", "%a", "%d", "%s", "%w", "%A", "%S", "%%", "%(", "%.", "[ab]", "[^a]", "[a-c]",
    "[%d%s]", "[]]", "[^]]", "[a-]", "%x", "%p", "%u", "%l", "%c", "%g", "%z", "1", " ", "A", "%]", "%-",
}
local SPECIAL = {
    "(", ")", "()", "%1", "%2", "%0", "%b()", "%bab", "%f[%w]", "%f[%W]", "%f[a]", "$", "[", "%", "%b",
    "%f", "-", "*", "+", "?", "^", "[a", "%f[",
}
local SUFFIXES = { "*", "+", "-", "?" }

local function subject()
    local n = random(0, 10)
    local t = {}
    for i = 1, n do t[i] = SUBJECT_CHARS[random(#SUBJECT_CHARS)] end
    return concat(t)
end

local function pattern()
    local t = {}
    if random() < 0.2 then t[1] = "^" end
    local quantified = 0
    for _ = 1, random(0, 6) do
        if random() < 0.75 then
            local a = ATOMS[random(#ATOMS)]
            if quantified < 4 and random() < 0.4 then
                a = a .. SUFFIXES[random(#SUFFIXES)]
                quantified = quantified + 1
            end
            t[#t + 1] = a
        else
            t[#t + 1] = SPECIAL[random(#SPECIAL)]
        end
    end
    if random() < 0.15 then t[#t + 1] = "$" end
    return concat(t)
end

-- Well-formed patterns over a small alphabet, and subjects over it: most
-- of these match, with captures and back-references.
local WF_ATOMS = { "a", "b", ".", "[ab]", "[^b]", "%a", "%(", "%)" }
local function wf_pattern(depth, closed)
    local t = {}
    for _ = 1, random(1, 4) do
        local r = random()
        if r < 0.15 and depth < 3 then
            t[#t + 1] = "(" .. wf_pattern(depth + 1, closed) .. ")"
            closed[1] = closed[1] + 1
        elseif r < 0.2 then
            t[#t + 1] = "()"
            closed[1] = closed[1] + 1
        elseif r < 0.27 and closed[1] > 0 then
            t[#t + 1] = "%" .. random(1, closed[1])
        elseif r < 0.3 then
            t[#t + 1] = "%b()"
        elseif r < 0.33 then
            t[#t + 1] = random() < 0.5 and "%f[a]" or "%f[^a]"
        else
            local a = WF_ATOMS[random(#WF_ATOMS)]
            if random() < 0.5 then a = a .. SUFFIXES[random(#SUFFIXES)] end
            t[#t + 1] = a
        end
    end
    return concat(t)
end
local WF_CHARS = { "a", "a", "b", "b", "(", ")", "c" }
local function wf_subject()
    local t = {}
    for i = 1, random(0, 16) do t[i] = WF_CHARS[random(#WF_CHARS)] end
    return concat(t)
end

local INITS = { nil, nil, nil, 1, 2, 3, -1, -3, 0, 20, -20 }
for k = 1, ngenerated do
    local s, p
    if k % 2 == 0 then
        s, p = wf_subject(), (random() < 0.2 and "^" or "") .. wf_pattern(0, { 0 }) ..
            (random() < 0.2 and "$" or "")
    else
        s, p = subject(), pattern()
    end
    local init = INITS[random(#INITS)]
    compare("find", s, p, init, random() < 0.1 or nil)
    compare("match", s, p, init)
    compare("gmatch", s, p, init)
    compare("gsub", s, p, REPLS[random(#REPLS)], random() < 0.2 and random(-1, 3) or nil)
end

return count, fails
