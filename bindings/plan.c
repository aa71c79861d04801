/* plan.c - the export plan of a matched (rule, series) on a study snapshot.
 *
 * rules/layout.lua (through host.plan, a budgeted call: it runs the rule's
 * name/series_name/file_name hooks) returns raw path components; every one
 * is sanitised here with ar_sanitize_component (fallback "UNKNOWN"), so no
 * hook or tag value can put a '/', '..' or control character in a path.
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

#include "../core/err.h"
#include "../core/sanitize.h"
#include "engine_int.h"

#define AR_FALLBACK "UNKNOWN"
/* The last component keeps room for a collision suffix and ".OLD.WORKING". */
#define AR_FOLDER_LAST_MAX AR_FOLDER_NAME_MAX

typedef struct strvec {
    char **v;
    size_t n, cap;
} strvec;

typedef struct dbuf {
    char *p;
    size_t len, cap;
} dbuf;

typedef struct plan_ctx {
    size_t rule;
    const char *series;
    lua_Integer study;
    ar_plan *plan;
    strvec *owned;
    char **series_dirs;   /* sanitised series folders, index = Lua index - 1 */
    size_t nseries_dirs;
    dbuf buf;
} plan_ctx;

static int strvec_push(strvec *sv, char *s)
{
    if (sv->n == sv->cap) {
        size_t cap = sv->cap ? sv->cap * 2 : 64;
        char **nv = realloc(sv->v, cap * sizeof *nv);
        if (!nv)
            return -1;
        sv->v = nv;
        sv->cap = cap;
    }
    sv->v[sv->n++] = s;
    return 0;
}

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
    char *p = malloc(len + 1);
    if (!p || strvec_push(c->owned, p)) {
        free(p);
        luaL_error(L, "out of memory");
    }
    memcpy(p, s, len);
    p[len] = '\0';
    return p;
}

static int plan_door(lua_State *L)
{
    plan_ctx *c = lua_touserdata(L, 1);
    ar_engine *e = ar_engine_of(L);
    ar_plan *p = c->plan;
    lua_Integer i, n;
    int unknown_size = 0;

    ar_push_host(L, "plan");
    lua_pushinteger(L, (lua_Integer)c->rule);
    lua_pushinteger(L, c->study);
    if (c->series && c->series[0])
        lua_pushstring(L, c->series);
    else
        lua_pushnil(L);
    lua_call(L, 3, 1); /* stack: ctx, plan table */
    luaL_checktype(L, 2, LUA_TTABLE);

    /* folder */
    c->buf.len = 0;
    add_component(L, &c->buf, e->rules[c->rule].name, strlen(e->rules[c->rule].name),
                  AR_NAME_MAX);
    lua_getfield(L, 2, "folder");
    add_components(L, &c->buf, -1, "folder", AR_FOLDER_LAST_MAX);
    lua_pop(L, 1);
    p->folder = strdup(c->buf.p);
    if (!p->folder)
        return luaL_error(L, "out of memory");

    /* series folders */
    lua_getfield(L, 2, "series"); /* stack: ctx, plan, series */
    luaL_checktype(L, 3, LUA_TTABLE);
    n = (lua_Integer)lua_rawlen(L, 3);
    if (n > 0) {
        c->series_dirs = calloc((size_t)n, sizeof *c->series_dirs);
        if (!c->series_dirs)
            return luaL_error(L, "out of memory");
        for (i = 1; i <= n; i++) {
            c->buf.len = 0;
            lua_rawgeti(L, 3, i);
            add_components(L, &c->buf, -1, "series folder", AR_NAME_MAX);
            lua_pop(L, 1);
            c->series_dirs[i - 1] = strdup(c->buf.p);
            if (!c->series_dirs[i - 1])
                return luaL_error(L, "out of memory");
            c->nseries_dirs = (size_t)i;
        }
    }

    /* files: parallel lists ids, sizes, sidx, names */
    lua_getfield(L, 2, "ids");   /* 4 */
    lua_getfield(L, 2, "sizes"); /* 5 */
    lua_getfield(L, 2, "sidx");  /* 6 */
    lua_getfield(L, 2, "names"); /* 7 */
    luaL_checktype(L, 4, LUA_TTABLE);
    luaL_checktype(L, 5, LUA_TTABLE);
    luaL_checktype(L, 6, LUA_TTABLE);
    luaL_checktype(L, 7, LUA_TTABLE);
    n = (lua_Integer)lua_rawlen(L, 4);
    p->total_bytes = 0;
    if (n <= 0)
        return 0;
    p->files = calloc((size_t)n, sizeof *p->files);
    if (!p->files)
        return luaL_error(L, "out of memory");
    for (i = 1; i <= n; i++) {
        ar_export_file *f = &p->files[i - 1];
        lua_Integer si;
        size_t len;
        const char *s;
        int isnum;

        if (lua_rawgeti(L, 4, i) != LUA_TSTRING)
            return luaL_error(L, "plan: instance %d has no id", (int)i);
        s = lua_tolstring(L, -1, &len);
        f->instance_id = own(L, c, s, len);
        lua_pop(L, 1);

        lua_rawgeti(L, 5, i);
        f->size = (long long)lua_tointegerx(L, -1, &isnum);
        if (!isnum || f->size < 0) {
            f->size = -1;
            unknown_size = 1;
        } else {
            p->total_bytes += f->size;
        }
        lua_pop(L, 1);

        lua_rawgeti(L, 6, i);
        si = lua_tointegerx(L, -1, &isnum);
        lua_pop(L, 1);
        if (!isnum || si < 1 || (size_t)si > c->nseries_dirs)
            return luaL_error(L, "plan: instance %d has no series folder", (int)i);
        c->buf.len = 0;
        if (dbuf_add(&c->buf, c->series_dirs[si - 1], strlen(c->series_dirs[si - 1])))
            return luaL_error(L, "out of memory");
        lua_rawgeti(L, 7, i);
        add_components(L, &c->buf, -1, "file name", AR_NAME_MAX);
        lua_pop(L, 1);
        f->rel_path = own(L, c, c->buf.p, c->buf.len);
        p->n = (size_t)i;
    }
    if (unknown_size)
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
static char *suffixed(const char *rel, unsigned long k)
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
    s = malloc(out + 1);
    if (!s)
        return NULL;
    memcpy(s, rel, dirlen);
    memcpy(s + dirlen, last, baselen);
    memcpy(s + dirlen + baselen, suffix, strlen(suffix));
    memcpy(s + dirlen + baselen + strlen(suffix), dot, extlen);
    s[out] = '\0';
    return s;
}

static int dedupe(ar_plan *p, strvec *owned)
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
            char *cand = suffixed(rel, k);
            if (!cand)
                goto out;
            if (strset_has(&orig, cand) || strset_has(&claimed, cand)) {
                free(cand);
                continue;
            }
            if (strvec_push(owned, cand)) {
                free(cand);
                goto out;
            }
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
    size_t i;
    int rc;

    memset(out, 0, sizeof *out);
    memset(&c, 0, sizeof c);
    if (rule >= e->nrules || !e->rules[rule].ok)
        return ar_seterr(err, errlen, AR_ERR, "no loaded rule #%zu", rule);
    if (!st)
        return ar_seterr(err, errlen, AR_ERR, "no study snapshot");
    c.owned = calloc(1, sizeof *c.owned);
    if (!c.owned)
        return ar_seterr(err, errlen, AR_ENOMEM, "out of memory");
    out->owned_ = c.owned;
    c.rule = rule;
    c.series = series_id;
    c.study = (lua_Integer)ar_study_handle(st);
    c.plan = out;

    rc = ar_rule_call(e, rule, plan_door, &c, msg, sizeof msg);
    if (rc)
        rc = ar_seterr(err, errlen, rc == AR_ENOMEM ? AR_ENOMEM : AR_ERULE, "rule %s: plan: %s",
                       e->rules[rule].name, msg);
    else if (dedupe(out, c.owned))
        rc = ar_seterr(err, errlen, AR_ENOMEM, "out of memory while naming files");

    for (i = 0; i < c.nseries_dirs; i++)
        free(c.series_dirs[i]);
    free(c.series_dirs);
    free(c.buf.p);
    if (rc)
        ar_plan_free(out);
    return rc;
}

void ar_plan_free(ar_plan *p)
{
    strvec *sv;
    size_t i;

    if (!p)
        return;
    sv = p->owned_;
    if (sv) {
        for (i = 0; i < sv->n; i++)
            free(sv->v[i]);
        free(sv->v);
        free(sv);
    }
    free(p->folder);
    free(p->files);
    memset(p, 0, sizeof *p);
}
