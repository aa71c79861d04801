/* decode.c - Orthanc's small answers (/changes, /series/<id>) into C structs.
 *
 * host.lua decodes with lua-cjson under pcall and checks every type; this
 * file copies the checked values into caller memory, refusing values that
 * don't fit.  A body that isn't JSON at all (garbled in transit) is AR_ENET,
 * worth retrying; wrong types, non-integer numbers and over-long strings are
 * AR_ERR (the message says which field).  Never a crash.
 */
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>

#include "../core/err.h"
#include "engine_int.h"

typedef struct changes_ctx {
    const char *body;
    size_t len;
    char garbled[512];   /* set when the body is not JSON */
    ar_change *out;
    size_t n;
    int64_t last;
    int done;
} changes_ctx;

static int changes_door(lua_State *L)
{
    changes_ctx *c = lua_touserdata(L, 1);
    lua_Integer i, n;

    ar_push_host(L, "decode_changes");
    lua_pushlstring(L, c->body, c->len);
    lua_call(L, 1, 3); /* stack: ctx, list, last, done */
    if (lua_isnil(L, 2)) {
        ar_seterr(c->garbled, sizeof c->garbled, AR_ENET, "%s",
                  lua_type(L, 3) == LUA_TSTRING ? lua_tostring(L, 3) : "/changes: garbled answer");
        return 0;
    }
    luaL_checktype(L, 2, LUA_TTABLE);
    c->last = (int64_t)luaL_checkinteger(L, 3);
    c->done = lua_toboolean(L, 4);
    n = (lua_Integer)lua_rawlen(L, 2);
    if (n <= 0)
        return 0;
    c->out = calloc((size_t)n, sizeof *c->out);
    if (!c->out)
        return luaL_error(L, "out of memory for %d changes", (int)n);
    for (i = 1; i <= n; i++) {
        ar_change *ch = &c->out[i - 1];
        lua_rawgeti(L, 2, i); /* stack: ..., change */
        lua_getfield(L, -1, "seq");
        ch->seq = (int64_t)luaL_checkinteger(L, -1);
        lua_getfield(L, -2, "change_type");
        ar_copy_lstr(L, -1, ch->change_type, sizeof ch->change_type, "ChangeType", 0);
        lua_getfield(L, -3, "resource_type");
        ar_copy_lstr(L, -1, ch->resource_type, sizeof ch->resource_type, "ResourceType", 0);
        lua_getfield(L, -4, "id");
        ar_copy_lstr(L, -1, ch->id, sizeof ch->id, "ID", 0);
        lua_pop(L, 5);
        c->n = (size_t)i;
    }
    return 0;
}

int ar_engine_decode_changes(ar_engine *e, const char *body, size_t len, ar_change **out,
                             size_t *n, int64_t *last, int *done, char *err, size_t errlen)
{
    changes_ctx c;
    int rc;

    memset(&c, 0, sizeof c);
    c.body = body ? body : "";
    c.len = body ? len : 0;
    *out = NULL;
    *n = 0;
    rc = ar_door(e, changes_door, &c, 0, err, errlen);
    if (rc) {
        free(c.out);
        return rc == AR_ENOMEM ? rc : AR_ERR;
    }
    if (c.garbled[0])
        return ar_seterr(err, errlen, AR_ENET, "%s", c.garbled);
    *out = c.out;
    *n = c.n;
    if (last)
        *last = c.last;
    if (done)
        *done = c.done;
    return AR_OK;
}

typedef struct parent_ctx {
    const char *body;
    size_t len;
    char garbled[512];
    char *id;
    size_t idlen;
} parent_ctx;

static int parent_door(lua_State *L)
{
    parent_ctx *c = lua_touserdata(L, 1);

    ar_push_host(L, "decode_parent_study");
    lua_pushlstring(L, c->body, c->len);
    lua_call(L, 1, 2);
    if (lua_isnil(L, 2)) {
        ar_seterr(c->garbled, sizeof c->garbled, AR_ENET, "%s",
                  lua_type(L, 3) == LUA_TSTRING ? lua_tostring(L, 3) : "/series: garbled answer");
        return 0;
    }
    ar_copy_lstr(L, 2, c->id, c->idlen, "ParentStudy", 0);
    return 0;
}

int ar_engine_decode_parent_study(ar_engine *e, const char *body, size_t len,
                                  char *study_id, size_t idlen, char *err, size_t errlen)
{
    parent_ctx c;
    int rc;

    if (!study_id || idlen == 0)
        return ar_seterr(err, errlen, AR_ERR, "no room for the study id");
    memset(&c, 0, sizeof c);
    c.body = body ? body : "";
    c.len = body ? len : 0;
    c.id = study_id;
    c.idlen = idlen;
    study_id[0] = '\0';
    rc = ar_door(e, parent_door, &c, 0, err, errlen);
    if (rc) {
        study_id[0] = '\0';
        return rc == AR_ENOMEM ? rc : AR_ERR;
    }
    if (c.garbled[0]) {
        study_id[0] = '\0';
        return ar_seterr(err, errlen, AR_ENET, "%s", c.garbled);
    }
    return AR_OK;
}
