/* lua_orthanc.c - the REPL's window on Orthanc, as Lua functions.
 *
 * Only what the REPL's built-ins need, each a fixed request (never a path
 * the caller chooses):
 *   find(json_body)  -> body of POST /tools/find
 *   lookup(text)     -> body of POST /tools/lookup
 *   study(id)        -> the three answers /studies/<id>, .../series,
 *                       .../instances (the id is checked first)
 * Each returns nil, message on failure.  JSON is decoded on the Lua side by
 * lua-cjson.  rules/repl.lua keeps this table in its own module table; it is
 * never put in a rule's environment.
 */
#include <lauxlib.h>

#include "../core/err.h"
#include "../core/orthanc.h"
#include "engine_int.h"

static ar_http *http_of(lua_State *L)
{
    return lua_touserdata(L, lua_upvalueindex(1));
}

static int answer(lua_State *L, int rc, ar_buf *b, const char *err)
{
    if (rc) {
        ar_buf_free(b);
        lua_pushnil(L);
        lua_pushstring(L, err);
        return 2;
    }
    lua_pushlstring(L, b->data ? b->data : "", b->len);
    ar_buf_free(b);
    return 1;
}

static int post(lua_State *L, const char *path, const char *ctype)
{
    size_t len;
    const char *body = luaL_checklstring(L, 1, &len);
    char err[1024] = "";
    ar_buf b = {0};
    int rc = ar_http_post(http_of(L), path, body, len, ctype, &b, err, sizeof err);
    return answer(L, rc, &b, err);
}

static int l_find(lua_State *L)
{
    return post(L, "/tools/find", NULL);
}

static int l_lookup(lua_State *L)
{
    return post(L, "/tools/lookup", "text/plain");
}

static int l_study(lua_State *L)
{
    const char *id = luaL_checkstring(L, 1);
    char err[1024] = "";
    ar_study_answers a;
    int rc = ar_orthanc_fetch_study(http_of(L), id, &a, err, sizeof err);
    if (rc) {
        lua_pushnil(L);
        if (rc == AR_ENOTFOUND)
            lua_pushfstring(L, "no study %s in Orthanc", id);
        else
            lua_pushstring(L, err);
        return 2;
    }
    lua_pushlstring(L, a.study.data ? a.study.data : "", a.study.len);
    lua_pushlstring(L, a.series.data ? a.series.data : "", a.series.len);
    lua_pushlstring(L, a.instances.data ? a.instances.data : "", a.instances.len);
    ar_study_answers_free(&a);
    return 3;
}

void ar_lua_orthanc_push(lua_State *L, struct ar_http *h)
{
    static const luaL_Reg fns[] = {
        {"find", l_find}, {"lookup", l_lookup}, {"study", l_study}, {NULL, NULL},
    };
    lua_newtable(L);
    lua_pushlightuserdata(L, h);
    luaL_setfuncs(L, fns, 1);
}
