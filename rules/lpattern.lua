-- lpattern.lua - Lua 5.4 string patterns that the rule budget can stop.
--
-- Lua's own pattern matcher runs in C: the budget's count hook
-- (bindings/budget.c) never fires inside it, and a backtracking pattern
-- such as ("a"):rep(1e4):find(".-.-.-.-x") runs for hours.  This module
-- gives rules the same four functions, bounded.
--
-- Promises:
--  * find, match, gmatch, gsub: pattern matching as the reference manual
--    (§6.4.1) and Lua 5.4's string library define it, written in Lua, so it
--    runs as rule code under the count hook.  Same results (captures,
--    position captures, back-references, %b, %f, anchors, gmatch's literal
--    '^' and init, gsub with a string/number/table/function replacement and
--    a maximum) and the same errors, raised at the same moment (the native
--    matcher reports a malformed tail only when matching reaches it) with
--    the same messages, at the caller's position (unless the caller
--    tail-calls them: Lua drops a Lua function's caller frame then, not a
--    C function's; rules reach them through bindings/lpattern.c's guard,
--    a C function, so their positions are the native ones).
--  * guarded.find/match/gmatch/gsub (present when M.c.pattern_guard is,
--    i.e. in the engine): what rules get in place of the native functions.
--    bindings/lpattern.c bounds the native matcher's work for each call;
--    the native function runs when that bound is small, the Lua
--    implementation otherwise.  A plain search (find's 4th argument, or no
--    special characters) never comes here from the guard, which does it
--    itself in linear time; lp.find's plain search is the native one.
-- Called with the module table M (M.c.pattern_guard may be absent:
-- standalone use and tests).
local M = ...

local byte, sub, char, lower, format =
    string.byte, string.sub, string.char, string.lower, string.format
local nfind, nmatch, ngmatch, ngsub = string.find, string.match, string.gmatch, string.gsub
local type, error, pcall, pairs, tostring = type, error, pcall, pairs, tostring
local setmetatable, getmetatable = setmetatable, getmetatable
local concat, move, unpack = table.concat, table.move, table.unpack

local lp = {}

-- ---- constants -----------------------------------------------------------------

local MAXCAPTURES = 32 -- LUA_MAXCAPTURES
local MAXDEPTH = 200   -- MAXCCALLS: nesting of the matcher's recursive calls
local CAP_UNF, CAP_POS = -1, -2

local PCT, LBR, RBR, CARET, DOLLAR = 37, 91, 93, 94, 36
local LPAR, RPAR, DOT = 40, 41, 46
local STAR, PLUS, MINUS, QUEST = 42, 43, 45, 63

-- Item kinds.
local SINGLE, OPEN, POSCAP, CLOSE, ENDANCHOR, BALANCE, FRONTIER, BACKREF, BAD =
    1, 2, 3, 4, 5, 6, 7, 8, 9
-- Suffixes of a single-character item.
local NONE = 0

-- ---- character classes ------------------------------------------------------------
-- Sets are tables indexed by byte (0..255): true for members.  The classes
-- follow the C locale's <ctype.h> (the engine never calls setlocale).

local function range_set(t, lo, hi)
    for c = lo, hi do t[c] = true end
    return t
end

local ANY = range_set({}, 0, 255)

local CTYPE = {}
CTYPE.a = range_set(range_set({}, 65, 90), 97, 122)
CTYPE.c = range_set(range_set({}, 0, 31), 127, 127)
CTYPE.d = range_set({}, 48, 57)
CTYPE.g = range_set({}, 33, 126)
CTYPE.l = range_set({}, 97, 122)
CTYPE.p = range_set(range_set(range_set(range_set({}, 33, 47), 58, 64), 91, 96), 123, 126)
CTYPE.s = range_set(range_set({}, 9, 13), 32, 32)
CTYPE.u = range_set({}, 65, 90)
CTYPE.w = range_set(range_set(range_set({}, 48, 57), 65, 90), 97, 122)
CTYPE.x = range_set(range_set(range_set({}, 48, 57), 65, 70), 97, 102)
-- %z (the NUL byte) is a deprecated class some builds still have: ask.
if nfind("\0", "^%z") and not nfind("z", "^%z") then CTYPE.z = { [0] = true } end

local CLASS = {}   -- CLASS[byte after '%'] -> set, built on first use
local LITERAL = {} -- LITERAL[byte] -> { [byte] = true }

local function literal(c)
    local t = LITERAL[c]
    if not t then
        t = { [c] = true }
        LITERAL[c] = t
    end
    return t
end

-- Does class letter cl (the byte after '%') hold byte c? (match_class)
local function class_set(cl)
    local t = CLASS[cl]
    if t then return t end
    local ch = char(cl)
    local base = CTYPE[lower(ch)]
    if not base then
        t = literal(cl)
    elseif lower(ch) == ch then
        t = base
    else
        t = {}
        for c = 0, 255 do
            if not base[c] then t[c] = true end
        end
    end
    CLASS[cl] = t
    return t
end

-- The set "[...]" at p[a] .. p[ec] (p[ec] == "]"): union of its chars,
-- ranges and classes, complemented after "^".
local function make_bracket_set(p, a, ec)
    local t, neg = {}, false
    local i = a + 1
    if byte(p, i) == CARET then
        neg = true
        i = i + 1
    end
    while i < ec do
        local c = byte(p, i)
        if c == PCT then
            i = i + 1
            for k in pairs(class_set(byte(p, i))) do t[k] = true end
            i = i + 1
        elseif byte(p, i + 1) == MINUS and i + 2 < ec then
            range_set(t, c, byte(p, i + 2))
            i = i + 3
        else
            t[c] = true
            i = i + 1
        end
    end
    if not neg then return t end
    local u = {}
    for c = 0, 255 do
        if not t[c] then u[c] = true end
    end
    return u
end

-- Sets by their text (a set is up to 256 entries: share them), a bounded
-- cache.
local SETS, nsets = {}, 0
local function bracket_set(p, a, ec)
    local key = sub(p, a, ec)
    local t = SETS[key]
    if t then return t end
    t = make_bracket_set(p, a, ec)
    if #key <= 64 then
        if nsets >= 128 then SETS, nsets = {}, 0 end
        SETS[key] = t
        nsets = nsets + 1
    end
    return t
end

-- ---- compiling a pattern ------------------------------------------------------------

-- The end of the single-character class starting at p[i] (classEnd):
-- the index after it, or nil and the error the matcher raises there.
local function class_end(p, i, n)
    local c = byte(p, i)
    i = i + 1
    if c == PCT then
        if i > n then return nil, "malformed pattern (ends with '%')" end
        return i + 1
    elseif c == LBR then
        if byte(p, i) == CARET then i = i + 1 end
        repeat
            if i > n then return nil, "malformed pattern (missing ']')" end
            local d = byte(p, i)
            i = i + 1
            if d == PCT and i <= n then i = i + 1 end
        until byte(p, i) == RBR
        return i + 1
    end
    return i
end

local function single_set(p, i, ep)
    local c = byte(p, i)
    if c == DOT then return ANY end
    if c == PCT then return class_set(byte(p, i + 1)) end
    if c == LBR then return bracket_set(p, i, ep - 1) end
    return literal(c)
end

local function is_suffix(c)
    return c == STAR or c == PLUS or c == MINUS or c == QUEST
end

-- The pattern p from index `from` as a list of items.  The items follow one
-- another whatever the subject, so a malformed part becomes a BAD item that
-- raises when the matcher reaches it (and everything after it is dead).
local function compile(p, from)
    local prog, n, i = {}, #p, from
    while i <= n do
        local c = byte(p, i)
        local it
        if c == LPAR then
            if byte(p, i + 1) == RPAR then
                it = { k = POSCAP }
                i = i + 2
            else
                it = { k = OPEN }
                i = i + 1
            end
        elseif c == RPAR then
            it = { k = CLOSE }
            i = i + 1
        elseif c == DOLLAR and i == n then
            it = { k = ENDANCHOR }
            i = i + 1
        else
            local e = c == PCT and byte(p, i + 1)
            if e == 98 then -- %bxy
                if i + 3 > n then
                    it = { k = BAD, msg = "malformed pattern (missing arguments to '%b')" }
                else
                    it = { k = BALANCE, open = byte(p, i + 2), close = byte(p, i + 3) }
                end
                i = i + 4
            elseif e == 102 then -- %f[set]
                if byte(p, i + 2) ~= LBR then
                    it = { k = BAD, msg = "missing '[' after '%f' in pattern" }
                else
                    local ep, err = class_end(p, i + 2, n)
                    if not ep then
                        it = { k = BAD, msg = err }
                    else
                        it = { k = FRONTIER, set = bracket_set(p, i + 2, ep - 1) }
                        i = ep
                    end
                end
            elseif e and e >= 48 and e <= 57 then -- %0 .. %9
                it = { k = BACKREF, l = e - 49 }
                i = i + 2
            else
                local ep, err = class_end(p, i, n)
                if not ep then
                    it = { k = BAD, msg = err }
                else
                    local s = byte(p, ep)
                    if not is_suffix(s) then s = NONE end
                    it = { k = SINGLE, set = single_set(p, i, ep), suf = s }
                    i = s == NONE and ep or ep + 1
                end
            end
        end
        prog[#prog + 1] = it
        if it.k == BAD then break end
    end
    return prog
end

-- Compiled programs of short patterns, by pattern and start index (a
-- bounded cache: the engine's memory is shared by every rule).
local PROGS, nprogs = { {}, {} }, 0
local function program(p, from)
    local cache = PROGS[from]
    local prog = cache[p]
    if prog then return prog end
    prog = compile(p, from)
    if #p <= 256 then
        if nprogs >= 64 then
            PROGS, nprogs = { {}, {} }, 0
            cache = PROGS[from]
        end
        cache[p] = prog
        nprogs = nprogs + 1
    end
    return prog
end

-- ---- matching -------------------------------------------------------------------------

-- A matcher error: caught by the public function, re-raised at the caller.
local PERR = {}
local function perr(msg)
    error(setmetatable({ msg = msg }, PERR), 0)
end

-- The subject's bytes from index `from` on, as a table (nil past the end).
-- Huge subjects are read through string.byte instead of being copied.
local BIG = 1 << 18
local function subject_bytes(s, from)
    local n = #s
    if n - from > BIG then
        return setmetatable({}, { __index = function(_, i) return byte(s, i) end })
    end
    local S = {}
    for a = from, n, 4096 do
        local b = a + 4095
        if b > n then b = n end
        move({ byte(s, a, b) }, 1, b - a + 1, a, S)
    end
    return S
end

local function new_state(s, prog, from)
    return {
        src = s, S = subject_bytes(s, from > 1 and from - 1 or 1), n = #s, prog = prog,
        level = 0, depth = MAXDEPTH, cinit = {}, clen = {},
    }
end

local match_at -- (ms, s, i) -> end of the match (index after it) or nil

local function max_expand(ms, s, set, i)
    local j
    if set == ANY then
        j = ms.n + 1
    else
        local S = ms.S
        j = s
        while set[S[j]] do j = j + 1 end
    end
    while j >= s do
        local r = match_at(ms, j, i + 1)
        if r then return r end
        j = j - 1
    end
    return nil
end

local function min_expand(ms, s, set, i)
    local S = ms.S
    while true do
        local r = match_at(ms, s, i + 1)
        if r then return r end
        if set[S[s]] then
            s = s + 1
        else
            return nil
        end
    end
end

local function start_capture(ms, s, i, what)
    local level = ms.level
    if level >= MAXCAPTURES then perr("too many captures") end
    level = level + 1
    ms.cinit[level], ms.clen[level] = s, what
    ms.level = level
    local r = match_at(ms, s, i)
    if r == nil then ms.level = ms.level - 1 end
    return r
end

local function end_capture(ms, s, i)
    local clen, l = ms.clen, ms.level
    while l > 0 and clen[l] ~= CAP_UNF do l = l - 1 end
    if l == 0 then perr("invalid pattern capture") end
    clen[l] = s - ms.cinit[l]
    local r = match_at(ms, s, i)
    if r == nil then clen[l] = CAP_UNF end
    return r
end

local function match_balance(ms, s, it)
    local S = ms.S
    local open, close = it.open, it.close
    if S[s] ~= open then return nil end
    local n, depth = ms.n, 1
    s = s + 1
    while s <= n do
        local c = S[s]
        if c == close then
            depth = depth - 1
            if depth == 0 then return s + 1 end
        elseif c == open then
            depth = depth + 1
        end
        s = s + 1
    end
    return nil
end

local function match_capture(ms, s, l)
    local len = ms.clen[l + 1]
    if l < 0 or l >= ms.level or len == CAP_UNF then
        perr(format("invalid capture index %%%d", l + 1))
    end
    if len == CAP_POS or ms.n - s + 1 < len then return nil end
    local src, init = ms.src, ms.cinit[l + 1]
    if sub(src, init, init + len - 1) == sub(src, s, s + len - 1) then return s + len end
    return nil
end

function match_at(ms, s, i)
    local depth = ms.depth
    if depth == 0 then perr("pattern too complex") end
    ms.depth = depth - 1
    local prog, S = ms.prog, ms.S
    while true do
        local it = prog[i]
        if it == nil then break end
        local k = it.k
        if k == SINGLE then
            local suf, set = it.suf, it.set
            if not set[S[s]] then
                if suf == STAR or suf == QUEST or suf == MINUS then
                    i = i + 1
                else
                    s = nil
                    break
                end
            elseif suf == NONE then
                s, i = s + 1, i + 1
            elseif suf == STAR then
                s = max_expand(ms, s, set, i)
                break
            elseif suf == PLUS then
                s = max_expand(ms, s + 1, set, i)
                break
            elseif suf == MINUS then
                s = min_expand(ms, s, set, i)
                break
            else -- '?'
                local r = match_at(ms, s + 1, i + 1)
                if r then
                    s = r
                    break
                end
                i = i + 1
            end
        elseif k == OPEN then
            s = start_capture(ms, s, i + 1, CAP_UNF)
            break
        elseif k == POSCAP then
            s = start_capture(ms, s, i + 1, CAP_POS)
            break
        elseif k == CLOSE then
            s = end_capture(ms, s, i + 1)
            break
        elseif k == ENDANCHOR then
            if s ~= ms.n + 1 then s = nil end
            break
        elseif k == BALANCE then
            s = match_balance(ms, s, it)
            if s == nil then break end
            i = i + 1
        elseif k == FRONTIER then
            local set = it.set
            local prev = s == 1 and 0 or S[s - 1]
            if not set[prev] and set[S[s] or 0] then
                i = i + 1
            else
                s = nil
                break
            end
        elseif k == BACKREF then
            s = match_capture(ms, s, it.l)
            if s == nil then break end
            i = i + 1
        else
            perr(it.msg)
        end
    end
    ms.depth = ms.depth + 1
    return s
end

local function reset(ms)
    ms.level, ms.depth = 0, MAXDEPTH
end

-- Capture i (0-based) of a match s..e-1 (get_onecapture).
local function capture(ms, i, s, e)
    if i >= ms.level then
        if i ~= 0 then perr(format("invalid capture index %%%d", i + 1)) end
        return sub(ms.src, s, e - 1)
    end
    local len, init = ms.clen[i + 1], ms.cinit[i + 1]
    if len == CAP_UNF then perr("unfinished capture") end
    if len == CAP_POS then return init end
    return sub(ms.src, init, init + len - 1)
end

-- All captures (push_captures): the whole match when there are none and
-- s is given; nothing for find's s == nil.
local function captures(ms, s, e)
    local nl = ms.level
    if nl == 0 then
        if s then return sub(ms.src, s, e - 1) end
        return
    end
    if nl == 1 then return capture(ms, 0, s, e) end
    if nl == 2 then return capture(ms, 0, s, e), capture(ms, 1, s, e) end
    local out = {}
    for i = 0, nl - 1 do out[i + 1] = capture(ms, i, s, e) end
    return unpack(out, 1, nl)
end

-- ---- the four functions ---------------------------------------------------------------

-- posrelatI: a 1-based start from a possibly negative init.
local function posrelat(pos, len)
    if pos > 0 then return pos end
    if pos == 0 then return 1 end
    if pos < -len then return 1 end
    return len + pos + 1
end

local SPECIALS = "[%^%$%*%+%?%.%(%[%%%-]"
local function no_specials(p)
    return not nfind(p, SPECIALS)
end

local function find_aux(isfind, s, p, init, plain)
    local ls = #s
    init = posrelat(init, ls)
    if init > ls + 1 then return nil end
    if isfind and (plain or no_specials(p)) then return nfind(s, p, init, true) end
    local anchor = byte(p, 1) == CARET
    local ms = new_state(s, program(p, anchor and 2 or 1), init)
    local s1 = init
    repeat
        reset(ms)
        local e = match_at(ms, s1, 1)
        if e then
            if isfind then return s1, e - 1, captures(ms, nil, nil) end
            return captures(ms, s1, e)
        end
        s1 = s1 + 1
    until anchor or s1 > ls + 1
    return nil
end

-- Turn a matcher error into the caller's error (the public functions
-- tail-call this, so level 2 is their caller); anything else (a
-- replacement function's error, the budget's stop) passes unchanged.
local function finish(ok, ...)
    if ok then return ... end
    local e = ...
    if getmetatable(e) == PERR then error(e.msg, 2) end
    error(e, 0)
end

local function lfind(s, p, init, plain)
    return finish(pcall(find_aux, true, s, p, init or 1, plain))
end

local function lmatch(s, p, init)
    return finish(pcall(find_aux, false, s, p, init or 1))
end

local function lgmatch(s, p, init)
    local ls = #s
    local src = posrelat(init or 1, ls)
    if src > ls + 1 then src = ls + 2 end
    local ms = new_state(s, program(p, 1), src)
    local lastmatch = nil
    local function step()
        for pos = src, ls + 1 do
            reset(ms)
            local e = match_at(ms, pos, 1)
            if e and e ~= lastmatch then
                src, lastmatch = e, e
                return captures(ms, pos, e)
            end
        end
        src = ls + 2
        return nil
    end
    return function()
        return finish(pcall(step))
    end
end

-- A replacement string as a list of pieces: text, or a capture number
-- (0: the whole match; 1-9: get_onecapture(n - 1)), or an error message
-- (as a table) raised when the piece is reached.
local function repl_pieces(r)
    local out, i = {}, 1
    while true do
        local j = nfind(r, "%", i, true)
        if not j then
            if i <= #r then out[#out + 1] = sub(r, i) end
            return out
        end
        if j > i then out[#out + 1] = sub(r, i, j - 1) end
        local c = byte(r, j + 1)
        if c == PCT then
            out[#out + 1] = "%"
        elseif c and c >= 48 and c <= 57 then
            out[#out + 1] = c - 48
        else
            out[#out + 1] = { "invalid use of '%' in replacement string" }
            return out
        end
        i = j + 2
    end
end

local function gsub_aux(src, p, repl, max_s)
    local srcl = #src
    local tr = type(repl)
    if max_s == nil then max_s = srcl + 1 end
    local anchor = byte(p, 1) == CARET
    local ms = new_state(src, program(p, anchor and 2 or 1), 1)
    local pieces
    if tr == "number" then repl = tostring(repl); tr = "string" end
    if tr == "string" then pieces = repl_pieces(repl) end
    local out, no = {}, 0
    local pos, keep, lastmatch = 1, 1, nil -- keep: start of text not yet copied
    local n, changed = 0, false
    while n < max_s do
        reset(ms)
        local e = match_at(ms, pos, 1)
        if e and e ~= lastmatch then
            n = n + 1
            if keep < pos then
                no = no + 1
                out[no] = sub(src, keep, pos - 1)
            end
            local v
            if pieces then
                for k = 1, #pieces do
                    local piece = pieces[k]
                    local t = type(piece)
                    if t == "number" then
                        if piece == 0 then
                            piece = sub(src, pos, e - 1)
                        else
                            piece = capture(ms, piece - 1, pos, e)
                            if type(piece) == "number" then piece = tostring(piece) end
                        end
                    elseif t == "table" then
                        perr(piece[1])
                    end
                    no = no + 1
                    out[no] = piece
                end
                changed = true
            else
                if tr == "function" then
                    v = repl(captures(ms, pos, e))
                else
                    v = repl[capture(ms, 0, pos, e)]
                end
                if not v then
                    v = sub(src, pos, e - 1)
                else
                    local tv = type(v)
                    if tv ~= "string" and tv ~= "number" then
                        perr("invalid replacement value (a " .. type(v) .. ")")
                    end
                    if tv == "number" then v = tostring(v) end
                    changed = true
                end
                no = no + 1
                out[no] = v
            end
            pos, keep, lastmatch = e, e, e
        elseif pos <= srcl then
            pos = pos + 1
        else
            break
        end
        if anchor then break end
    end
    if not changed then return src, n end
    if keep <= srcl then
        no = no + 1
        out[no] = sub(src, keep)
    end
    return concat(out, "", 1, no), n
end

local function lgsub(s, p, repl, max_s)
    return finish(pcall(gsub_aux, s, p, repl, max_s))
end

lp.find, lp.match, lp.gmatch, lp.gsub = lfind, lmatch, lgmatch, lgsub

-- ---- the guard: native when provably cheap ---------------------------------------

-- bindings/lpattern.c's guard calls these when the native function would
-- cost too much; they are called from C, so the caller's frame is one level
-- further up.
local function finish3(ok, ...)
    if ok then return ... end
    local e = ...
    if getmetatable(e) == PERR then error(e.msg, 3) end
    error(e, 0)
end

local slow = {
    find = function(s, p, init, plain)
        return finish3(pcall(find_aux, true, s, p, init or 1, plain))
    end,
    match = function(s, p, init)
        return finish3(pcall(find_aux, false, s, p, init or 1))
    end,
    gmatch = lgmatch,
    gsub = function(s, p, repl, max_s)
        return finish3(pcall(gsub_aux, s, p, repl, max_s))
    end,
}

local pattern_guard = M and M.c and M.c.pattern_guard
if pattern_guard then
    lp.guarded = {
        find = pattern_guard("find", nfind, slow.find),
        match = pattern_guard("match", nmatch, slow.match),
        gmatch = pattern_guard("gmatch", ngmatch, slow.gmatch),
        gsub = pattern_guard("gsub", ngsub, slow.gsub),
    }
end

return lp
