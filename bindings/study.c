/* study.c - study snapshots as the engine holds them, and as rules see them.
 *
 * The snapshot itself is core's compact value (core/snapshot.c: decoded by
 * a streaming parser, ids and tags in C memory).  Here it gets:
 *   - an ar_study: the C side's handle (the snapshot + the host's key of
 *     its Lua view), which evaluate, plan and on_exported take;
 *   - a Lua userdata holding a reference to it, from which rules/study.lua
 *     builds the read-only study object rules see: study and series tables
 *     are made at once, each instance only when a rule (or the layout)
 *     reads it, so a 100,000-instance study costs its compact form, not a
 *     Lua table per instance;
 *   - the C helpers the host reads it with (M.c.snap_*), and the REPL's
 *     M.c.snapshot_answers / snapshot_fixture, which go through the same
 *     decoder.
 * The snapshot's bytes count against the engine's memory cap
 * (rule_memory_mb) for as long as the Lua view holds it: a study too big
 * for the cap is refused while it is being decoded (AR_ENOMEM, "not enough
 * memory for the study ...").  An answer that is not JSON gives AR_ENET
 * (garbled in transit: retry); JSON of the wrong shape gives AR_ERR.
 */
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>

#include "../core/err.h"
#include "../core/snapshot.h"
#include "engine_int.h"

#define SNAP_MT "autorthanc.snapshot"

struct ar_study {
    ar_engine *e;
    long long handle;        /* the host's key of the view (rules/host.lua) */
    ar_snapshot *snap;
};

typedef struct snap_ud {
    ar_snapshot *snap;
    ar_engine *e;
} snap_ud;

/* ---- the userdata -------------------------------------------------------- */

static int snap_gc(lua_State *L)
{
    snap_ud *u = luaL_checkudata(L, 1, SNAP_MT);
    if (u->snap) {
        size_t b = u->snap->bytes;
        u->e->mem.used = u->e->mem.used > b ? u->e->mem.used - b : 0;
        ar_snapshot_free(u->snap);
        u->snap = NULL;
    }
    return 0;
}

/* Push an empty snapshot userdata (it raises when out of memory, before
 * anything is held). */
static snap_ud *new_ud(lua_State *L)
{
    snap_ud *u = lua_newuserdatauv(L, sizeof *u, 0);
    u->snap = NULL;
    u->e = ar_engine_of(L);
    if (luaL_newmetatable(L, SNAP_MT)) {
        lua_pushcfunction(L, snap_gc);
        lua_setfield(L, -2, "__gc");
        lua_pushliteral(L, "a study snapshot");
        lua_setfield(L, -2, "__metatable");
    }
    lua_setmetatable(L, -2);
    return u;
}

/* u holds a new reference to s from now on, charged to the cap. */
static void attach(snap_ud *u, ar_snapshot *s)
{
    u->snap = ar_snapshot_ref(s);
    u->e->mem.used += s->bytes;
}

static const ar_snapshot *check_snap(lua_State *L, int idx)
{
    snap_ud *u = luaL_checkudata(L, idx, SNAP_MT);
    if (!u->snap)
        luaL_error(L, "the study snapshot was dropped");
    return u->snap;
}

static void push_tags(lua_State *L, const ar_snapshot *s, ar_snap_tags tags)
{
    lua_createtable(L, 0, (int)tags.n);
    for (uint32_t i = 0; i < tags.n; i++) {
        const ar_snap_tag *t = &s->tag[tags.first + i];
        lua_pushlstring(L, t->value, t->len);
        lua_setfield(L, -2, s->names[t->name]);
    }
}

/* snap_study(ud) -> id, last_update|nil, is_stable, tags, patient, nseries, listed */
static int c_snap_study(lua_State *L)
{
    const ar_snapshot *s = check_snap(L, 1);
    lua_pushstring(L, s->id);
    if (s->last_update)
        lua_pushstring(L, s->last_update);
    else
        lua_pushnil(L);
    lua_pushboolean(L, s->is_stable);
    push_tags(L, s, s->tags);
    push_tags(L, s, s->patient);
    lua_pushinteger(L, (lua_Integer)s->nseries);
    lua_pushinteger(L, (lua_Integer)s->instances_listed);
    return 7;
}

static const ar_snap_series *check_series(lua_State *L, const ar_snapshot *s, int idx)
{
    lua_Integer k = luaL_checkinteger(L, idx);
    if (k < 1 || (size_t)k > s->nseries)
        luaL_error(L, "no series #%d in the snapshot", (int)k);
    return &s->series[k - 1];
}

/* snap_series(ud, k) -> id, tags, instance count */
static int c_snap_series(lua_State *L)
{
    const ar_snapshot *s = check_snap(L, 1);
    const ar_snap_series *se = check_series(L, s, 2);
    lua_pushstring(L, se->id);
    push_tags(L, s, se->tags);
    lua_pushinteger(L, (lua_Integer)se->n);
    return 3;
}

/* snap_instance(ud, k, j) -> id, tags, file_size|nil */
static int c_snap_instance(lua_State *L)
{
    const ar_snapshot *s = check_snap(L, 1);
    const ar_snap_series *se = check_series(L, s, 2);
    lua_Integer j = luaL_checkinteger(L, 3);
    const ar_snap_instance *in;
    if (j < 1 || (size_t)j > se->n)
        return luaL_error(L, "no instance #%d in series %s", (int)j, se->id);
    in = &s->instances[se->first + (size_t)j - 1];
    lua_pushstring(L, in->id);
    push_tags(L, s, in->tags);
    if (in->file_size >= 0)
        lua_pushinteger(L, (lua_Integer)in->file_size);
    else
        lua_pushnil(L);
    return 3;
}

/* Room left under the cap for a snapshot being decoded (0: no cap). */
static size_t room(const ar_engine *e)
{
    if (!e->mem.cap)
        return 0;
    return e->mem.used < e->mem.cap ? e->mem.cap - e->mem.used : 1;
}

static int too_big(const ar_engine *e, const char *why, char *err, size_t errlen)
{
    char tmp[512];
    snprintf(tmp, sizeof tmp, "%s", why);
    return ar_seterr(err, errlen, AR_ENOMEM,
                     "not enough memory for the study (the engine's limit is %zu MB): %s",
                     e->mem.cap / (1024 * 1024), tmp);
}

/* For the REPL: the same decoder, errors raised as messages; the
 * userdata u is at the top of the stack. */
static int push_built(lua_State *L, snap_ud *u, int rc, ar_snapshot *s, const char *err)
{
    if (rc) {
        char msg[1024];
        if (rc == AR_ENOMEM)
            too_big(ar_engine_of(L), err, msg, sizeof msg);
        else
            snprintf(msg, sizeof msg, "%s", err);
        return luaL_error(L, "%s", msg);
    }
    attach(u, s);
    ar_snapshot_free(s);
    return 1;
}

/* snapshot_answers(study, series, instances) -> ud */
static int c_snapshot_answers(lua_State *L)
{
    size_t l1, l2, l3;
    const char *a = luaL_checklstring(L, 1, &l1);
    const char *b = luaL_checklstring(L, 2, &l2);
    const char *c = luaL_checklstring(L, 3, &l3);
    ar_snapshot *s = NULL;
    char err[512];
    snap_ud *u = new_ud(L);
    int rc = ar_snapshot_from_answers(a, l1, b, l2, c, l3, room(ar_engine_of(L)), &s, err,
                                      sizeof err);
    return push_built(L, u, rc, s, err);
}

/* snapshot_fixture(text, name) -> ud */
static int c_snapshot_fixture(lua_State *L)
{
    size_t len;
    const char *text = luaL_checklstring(L, 1, &len);
    const char *name = luaL_optstring(L, 2, "fixture");
    ar_snapshot *s = NULL;
    char err[512];
    snap_ud *u = new_ud(L);
    int rc = ar_snapshot_from_fixture(text, len, name, room(ar_engine_of(L)), &s, err, sizeof err);
    return push_built(L, u, rc, s, err);
}

void ar_study_register(lua_State *L, int t)
{
    static const luaL_Reg fns[] = {
        {"snap_study", c_snap_study},
        {"snap_series", c_snap_series},
        {"snap_instance", c_snap_instance},
        {"snapshot_answers", c_snapshot_answers},
        {"snapshot_fixture", c_snapshot_fixture},
        {NULL, NULL},
    };
    t = lua_absindex(L, t);
    lua_pushvalue(L, t);
    luaL_setfuncs(L, fns, 0);
    lua_pop(L, 1);
}

/* ---- ar_study ------------------------------------------------------------ */

typedef struct view_ctx {
    ar_snapshot *snap;
    lua_Integer handle;
} view_ctx;

static int view_door(lua_State *L)
{
    view_ctx *c = lua_touserdata(L, 1);
    ar_push_host(L, "set_study");
    attach(new_ud(L), c->snap);
    lua_call(L, 1, 1);
    c->handle = luaL_checkinteger(L, -1);
    return 0;
}

static int drop_door(lua_State *L)
{
    lua_Integer *h = lua_touserdata(L, 1);
    ar_push_host(L, "drop_study");
    lua_pushinteger(L, *h);
    lua_call(L, 1, 0);
    return 0;
}

/* Give the engine a view of snap (taking the caller's reference). */
static int adopt(ar_engine *e, int rc, ar_snapshot *snap, const char *why, ar_study **out,
                 char *err, size_t errlen)
{
    view_ctx c = {snap, 0};
    ar_study *st = NULL;
    size_t failed = e->mem.failed;

    *out = NULL;
    if (rc) {
        if (rc == AR_ENOMEM)
            return too_big(e, why, err, errlen);
        return ar_seterr(err, errlen, rc, "%s", why);
    }
    st = calloc(1, sizeof *st);
    if (!st) {
        ar_snapshot_free(snap);
        return ar_seterr(err, errlen, AR_ENOMEM, "out of memory for a study snapshot");
    }
    rc = ar_door(e, view_door, &c, 0, err, errlen);
    if (rc) {
        char tmp[512];
        free(st);
        ar_snapshot_free(snap);
        if (rc == AR_ENOMEM || e->mem.failed != failed) {
            snprintf(tmp, sizeof tmp, "%s", err);
            return too_big(e, tmp, err, errlen);
        }
        return AR_ERR;
    }
    st->e = e;
    st->handle = (long long)c.handle;
    st->snap = snap;
    *out = st;
    return AR_OK;
}

int ar_engine_set_study(ar_engine *e, const char *study, size_t study_len,
                        const char *series, size_t series_len,
                        const char *instances, size_t instances_len,
                        ar_study **out, char *err, size_t errlen)
{
    ar_snapshot *s = NULL;
    char why[512];
    int rc = ar_snapshot_from_answers(study, study_len, series, series_len, instances,
                                      instances_len, room(e), &s, why, sizeof why);
    return adopt(e, rc, s, why, out, err, errlen);
}

int ar_engine_set_study_fixture(ar_engine *e, const char *json, size_t len, ar_study **out,
                                char *err, size_t errlen)
{
    ar_snapshot *s = NULL;
    char why[512];
    int rc = ar_snapshot_from_fixture(json, len, "fixture", room(e), &s, why, sizeof why);
    return adopt(e, rc, s, why, out, err, errlen);
}

int ar_engine_set_study_fixture_file(ar_engine *e, const char *path, ar_study **out, char *err,
                                     size_t errlen)
{
    ar_snapshot *s = NULL;
    char why[512];
    int rc = ar_snapshot_from_fixture_file(path, room(e), &s, why, sizeof why);
    return adopt(e, rc, s, why, out, err, errlen);
}

void ar_study_free(ar_study *s)
{
    char err[256];
    lua_Integer h;
    if (!s)
        return;
    h = (lua_Integer)s->handle;
    ar_door(s->e, drop_door, &h, 0, err, sizeof err);
    ar_snapshot_free(s->snap);
    free(s);
}

long long ar_study_handle(const ar_study *s)
{
    return s->handle;
}

const ar_snapshot *ar_study_snapshot(const ar_study *s)
{
    return s ? s->snap : NULL;
}

const char *ar_study_id(const ar_study *s)
{
    return s ? s->snap->id : "";
}

size_t ar_study_series_count(const ar_study *s)
{
    return s ? s->snap->nseries : 0;
}

const char *ar_study_series_id(const ar_study *s, size_t i)
{
    return s && i < s->snap->nseries ? s->snap->series[i].id : NULL;
}

int ar_study_has_series(const ar_study *s, const char *series_id)
{
    for (size_t i = 0; s && series_id && i < s->snap->nseries; i++)
        if (strcmp(s->snap->series[i].id, series_id) == 0)
            return 1;
    return 0;
}
