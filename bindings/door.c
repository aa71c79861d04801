/* door.c - the one protected door from C into Lua.
 *
 * ar_door() pushes a message handler, then pcalls a C "door function" that
 * does one operation's whole Lua work (see engine_int.h).  The handler turns
 * any error value into a one-line string and, when the error was raised
 * outside the rule's own code (in a prelude helper, a metamethod, the host),
 * appends the innermost rule frame: "... (at rules/x.lua:3)".  Rule chunks
 * are the ones named "@<file>"; the engine's own modules are "=rules/...".
 * Budgeted calls are bounded by budget.c; memory by lalloc.c, and a
 * budgeted call in which an allocation failed is an error even if the rule
 * caught it.  After a
 * budget stop or a memory error the state is collected, so the next call
 * starts clean.
 */
#include <stdio.h>
#include <string.h>

#include <lauxlib.h>

#include "../core/err.h"
#include "engine_int.h"

ar_engine *ar_engine_of(lua_State *L)
{
    return *(ar_engine **)lua_getextraspace(L);
}

static int door_msgh(lua_State *L)
{
    const char *msg;
    lua_Debug ar;
    int level;

    if (lua_type(L, 1) == LUA_TSTRING || lua_type(L, 1) == LUA_TNUMBER)
        msg = lua_tostring(L, 1);
    else
        msg = lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));

    for (level = 1; lua_getstack(L, level, &ar); level++) {
        char at[160];
        if (!lua_getinfo(L, "Sl", &ar) || ar.source[0] != '@' || ar.currentline <= 0)
            continue;
        snprintf(at, sizeof at, "%s:%d", ar.short_src, ar.currentline);
        if (!strstr(msg, at))
            lua_pushfstring(L, "%s (at %s)", msg, at);
        else
            lua_pushstring(L, msg);
        return 1;
    }
    lua_pushstring(L, msg);
    return 1;
}

int ar_door(ar_engine *e, lua_CFunction fn, void *ctx, int budgeted, char *err, size_t errlen)
{
    lua_State *L = e->L;
    int base = lua_gettop(L);
    int status, tripped = AR_BUDGET_OK, rc = AR_OK;
    size_t failed = e->mem.failed;

    if (!lua_checkstack(L, 8))
        return ar_seterr(err, errlen, AR_ENOMEM, "Lua stack exhausted");
    lua_pushcfunction(L, door_msgh);
    lua_pushcfunction(L, fn);
    lua_pushlightuserdata(L, ctx);
    if (budgeted)
        ar_budget_arm(L, &e->budget);
    status = lua_pcall(L, 1, 0, base + 1);
    if (budgeted)
        tripped = ar_budget_disarm(L, &e->budget);

    if (tripped != AR_BUDGET_OK) {
        /* Whatever the rule did with the error, the stop is what happened. */
        char msg[256];
        ar_budget_message(&e->budget, tripped, msg, sizeof msg);
        rc = ar_seterr(err, errlen, AR_ERULE, "%s", msg);
    } else if (status == LUA_ERRMEM || (budgeted && e->mem.failed != failed)) {
        /* Like the budget, running out of memory is the rule's error even if
         * it caught "not enough memory" with its own pcall. */
        status = LUA_ERRMEM;
        rc = ar_seterr(err, errlen, AR_ENOMEM, "not enough memory (the engine's limit is %zu MB)",
                       e->mem.cap / (1024 * 1024));
    } else if (status != LUA_OK) {
        const char *m = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : "unknown error";
        rc = ar_seterr(err, errlen, AR_ERULE, "%s", m);
    }
    lua_settop(L, base);
    if (tripped != AR_BUDGET_OK || status == LUA_ERRMEM)
        lua_gc(L, LUA_GCCOLLECT);
    return rc;
}

void ar_push_host(lua_State *L, const char *name)
{
    ar_engine *e = ar_engine_of(L);
    lua_rawgeti(L, LUA_REGISTRYINDEX, e->host_ref);
    lua_getfield(L, -1, name);
    lua_remove(L, -2);
    if (lua_type(L, -1) != LUA_TFUNCTION)
        luaL_error(L, "rules/host.lua has no function '%s'", name);
}

void ar_copy_lstr(lua_State *L, int idx, char *out, size_t outlen, const char *what, int optional)
{
    size_t len;
    const char *s;

    if (optional && lua_isnoneornil(L, idx)) {
        out[0] = '\0';
        return;
    }
    if (lua_type(L, idx) != LUA_TSTRING)
        luaL_error(L, "%s: expected a string, got %s", what, luaL_typename(L, idx));
    s = lua_tolstring(L, idx, &len);
    if (len >= outlen || memchr(s, '\0', len))
        luaL_error(L, "%s: too long or contains NUL (%d bytes, at most %d)", what, (int)len,
                   (int)outlen - 1);
    memcpy(out, s, len);
    out[len] = '\0';
}
