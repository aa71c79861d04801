/* lpattern.c - the guard in front of Lua's pattern functions for rules.
 *
 * Lua's pattern matcher runs in C, where the budget's count hook (budget.c)
 * never fires: ("a"):rep(1e4):find(".-.-.-.-x") would run for hours.
 * rules/lpattern.lua holds a Lua implementation of the same matching, which
 * the hook does stop; this file decides, per call, which one runs.
 *
 * M.c.pattern_guard(kind, native, slow) -> the function rules get as
 * string.<kind> (kind: "find", "match", "gmatch" or "gsub"; native: the
 * string library's function; slow: the Lua implementation).  Called like
 * the native function, it bounds the native matcher's work for these
 * arguments (weight() below: from the pattern's backtracking items, its
 * length, its %b and back-references, and the subject's length).  Within
 * AR_PAT_CHEAP steps (~6 ms) it calls the native C function on its own
 * stack, so results, argument errors and their wording are the native
 * ones; beyond, it calls slow.  A native call whose bound passes
 * AR_PAT_FREE is timed and its time charged to the running call's budget
 * (the bound itself is far above what ordinary patterns cost).  A plain
 * find (4th argument, or a pattern without special characters) is done
 * here with memmem, linear in subject and needle (the string library's
 * search is not), in windows between which the budget is charged.
 *
 * Charging: once the call is over its budget or past its deadline, the
 * count hook is set to fire at the next instruction, which stops the call
 * with the usual message.  Without a hook (host code outside a rule call)
 * nothing is counted.
 */
#include <string.h>
#include <time.h>

#include <lauxlib.h>

#include "engine_int.h"

/* Steps a node of the matcher's search costs beyond its set tests. */
#define AR_PAT_NODE 8.0
/* A native call may cost this many steps (~6 ms here: a deadline is never
 * overrun by more; the bound is loose, ordinary patterns on tag values
 * cost far less and must stay native: a DICOM DT parsed with
 * "^(%d+)(%.?%d*)(.*)$" has a bound of 1e6) ... */
#define AR_PAT_CHEAP 2e6
/* ... and is neither timed nor charged below this many (~0.3 ms at worst,
 * far less for ordinary patterns on tag values; a loop of such calls is
 * still stopped by the deadline, checked at least every 1000 instructions). */
#define AR_PAT_FREE 1e5
/* gmatch's iterator runs later, untimed: its bound is charged, in matcher
 * steps per instruction. */
#define AR_PAT_UNITS 8
/* Timed native work: nanoseconds per charged instruction (about what the
 * VM takes for one). */
#define AR_PAT_NS_PER_INSN 4
/* Plain search: bytes per window. */
#define AR_PAT_WINDOW ((size_t)1 << 20)

enum { K_FIND, K_MATCH, K_GMATCH, K_GSUB };

static double now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

/* Count n instructions, the time being now (ns); returns 1 when the call
 * must stop (the hook then fires at the next instruction). */
static int charge_at(lua_State *L, lua_Integer n, double now)
{
    ar_budget *b = &ar_engine_of(L)->budget;
    lua_Hook hook = lua_gethook(L);

    if (hook == NULL)
        return 0; /* no budget: host code */
    if (lua_gethookcount(L) <= 1)
        return 1; /* already stopping */
    if (n > 0)
        b->used += n < b->limit ? n : b->limit;
    if (b->used >= b->limit || (b->interrupt && *b->interrupt) ||
        now >= (double)b->deadline.tv_sec * 1e9 + (double)b->deadline.tv_nsec) {
        lua_sethook(L, hook, lua_gethookmask(L), 1);
        return 1;
    }
    return 0;
}

/* Charge the time since t0 (ns). */
static int charge_since(lua_State *L, double t0)
{
    double now = now_ns();
    return charge_at(L, (lua_Integer)((now - t0) / AR_PAT_NS_PER_INSN), now);
}

/* The index after the single-character class at p[i] (the matcher's
 * classEnd), or 0 when it is malformed (matching stops there). */
static size_t class_end(const char *p, size_t n, size_t i)
{
    char c = p[i++];

    if (c == '%')
        return i < n ? i + 1 : 0;
    if (c == '[') {
        if (i < n && p[i] == '^')
            i++;
        do {
            if (i >= n)
                return 0;
            c = p[i++];
            if (c == '%' && i < n)
                i++;
        } while (i >= n || p[i] != ']');
        return i + 1;
    }
    return i;
}

/* The pattern's shape, read from p[i]: q backtracking items (* + - ?), nb
 * items costing O(n) per visit (%b, back-references), and trail = 1 when
 * the last backtracking item is followed by nothing but captures opening
 * or closing.  Its first try then always completes the match (the longest
 * run for * and +, the empty one for -, the character for ?), so it does
 * not branch: it is not counted in q, and its scan is paid once per match. */
static void shape(const char *p, size_t n, size_t i, int *q, int *nb, int *trail)
{
    *q = *nb = *trail = 0;
    while (i < n) {
        char c = p[i], e = i + 1 < n ? p[i + 1] : '\0';
        size_t ep;

        if (c == '(') {
            i += e == ')' ? 2 : 1;
            continue;
        }
        if (c == ')') {
            i++;
            continue;
        }
        *trail = 0;
        if (c == '%' && e == 'b') {
            (*nb)++;
            i += 4;
        } else if (c == '%' && e == 'f') {
            if (i + 2 >= n || p[i + 2] != '[' || !(ep = class_end(p, n, i + 2)))
                break;
            i = ep;
        } else if (c == '%' && e >= '0' && e <= '9') {
            (*nb)++;
            i += 2;
        } else {
            if (!(ep = class_end(p, n, i)))
                break;
            if (ep < n && (p[ep] == '*' || p[ep] == '+' || p[ep] == '-' || p[ep] == '?')) {
                (*q)++;
                *trail = 1;
                ep++;
            }
            i = ep;
        }
    }
    if (*trail)
        (*q)--;
}

static int no_specials(const char *p, size_t n)
{
    size_t i;
    for (i = 0; i < n; i++)
        if (p[i] != '\0' && strchr("^$*+?.([%-", p[i]))
            return 0;
    return 1;
}

/* An upper bound of the native matcher's steps on n subject bytes.  The
 * backtracking items and the start position (every_start = 1 when each
 * is tried) share at most n bytes between them, so the search tree has at
 * most C(n + k + 1, k) nodes, k = q + every_start; each node does at most
 * len + nb * n work (a set test costs up to its length) plus the call and,
 * per start, gsub's and gmatch's bookkeeping (AR_PAT_NODE).  A trailing
 * item (shape()) tests each byte at most once more: successive matches of
 * gsub and gmatch start where the previous one ended. */
static double weight(double n, int q, int nb, int trail, size_t len, int every_start)
{
    double w = (double)len + AR_PAT_NODE + nb * n;
    int k = q + every_start, j;

    for (j = 1; j <= k && w <= 1e18; j++)
        w = w * (n + 1 + j) / j;
    return w + trail * (n + 1) * ((double)len + 1.0);
}

/* posrelatI: the 1-based start of init on a subject of len bytes. */
static lua_Integer start_of(lua_Integer init, size_t len)
{
    if (init > 0)
        return init;
    if (init == 0 || init < -(lua_Integer)len)
        return 1;
    return (lua_Integer)len + init + 1;
}

/* find(s, p, start, true) with memmem: linear in the subject and the
 * needle.  A long subject is searched in windows, charged by their time;
 * once the call must stop, the search ends (the hook raises before the
 * result is seen). */
static int plain_find(lua_State *L, const char *s, size_t ls, const char *p, size_t lp,
                      lua_Integer start)
{
    size_t at = (size_t)start - 1;
    size_t win = lp > AR_PAT_WINDOW ? lp : AR_PAT_WINDOW;

    if (lp == 0) {
        lua_pushinteger(L, start);
        lua_pushinteger(L, start - 1);
        return 2;
    }
    while (lp <= ls - at) {
        size_t len = ls - at;
        const char *hit;
        double t0 = 0;
        int timed = (double)len + (double)lp > AR_PAT_FREE;

        if (len > win + lp - 1)
            len = win + lp - 1;
        if (timed)
            t0 = now_ns();
        hit = memmem(s + at, len, p, lp);
        if (hit) {
            if (timed)
                charge_since(L, t0);
            lua_pushinteger(L, (lua_Integer)(hit - s) + 1);
            lua_pushinteger(L, (lua_Integer)(hit - s) + (lua_Integer)lp);
            return 2;
        }
        if (timed && charge_since(L, t0))
            break;
        at += win;
        if (at > ls)
            break;
    }
    lua_pushnil(L);
    return 1;
}

static int guard(lua_State *L)
{
    int kind = (int)lua_tointeger(L, lua_upvalueindex(3));
    lua_CFunction native = lua_tocfunction(L, lua_upvalueindex(1));
    size_t ls, lp;
    const char *s, *p;
    lua_Integer start = 1;
    double m, w, t0;
    int nargs, anchored, q, nb, trail, nres;

    if (!lua_isstring(L, 1) || !lua_isstring(L, 2))
        return native(L); /* its argument error */
    s = luaL_checklstring(L, 1, &ls);
    p = luaL_checklstring(L, 2, &lp);
    if (kind == K_GSUB) {
        int tr = lua_type(L, 3);
        if (tr != LUA_TSTRING && tr != LUA_TNUMBER && tr != LUA_TTABLE && tr != LUA_TFUNCTION)
            return native(L);
        nargs = 4;
        if (!lua_isnoneornil(L, 4)) {
            lua_Integer max = luaL_checkinteger(L, 4);
            lua_pushinteger(L, max);
            lua_replace(L, 4);
        }
        m = (double)ls;
    } else {
        start = start_of(luaL_optinteger(L, 3, 1), ls);
        nargs = kind == K_FIND ? 4 : 3;
        if (!lua_isnoneornil(L, 3)) {
            lua_pushinteger(L, start);
            lua_replace(L, 3);
        }
        if (start > (lua_Integer)ls + 1)
            return native(L); /* nothing to search */
        m = (double)((lua_Integer)ls - start + 1);
        if (kind == K_FIND && (lua_toboolean(L, 4) || no_specials(p, lp)))
            return plain_find(L, s, ls, p, lp, start);
    }
    anchored = kind != K_GMATCH && lp > 0 && p[0] == '^';
    shape(p, lp, anchored ? 1 : 0, &q, &nb, &trail);
    w = weight(m, q, nb, trail, lp, anchored ? 0 : 1);
    if (w <= AR_PAT_FREE)
        return native(L);
    if (w <= AR_PAT_CHEAP) {
        if (kind == K_GMATCH) {
            charge_at(L, (lua_Integer)(w / AR_PAT_UNITS), now_ns());
            return native(L);
        }
        /* (gsub's replacement function is timed too, though the hook
         * counts its instructions: charged at most twice) */
        t0 = now_ns();
        nres = native(L);
        charge_since(L, t0);
        return nres;
    }
    /* Too costly for C: the Lua implementation, under the count hook. */
    lua_settop(L, nargs);
    lua_pushvalue(L, lua_upvalueindex(2));
    lua_insert(L, 1);
    lua_call(L, nargs, LUA_MULTRET);
    return lua_gettop(L);
}

static int pattern_guard(lua_State *L)
{
    static const char *const kinds[] = {"find", "match", "gmatch", "gsub", NULL};
    int kind = luaL_checkoption(L, 1, NULL, kinds);

    luaL_argcheck(L, lua_tocfunction(L, 2) != NULL, 2, "the native string function expected");
    luaL_checktype(L, 3, LUA_TFUNCTION);
    lua_settop(L, 3);
    lua_pushinteger(L, kind);
    lua_remove(L, 1); /* stack: native, slow, kind */
    lua_pushcclosure(L, guard, 3);
    return 1;
}

void ar_lpattern_register(lua_State *L, int t)
{
    t = lua_absindex(L, t);
    lua_pushcfunction(L, pattern_guard);
    lua_setfield(L, t, "pattern_guard");
}
