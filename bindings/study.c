/* study.c - study snapshots (values), from Orthanc's three answers.
 *
 * host.set_study (rules/study.lua) decodes /studies/<id>, /studies/<id>/series
 * and /studies/<id>/instances with lua-cjson, checks their shapes and builds
 * the read-only study object rules see, kept by the host under an integer
 * handle; the C side's ar_study holds that handle, the study id and its
 * series ids (in study.series order) to drive evaluation.  Each snapshot
 * lives until ar_study_free: several may exist at once, none is "current".
 * An answer that is not JSON at all gives AR_ENET (garbled in transit:
 * retry); JSON of the wrong shape gives AR_ERR; answers too big for the
 * engine's memory cap give AR_ENOMEM.
 */
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>

#include "../core/err.h"
#include "engine_int.h"

struct ar_study {
    ar_engine *e;
    long long handle;        /* the host's key of the snapshot (rules/host.lua) */
    size_t instances;        /* a big one is collected at once when dropped */
    char id[128];
    char **series;           /* series ids, in study.series order */
    size_t nseries;
};

typedef struct study_ctx {
    const char *fn;          /* host function */
    lua_Integer handle;
    const char *parts[3];
    size_t lens[3];
    int nparts;
    char id[128];
    char **series;
    size_t nseries;
    char garbled[512];       /* an answer was not JSON */
} study_ctx;

static int study_door(lua_State *L)
{
    study_ctx *c = lua_touserdata(L, 1);
    lua_Integer i, n;
    int k;

    ar_push_host(L, c->fn);
    for (k = 0; k < c->nparts; k++)
        lua_pushlstring(L, c->parts[k], c->lens[k]);
    lua_call(L, c->nparts, 3); /* stack: ctx, id, series ids, handle */
    if (lua_isnil(L, 2)) {
        ar_seterr(c->garbled, sizeof c->garbled, AR_ENET, "%s",
                  lua_type(L, 3) == LUA_TSTRING ? lua_tostring(L, 3) : "garbled answer");
        return 0;
    }
    ar_copy_lstr(L, 2, c->id, sizeof c->id, "study ID", 0);
    c->handle = luaL_checkinteger(L, 4);
    luaL_checktype(L, 3, LUA_TTABLE);
    n = (lua_Integer)lua_rawlen(L, 3);
    if (n <= 0)
        return 0;
    c->series = calloc((size_t)n, sizeof *c->series);
    if (!c->series)
        return luaL_error(L, "out of memory");
    for (i = 1; i <= n; i++) {
        char id[128];
        lua_rawgeti(L, 3, i);
        ar_copy_lstr(L, -1, id, sizeof id, "series ID", 0);
        lua_pop(L, 1);
        c->series[i - 1] = strdup(id);
        if (!c->series[i - 1])
            return luaL_error(L, "out of memory");
        c->nseries = (size_t)i;
    }
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

static void free_series(char **v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(v[i]);
    free(v);
}

static int run_study(ar_engine *e, study_ctx *c, ar_study **out, char *err, size_t errlen)
{
    int rc;
    size_t failed = e->mem.failed;
    ar_study *st = NULL;

    *out = NULL;
    rc = ar_door(e, study_door, c, 0, err, errlen);
    if (rc) {
        free_series(c->series, c->nseries);
        if (rc != AR_ENOMEM && e->mem.failed != failed) {
            /* a decode that met the memory cap and said so as its own error */
            char tmp[512];
            snprintf(tmp, sizeof tmp, "%s", err);
            return ar_seterr(err, errlen, AR_ENOMEM,
                             "not enough memory for the study (the engine's limit is %zu MB): %s",
                             e->mem.cap / (1024 * 1024), tmp);
        }
        return rc == AR_ENOMEM ? rc : AR_ERR;
    }
    if (c->garbled[0]) {
        free_series(c->series, c->nseries);
        if (e->mem.failed != failed)
            /* the decoder's pcall met the memory cap: the study is too big, not garbled */
            return ar_seterr(err, errlen, AR_ENOMEM,
                             "not enough memory for the study's answers (the engine's limit is "
                             "%zu MB): %s",
                             e->mem.cap / (1024 * 1024), c->garbled);
        return ar_seterr(err, errlen, AR_ENET, "%s", c->garbled);
    }
    st = calloc(1, sizeof *st);
    if (!st) {
        lua_Integer h = c->handle;
        char e2[64];
        ar_door(e, drop_door, &h, 0, e2, sizeof e2);
        free_series(c->series, c->nseries);
        return ar_seterr(err, errlen, AR_ENOMEM, "out of memory for a study snapshot");
    }
    st->e = e;
    st->handle = (long long)c->handle;
    memcpy(st->id, c->id, sizeof st->id);
    st->series = c->series;
    st->nseries = c->nseries;
    *out = st;
    return AR_OK;
}

void ar_study_free(ar_study *s)
{
    char err[256];
    lua_Integer h;
    if (!s)
        return;
    h = (lua_Integer)s->handle;
    ar_door(s->e, drop_door, &h, 0, err, sizeof err);
    free_series(s->series, s->nseries);
    free(s);
}

long long ar_study_handle(const ar_study *s)
{
    return s->handle;
}

const char *ar_study_id(const ar_study *s)
{
    return s ? s->id : "";
}

size_t ar_study_series_count(const ar_study *s)
{
    return s ? s->nseries : 0;
}

const char *ar_study_series_id(const ar_study *s, size_t i)
{
    return s && i < s->nseries ? s->series[i] : NULL;
}

int ar_study_has_series(const ar_study *s, const char *series_id)
{
    for (size_t i = 0; s && series_id && i < s->nseries; i++)
        if (strcmp(s->series[i], series_id) == 0)
            return 1;
    return 0;
}

int ar_engine_set_study(ar_engine *e, const char *study, size_t study_len,
                        const char *series, size_t series_len,
                        const char *instances, size_t instances_len,
                        ar_study **out, char *err, size_t errlen)
{
    study_ctx c;

    memset(&c, 0, sizeof c);
    c.fn = "set_study";
    c.parts[0] = study ? study : "";
    c.lens[0] = study ? study_len : 0;
    c.parts[1] = series ? series : "";
    c.lens[1] = series ? series_len : 0;
    c.parts[2] = instances ? instances : "";
    c.lens[2] = instances ? instances_len : 0;
    c.nparts = 3;
    return run_study(e, &c, out, err, errlen);
}

int ar_engine_set_study_fixture(ar_engine *e, const char *json, size_t len, ar_study **out,
                                char *err, size_t errlen)
{
    study_ctx c;

    memset(&c, 0, sizeof c);
    c.fn = "set_study_fixture";
    c.parts[0] = json ? json : "";
    c.lens[0] = json ? len : 0;
    c.nparts = 1;
    return run_study(e, &c, out, err, errlen);
}
