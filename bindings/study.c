/* study.c - the current study snapshot, from Orthanc's three answers.
 *
 * host.set_study (rules/study.lua) decodes /studies/<id>, /studies/<id>/series
 * and /studies/<id>/instances with lua-cjson, checks their shapes and builds
 * the read-only study object rules see.  The C side keeps the study id and
 * its series ids (in study.series order) to drive evaluation.  A failed
 * set_study leaves no current study, so no rule runs against stale data.
 * An answer that is not JSON at all gives AR_ENET (garbled in transit:
 * retry); JSON of the wrong shape gives AR_ERR; answers too big for the
 * engine's memory cap give AR_ENOMEM.
 */
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>

#include "../core/err.h"
#include "engine_int.h"

void ar_study_forget(ar_engine *e)
{
    size_t i;
    for (i = 0; i < e->nseries; i++)
        free(e->series_ids[i]);
    free(e->series_ids);
    e->series_ids = NULL;
    e->nseries = 0;
    e->study_id[0] = '\0';
}

typedef struct study_ctx {
    const char *fn;          /* host function */
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
    lua_call(L, c->nparts, 2); /* stack: ctx, id, series ids */
    if (lua_isnil(L, 2)) {
        ar_seterr(c->garbled, sizeof c->garbled, AR_ENET, "%s",
                  lua_type(L, 3) == LUA_TSTRING ? lua_tostring(L, 3) : "garbled answer");
        return 0;
    }
    ar_copy_lstr(L, 2, c->id, sizeof c->id, "study ID", 0);
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

static int run_study(ar_engine *e, study_ctx *c, char *err, size_t errlen)
{
    size_t i;
    int rc;

    size_t failed = e->mem.failed;
    ar_study_forget(e);
    rc = ar_door(e, study_door, c, 0, err, errlen);
    if (rc) {
        for (i = 0; i < c->nseries; i++)
            free(c->series[i]);
        free(c->series);
        return rc == AR_ENOMEM ? rc : AR_ERR;
    }
    if (c->garbled[0] && e->mem.failed != failed) {
        /* the decoder's pcall met the memory cap: the study is too big, not garbled */
        for (i = 0; i < c->nseries; i++)
            free(c->series[i]);
        free(c->series);
        return ar_seterr(err, errlen, AR_ENOMEM,
                         "not enough memory for the study's answers (the engine's limit is %zu "
                         "MB): %s",
                         e->mem.cap / (1024 * 1024), c->garbled);
    }
    if (c->garbled[0])
        return ar_seterr(err, errlen, AR_ENET, "%s", c->garbled);
    memcpy(e->study_id, c->id, sizeof e->study_id);
    e->series_ids = c->series;
    e->nseries = c->nseries;
    return AR_OK;
}

int ar_engine_set_study(ar_engine *e, const char *study, size_t study_len,
                        const char *series, size_t series_len,
                        const char *instances, size_t instances_len,
                        char *err, size_t errlen)
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
    return run_study(e, &c, err, errlen);
}

int ar_engine_set_study_fixture(ar_engine *e, const char *json, size_t len,
                                char *err, size_t errlen)
{
    study_ctx c;

    memset(&c, 0, sizeof c);
    c.fn = "set_study_fixture";
    c.parts[0] = json ? json : "";
    c.lens[0] = json ? len : 0;
    c.nparts = 1;
    return run_study(e, &c, err, errlen);
}

const char *ar_engine_study_id(const ar_engine *e)
{
    return e->study_id;
}
