/* plan.c - the export plan of a matched (rule, series) on a study snapshot.
 *
 * rules/layout.lua (through host.plan, a budgeted call: it runs the rule's
 * name/series_name/file_name hooks) hands raw path components over one by
 * one (out.series, out.file: C functions here), so a 100,000-file plan
 * never sits in Lua; every component is sanitised here with
 * ar_sanitize_component (fallback "UNKNOWN"), so no hook or tag value can
 * put a '/', '..' or control character in a path.  Instance ids and sizes
 * come from the study snapshot; the plan's strings live in one arena.
 *   folder   = "<rule>/<name components...>" (the last one at most 243
 *              bytes: core/export adds ".OLD.WORKING" beside it)
 *   rel_path = "<series folder components...>/<file name components...>"
 * Two files with the same rel_path (e.g. the same SOPInstanceUID twice) get
 * "_2", "_3", ... before the extension of all but the first, skipping any
 * name another file already has: deterministic for the same study.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>

#include "../core/arena.h"
#include "../core/err.h"
#include "../core/snapshot.h"
#include "../core/sanitize.h"
#include "engine_int.h"

#define AR_FALLBACK "UNKNOWN"
/* The last component keeps room for a collision suffix and ".OLD.WORKING". */
#define AR_FOLDER_LAST_MAX AR_FOLDER_NAME_MAX

typedef struct dbuf {
    char *p;
    size_t len, cap;
} dbuf;

typedef struct plan_ctx {
    size_t rule;
    const char *series;
    lua_Integer study;
    const ar_snapshot *snap;
    ar_plan *plan;
    ar_arena *arena;
    size_t cap;           /* of plan->files */
    int unknown_size;
    char **series_dirs;   /* sanitised series folders, by snapshot series (in arena) */
    dbuf buf;
} plan_ctx;

static int dbuf_add(dbuf *b, const char *s, size_t len)
{
    if (b->len + len + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        char *np;
        while (cap < b->len + len + 1)
            cap *= 2;
        np = realloc(b->p, cap);
        if (!np)
            return -1;
        b->p = np;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, len);
    b->len += len;
    b->p[b->len] = '\0';
    return 0;
}

/* Append one sanitised component of at most max bytes (with a '/' before
 * it unless first). */
static void add_component(lua_State *L, dbuf *b, const char *raw, size_t rawlen, size_t max)
{
    char comp[AR_NAME_MAX + 1];
    size_t n = ar_sanitize_component(raw, rawlen, AR_FALLBACK, comp, max);
    if ((b->len && dbuf_add(b, "/", 1)) || dbuf_add(b, comp, n))
        luaL_error(L, "out of memory");
}

/* Append the components at idx: a string (one component, already split by
 * layout.lua) or a list of strings.  The last one gets at most last_max
 * bytes, the others AR_NAME_MAX. */
static void add_components(lua_State *L, dbuf *b, int idx, const char *what, size_t last_max)
{
    size_t len;
    const char *s;

    idx = lua_absindex(L, idx);
    if (lua_type(L, idx) == LUA_TSTRING) {
        s = lua_tolstring(L, idx, &len);
        add_component(L, b, s, len, last_max);
    } else if (lua_type(L, idx) == LUA_TTABLE) {
        lua_Integer i, n = (lua_Integer)lua_rawlen(L, idx);
        if (n <= 0)
            add_component(L, b, "", 0, last_max);
        for (i = 1; i <= n; i++) {
            if (lua_rawgeti(L, idx, i) != LUA_TSTRING)
                luaL_error(L, "%s: component %d is not a string", what, (int)i);
            s = lua_tolstring(L, -1, &len);
            add_component(L, b, s, len, i == n ? last_max : AR_NAME_MAX);
            lua_pop(L, 1);
        }
    } else {
        luaL_error(L, "%s: expected components, got %s", what, luaL_typename(L, idx));
    }
}

static char *own(lua_State *L, plan_ctx *c, const char *s, size_t len)
{
    char *p = ar_arena_strndup(c->arena, s, len);
    if (!p)
        luaL_error(L, "out of memory");
    return p;
}

static plan_ctx *ctx_of(lua_State *L)
{
    return lua_touserdata(L, lua_upvalueindex(1));
}

/* snapshot series k (1-based) of the plan, raising when there is none */
static size_t series_arg(lua_State *L, const plan_ctx *c, int idx)
{
    lua_Integer k = luaL_checkinteger(L, idx);
    if (k < 1 || (size_t)k > c->snap->nseries)
        luaL_error(L, "plan: no series #%d", (int)k);
    return (size_t)k - 1;
}

/* out.series(k, comps): the folder of series k */
static int c_series(lua_State *L)
{
    plan_ctx *c = ctx_of(L);
    size_t k = series_arg(L, c, 1);
    c->buf.len = 0;
    add_components(L, &c->buf, 2, "series folder", AR_NAME_MAX);
    c->series_dirs[k] = own(L, c, c->buf.p, c->buf.len);
    return 0;
}

/* out.file(k, j, comps): the name of instance j of series k */
static int c_file(lua_State *L)
{
    plan_ctx *c = ctx_of(L);
    ar_plan *p = c->plan;
    size_t k = series_arg(L, c, 1);
    const ar_snap_series *se = &c->snap->series[k];
    lua_Integer j = luaL_checkinteger(L, 2);
    const ar_snap_instance *in;
    ar_export_file *f;

    if (j < 1 || (size_t)j > se->n)
        return luaL_error(L, "plan: no instance #%d in series %s", (int)j, se->id);
    if (!c->series_dirs[k])
        return luaL_error(L, "plan: instance %d has no series folder", (int)j);
    in = &c->snap->instances[se->first + (size_t)j - 1];
    if (p->n == c->cap) {
        size_t cap = c->cap ? c->cap * 2 : 64;
        ar_export_file *nf = realloc(p->files, cap * sizeof *nf);
        if (!nf)
            return luaL_error(L, "out of memory");
        p->files = nf;
        c->cap = cap;
    }
    c->buf.len = 0;
    if (dbuf_add(&c->buf, c->series_dirs[k], strlen(c->series_dirs[k])))
        return luaL_error(L, "out of memory");
    add_components(L, &c->buf, 3, "file name", AR_NAME_MAX);
    f = &p->files[p->n];
    f->instance_id = own(L, c, in->id, strlen(in->id));
    f->rel_path = own(L, c, c->buf.p, c->buf.len);
    f->size = in->file_size;
    if (f->size < 0)
        c->unknown_size = 1;
    else
        p->total_bytes += f->size;
    p->n++;
    return 0;
}

static int plan_door(lua_State *L)
{
    plan_ctx *c = lua_touserdata(L, 1);
    ar_engine *e = ar_engine_of(L);
    ar_plan *p = c->plan;

    ar_push_host(L, "plan");
    lua_pushinteger(L, (lua_Integer)c->rule);
    lua_pushinteger(L, c->study);
    if (c->series && c->series[0])
        lua_pushstring(L, c->series);
    else
        lua_pushnil(L);
    lua_createtable(L, 0, 2);
    lua_pushlightuserdata(L, c);
    lua_pushcclosure(L, c_series, 1);
    lua_setfield(L, -2, "series");
    lua_pushlightuserdata(L, c);
    lua_pushcclosure(L, c_file, 1);
    lua_setfield(L, -2, "file");
    lua_call(L, 4, 1); /* stack: ctx, folder components */

    c->buf.len = 0;
    add_component(L, &c->buf, e->rules[c->rule].name, strlen(e->rules[c->rule].name),
                  AR_NAME_MAX);
    add_components(L, &c->buf, 2, "folder", AR_FOLDER_LAST_MAX);
    p->folder = strdup(c->buf.p);
    if (!p->folder)
        return luaL_error(L, "out of memory");
    if (c->unknown_size)
        p->total_bytes = -1;
    return 0;
}

/* ---- duplicate names --------------------------------------------------- */

typedef struct strset {
    const char **slot;
    size_t cap, n;
} strset;

static size_t hash_str(const char *s)
{
    size_t h = 1469598103934665603ULL;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ULL;
    return h;
}

static int strset_has(const strset *st, const char *s)
{
    size_t i;
    if (st->cap == 0)
        return 0;
    i = hash_str(s) & (st->cap - 1);
    while (st->slot[i]) {
        if (strcmp(st->slot[i], s) == 0)
            return 1;
        i = (i + 1) & (st->cap - 1);
    }
    return 0;
}

static int strset_add(strset *st, const char *s)
{
    size_t i;
    if ((st->n + 1) * 2 > st->cap) {
        strset bigger = {NULL, st->cap ? st->cap * 2 : 64, 0};
        size_t k;
        bigger.slot = calloc(bigger.cap, sizeof *bigger.slot);
        if (!bigger.slot)
            return -1;
        for (k = 0; k < st->cap; k++)
            if (st->slot[k])
                strset_add(&bigger, st->slot[k]);
        free(st->slot);
        *st = bigger;
    }
    i = hash_str(s) & (st->cap - 1);
    while (st->slot[i]) {
        if (strcmp(st->slot[i], s) == 0)
            return 0;
        i = (i + 1) & (st->cap - 1);
    }
    st->slot[i] = s;
    st->n++;
    return 0;
}

/* "<dir>/<base>_<k><ext>", the last component kept within AR_NAME_MAX. */
static char *suffixed(ar_arena *arena, const char *rel, unsigned long k)
{
    const char *last = strrchr(rel, '/');
    const char *dot;
    size_t dirlen, baselen, extlen, out;
    char suffix[32];
    char *s;

    last = last ? last + 1 : rel;
    dirlen = (size_t)(last - rel);
    dot = strrchr(last, '.');
    if (!dot || dot == last || strlen(dot) > 16)
        dot = last + strlen(last);
    baselen = (size_t)(dot - last);
    extlen = strlen(dot);
    snprintf(suffix, sizeof suffix, "_%lu", k);
    while (baselen + strlen(suffix) + extlen > AR_NAME_MAX && baselen > 0) {
        baselen--;
        while (baselen > 0 && ((unsigned char)last[baselen] & 0xC0) == 0x80)
            baselen--;
    }
    out = dirlen + baselen + strlen(suffix) + extlen;
    s = ar_arena_alloc(arena, out + 1);
    if (!s)
        return NULL;
    memcpy(s, rel, dirlen);
    memcpy(s + dirlen, last, baselen);
    memcpy(s + dirlen + baselen, suffix, strlen(suffix));
    memcpy(s + dirlen + baselen + strlen(suffix), dot, extlen);
    s[out] = '\0';
    return s;
}

static int dedupe(ar_plan *p, ar_arena *arena)
{
    strset orig = {NULL, 0, 0}, claimed = {NULL, 0, 0};
    size_t i;
    int rc = -1;

    for (i = 0; i < p->n; i++)
        if (strset_add(&orig, p->files[i].rel_path))
            goto out;
    if (orig.n == p->n) {
        rc = 0; /* the usual case: nothing to do */
        goto out;
    }
    for (i = 0; i < p->n; i++) {
        const char *rel = p->files[i].rel_path;
        unsigned long k;
        if (!strset_has(&claimed, rel)) {
            if (strset_add(&claimed, rel))
                goto out;
            continue;
        }
        for (k = 2;; k++) {
            char *cand = suffixed(arena, rel, k);
            if (!cand)
                goto out;
            if (strset_has(&orig, cand) || strset_has(&claimed, cand))
                continue; /* (the arena keeps it; rare) */
            p->files[i].rel_path = cand;
            if (strset_add(&claimed, cand))
                goto out;
            break;
        }
    }
    rc = 0;
out:
    free(orig.slot);
    free(claimed.slot);
    return rc;
}

/* ---- public -------------------------------------------------------------- */

int ar_engine_plan(ar_engine *e, const ar_study *st, size_t rule, const char *series_id,
                   ar_plan *out, char *err, size_t errlen)
{
    plan_ctx c;
    char msg[1024];
    int rc;

    memset(out, 0, sizeof *out);
    memset(&c, 0, sizeof c);
    if (rule >= e->nrules || !e->rules[rule].ok)
        return ar_seterr(err, errlen, AR_ERR, "no loaded rule #%zu", rule);
    if (!st)
        return ar_seterr(err, errlen, AR_ERR, "no study snapshot");
    c.snap = ar_study_snapshot(st);
    c.arena = calloc(1, sizeof *c.arena);
    c.series_dirs = calloc(c.snap->nseries + 1, sizeof *c.series_dirs);
    out->owned_ = c.arena;
    if (!c.arena || !c.series_dirs) {
        rc = ar_seterr(err, errlen, AR_ENOMEM, "out of memory");
        goto out;
    }
    c.rule = rule;
    c.series = series_id;
    c.study = (lua_Integer)ar_study_handle(st);
    c.plan = out;

    rc = ar_rule_call(e, rule, plan_door, &c, msg, sizeof msg);
    if (rc)
        rc = ar_seterr(err, errlen, rc == AR_ENOMEM ? AR_ENOMEM : AR_ERULE, "rule %s: plan: %s",
                       e->rules[rule].name, msg);
    else if (dedupe(out, c.arena))
        rc = ar_seterr(err, errlen, AR_ENOMEM, "out of memory while naming files");
out:
    free(c.series_dirs);
    free(c.buf.p);
    if (rc)
        ar_plan_free(out);
    return rc;
}

void ar_plan_free(ar_plan *p)
{
    if (!p)
        return;
    if (p->owned_) {
        ar_arena_free(p->owned_);
        free(p->owned_);
    }
    free(p->folder);
    free(p->files);
    memset(p, 0, sizeof *p);
}
