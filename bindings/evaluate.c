/* evaluate.c - calling rules against a study snapshot: match, on_exported.
 *
 * Each (rule, series) decision is its own budgeted door call to
 * host.evaluate, so one rule's error, runaway loop or memory bomb becomes
 * that verdict's error ("rule x: ...") and the next rule runs with a fresh
 * budget.  Rules are never re-created here: environments are built at load.
 */
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>

#include "../core/err.h"
#include "engine_int.h"

/* Copy at most outlen-1 bytes, cut on a UTF-8 boundary. */
static void copy_trunc(char *out, size_t outlen, const char *s, size_t len)
{
    if (len >= outlen) {
        len = outlen - 1;
        while (len > 0 && ((unsigned char)s[len] & 0xC0) == 0x80)
            len--;
    }
    memcpy(out, s, len);
    out[len] = '\0';
}

static int reset_door(lua_State *L)
{
    size_t *rule = lua_touserdata(L, 1);
    ar_push_host(L, "reset_env");
    lua_pushinteger(L, (lua_Integer)*rule);
    lua_call(L, 1, 0);
    return 0;
}

static int drop_door(lua_State *L)
{
    size_t *rule = lua_touserdata(L, 1);
    ar_push_host(L, "drop_rule");
    lua_pushinteger(L, (lua_Integer)*rule);
    lua_call(L, 1, 0);
    return 0;
}

int ar_rule_call(ar_engine *e, size_t rule, lua_CFunction fn, void *ctx, char *err, size_t errlen)
{
    size_t before = e->mem.used, slack = e->mem.cap / 8;
    char m[256];
    int rc;

    e->current_rule = (long)rule;
    rc = ar_door(e, fn, ctx, 1, err, errlen);
    e->current_rule = -1;
    if (rc != AR_ENOMEM || e->mem.used <= before + slack)
        return rc;
    ar_door(e, reset_door, &rule, 0, m, sizeof m);
    lua_gc(e->L, LUA_GCCOLLECT);
    if (e->mem.used <= before + slack)
        return rc;
    ar_door(e, drop_door, &rule, 0, m, sizeof m);
    lua_gc(e->L, LUA_GCCOLLECT);
    e->rules[rule].ok = 0;
    ar_seterr(e->rules[rule].error, sizeof e->rules[rule].error, AR_ERULE,
              "%s: disabled: it ran out of memory (%zu MB) and kept what it took; "
              "fix it and reload the rules", e->rules[rule].file, e->mem.cap / (1024 * 1024));
    return rc;
}

typedef struct eval_ctx {
    lua_Integer index;
    lua_Integer study;
    const char *series;
    int matched;
    char reason[1024];
} eval_ctx;

static int eval_door(lua_State *L)
{
    eval_ctx *c = lua_touserdata(L, 1);
    ar_engine *e = ar_engine_of(L);

    lua_rawgeti(L, LUA_REGISTRYINDEX, e->eval_ref);
    lua_pushinteger(L, c->index);
    lua_pushinteger(L, c->study);
    if (c->series)
        lua_pushstring(L, c->series);
    else
        lua_pushnil(L);
    lua_call(L, 3, 2); /* stack: ctx, matched, reason */
    c->matched = lua_toboolean(L, 2);
    if (lua_type(L, 3) == LUA_TSTRING) {
        size_t len;
        const char *s = lua_tolstring(L, 3, &len);
        copy_trunc(c->reason, sizeof c->reason, s, len);
    }
    return 0;
}

static void eval_one(ar_engine *e, const ar_study *st, size_t rule, const char *series,
                     ar_verdict *v)
{
    eval_ctx c;
    char msg[1024];
    int rc;

    c.index = (lua_Integer)rule;
    c.study = (lua_Integer)ar_study_handle(st);
    c.series = series;
    c.matched = 0;
    c.reason[0] = '\0';
    v->rule = rule;
    snprintf(v->series_id, sizeof v->series_id, "%s", series ? series : "");
    rc = ar_rule_call(e, rule, eval_door, &c, msg, sizeof msg);
    if (rc) {
        v->matched = 0;
        v->error = 1;
        ar_seterr(v->reason, sizeof v->reason, AR_ERULE, "rule %s: %s", e->rules[rule].name, msg);
        return;
    }
    v->matched = c.matched;
    v->error = 0;
    memcpy(v->reason, c.reason, sizeof v->reason);
}

int ar_engine_evaluate(ar_engine *e, const ar_study *st, const char *only_series, int all_levels,
                       ar_verdict **out, size_t *n, char *err, size_t errlen)
{
    ar_verdict *v = NULL;
    size_t i, s, count = 0, k = 0, ns = ar_study_series_count(st);
    int pass;

    *out = NULL;
    *n = 0;
    if (!st)
        return ar_seterr(err, errlen, AR_ERR, "no study snapshot");
    if (only_series && !ar_study_has_series(st, only_series))
        return ar_seterr(err, errlen, AR_ENOTFOUND, "series %s is not part of study %s",
                         only_series, ar_study_id(st));
    /* Pass 0 counts, pass 1 evaluates. */
    for (pass = 0; pass < 2; pass++) {
        for (i = 0; i < e->nrules; i++) {
            const ar_rule_info *r = &e->rules[i];
            if (!r->ok || !r->active)
                continue;
            if (strcmp(r->check_on, "series") != 0) {
                if (only_series)
                    continue;
                if (pass)
                    eval_one(e, st, i, NULL, &v[k++]);
                else
                    count++;
            } else if (only_series) {
                if (pass)
                    eval_one(e, st, i, only_series, &v[k++]);
                else
                    count++;
            } else if (all_levels) {
                for (s = 0; s < ns; s++) {
                    if (pass)
                        eval_one(e, st, i, ar_study_series_id(st, s), &v[k++]);
                    else
                        count++;
                }
            }
        }
        if (pass == 0) {
            if (count == 0)
                return AR_OK;
            v = calloc(count, sizeof *v);
            if (!v)
                return ar_seterr(err, errlen, AR_ENOMEM, "out of memory for %zu verdicts", count);
        }
    }
    *out = v;
    *n = k;
    return AR_OK;
}

typedef struct hook_ctx {
    lua_Integer index;
    lua_Integer study;
    const char *series;
    const char *path;
} hook_ctx;

static int exported_door(lua_State *L)
{
    hook_ctx *c = lua_touserdata(L, 1);

    ar_push_host(L, "on_exported");
    lua_pushinteger(L, c->index);
    lua_pushinteger(L, c->study);
    if (c->series && c->series[0])
        lua_pushstring(L, c->series);
    else
        lua_pushnil(L);
    lua_pushstring(L, c->path ? c->path : "");
    lua_call(L, 4, 0);
    return 0;
}

int ar_engine_on_exported(ar_engine *e, const ar_study *st, size_t rule, const char *series_id,
                          const char *path, char *err, size_t errlen)
{
    hook_ctx c;
    char msg[1024];
    int rc;

    if (rule >= e->nrules || !e->rules[rule].ok)
        return ar_seterr(err, errlen, AR_ERR, "no loaded rule #%zu", rule);
    if (!st)
        return ar_seterr(err, errlen, AR_ERR, "no study snapshot");
    c.index = (lua_Integer)rule;
    c.study = (lua_Integer)ar_study_handle(st);
    c.series = series_id;
    c.path = path;
    rc = ar_rule_call(e, rule, exported_door, &c, msg, sizeof msg);
    if (rc)
        return ar_seterr(err, errlen, AR_ERULE, "rule %s: on_exported: %s", e->rules[rule].name, msg);
    return AR_OK;
}

int ar_engine_evaluate_one(ar_engine *e, const ar_study *st, size_t rule, const char *series_id,
                           ar_verdict *out, char *err, size_t errlen)
{
    if (rule >= e->nrules || !e->rules[rule].ok)
        return ar_seterr(err, errlen, AR_ERR, "no usable rule #%zu", rule);
    if (!st)
        return ar_seterr(err, errlen, AR_ERR, "no study snapshot");
    if (strcmp(e->rules[rule].check_on, "series") == 0) {
        if (!series_id)
            return ar_seterr(err, errlen, AR_ERR, "rule %s decides series: name one",
                             e->rules[rule].name);
        if (!ar_study_has_series(st, series_id))
            return ar_seterr(err, errlen, AR_ENOTFOUND, "series %s is not part of study %s",
                             series_id, ar_study_id(st));
    } else {
        series_id = NULL;
    }
    eval_one(e, st, rule, series_id, out);
    return AR_OK;
}

void ar_engine_set_interrupt(ar_engine *e, volatile sig_atomic_t *flag)
{
    e->budget.interrupt = flag;
}
