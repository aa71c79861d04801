/* sandbox.c - the C pieces of the rule sandbox (rules/sandbox.lua does the rest).
 *
 * xpcall_guard(handler): wraps a rule's xpcall message handler.  When the
 * budget hook raises its stop, Lua calls the handler from inside the hook,
 * where hooks are off: a looping handler would never be stopped.  The guard
 * therefore skips the rule's handler once the call is over budget (the stop
 * message goes through untouched); otherwise it calls the handler normally,
 * under the budget like any rule code.
 */
#include <lauxlib.h>

#include "engine_int.h"

static int guarded_handler(lua_State *L)
{
    ar_engine *e = ar_engine_of(L);

    lua_settop(L, 1);
    if (e->budget.tripped != AR_BUDGET_OK)
        return 1;
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_insert(L, 1);
    lua_call(L, 1, 1);
    return 1;
}

static int xpcall_guard(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TFUNCTION);
    lua_settop(L, 1);
    lua_pushcclosure(L, guarded_handler, 1);
    return 1;
}

void ar_sandbox_register(lua_State *L, int t)
{
    t = lua_absindex(L, t);
    lua_pushcfunction(L, xpcall_guard);
    lua_setfield(L, t, "xpcall_guard");
}
