/* cases.c - see cases.h.  Runs the rule cases of tests/cases.
 *
 * Per case: load the rule into a fresh engine (bindings/engine.h only),
 * check load errors, the active flag and the compiled source, set the
 * fixture as the current study, evaluate every level, and compare the
 * verdicts, the reason, per-series verdicts and the export plan of the first
 * match with expect.json.  A JSON rule's compiled Lua is saved to a
 * temporary folder and run as a Lua rule of its own: same verdicts, same plan.
 */
#include "cases.h"

#include <dirent.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <lauxlib.h>
#include <lua-cjson.h>
#include <lua.h>
#include <lualib.h>

#include "../core/err.h"
#include "engine.h"

#define MSG 2048

/* ---- small helpers ------------------------------------------------------- */

static char *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    char *buf = NULL;
    long size;

    if (!f)
        return NULL;
    if (fseek(f, 0, SEEK_END) != 0 || (size = ftell(f)) < 0 || fseek(f, 0, SEEK_SET) != 0)
        goto out;
    buf = malloc((size_t)size + 1);
    if (!buf)
        goto out;
    if (fread(buf, 1, (size_t)size, f) != (size_t)size) {
        free(buf);
        buf = NULL;
        goto out;
    }
    buf[size] = '\0';
    if (len)
        *len = (size_t)size;
out:
    fclose(f);
    return buf;
}

static int exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0;
}

static int cmp_names(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Decode JSON text with lua-cjson; leaves the value on the stack.
 * Returns 0 on success, else writes the message. */
static int json_decode(lua_State *L, const char *text, size_t len, char *msg, size_t msglen)
{
    lua_getglobal(L, "cjson");
    lua_getfield(L, -1, "decode");
    lua_remove(L, -2);
    lua_pushlstring(L, text, len);
    if (lua_pcall(L, 1, 1, 0) != LUA_OK) {
        snprintf(msg, msglen, "invalid JSON: %s", lua_tostring(L, -1));
        lua_pop(L, 1);
        return -1;
    }
    return 0;
}

/* expect[key] as a string (NULL when absent); valid while expect is on the stack. */
static const char *get_str(lua_State *L, int t, const char *key)
{
    const char *s = NULL;
    lua_getfield(L, t, key);
    if (lua_type(L, -1) == LUA_TSTRING)
        s = lua_tostring(L, -1);
    lua_pop(L, 1); /* the string stays alive: it is referenced by the table */
    return s;
}

/* expect[key] as a boolean: -1 absent, 0 false, 1 true. */
static int get_bool(lua_State *L, int t, const char *key)
{
    int v = -1;
    lua_getfield(L, t, key);
    if (lua_type(L, -1) == LUA_TBOOLEAN)
        v = lua_toboolean(L, -1);
    lua_pop(L, 1);
    return v;
}

static long get_int(lua_State *L, int t, const char *key)
{
    long v = -1;
    lua_getfield(L, t, key);
    if (lua_type(L, -1) == LUA_TNUMBER)
        v = (long)lua_tonumber(L, -1);
    lua_pop(L, 1);
    return v;
}

/* The Orthanc id of a series given by SeriesInstanceUID or id, from the
 * decoded fixture at index fx.  NULL if unknown. */
static const char *series_id_of(lua_State *L, int fx, const char *key)
{
    const char *found = NULL;
    lua_Integer i, n;

    lua_getfield(L, fx, "series");
    if (lua_type(L, -1) != LUA_TTABLE) {
        lua_pop(L, 1);
        return NULL;
    }
    n = (lua_Integer)lua_rawlen(L, -1);
    for (i = 1; i <= n && !found; i++) {
        const char *id, *uid = NULL;
        lua_rawgeti(L, -1, i);              /* stack: series, s */
        lua_getfield(L, -1, "ID");          /* stack: series, s, id */
        id = lua_tostring(L, -1);
        lua_getfield(L, -2, "MainDicomTags"); /* stack: series, s, id, tags */
        if (lua_type(L, -1) == LUA_TTABLE) {
            lua_getfield(L, -1, "SeriesInstanceUID");
            uid = lua_tostring(L, -1);
            lua_pop(L, 1);
        }
        if (id && (strcmp(id, key) == 0 || (uid && strcmp(uid, key) == 0)))
            found = id; /* alive: referenced by the fixture table */
        lua_pop(L, 3);
    }
    lua_pop(L, 1);
    return found;
}

/* ---- one case ------------------------------------------------------------ */

typedef struct case_run {
    const char *dir;     /* the case folder */
    ar_study *study;     /* the fixture's snapshot in the case's engine */
    char msg[MSG];       /* why it failed */
} case_run;

static int fail_case(case_run *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static int fail_case(case_run *c, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->msg, sizeof c->msg, fmt, ap);
    va_end(ap);
    return -1;
}

static const ar_verdict *first_matched(const ar_verdict *v, size_t n)
{
    size_t i;
    for (i = 0; i < n; i++)
        if (v[i].matched && !v[i].error)
            return &v[i];
    return NULL;
}

/* Check the plan of the first match against folder/file/file_count. */
static int check_plan(case_run *c, ar_engine *e, lua_State *L, int ex, const ar_verdict *v, size_t nv)
{
    const char *folder = get_str(L, ex, "folder"), *file = get_str(L, ex, "file");
    long file_count = get_int(L, ex, "file_count");
    const ar_verdict *m;
    ar_plan plan;
    char err[MSG];
    int rc = 0;

    if (!folder && !file && file_count < 0)
        return 0;
    m = first_matched(v, nv);
    if (!m)
        return fail_case(c, "expected a match to plan %s", folder ? folder : "");
    memset(&plan, 0, sizeof plan);
    if (ar_engine_plan(e, c->study, m->rule, m->series_id[0] ? m->series_id : NULL, &plan, err,
                       sizeof err))
        return fail_case(c, "plan failed: %s", err);
    if (folder && strcmp(plan.folder, folder) != 0)
        rc = fail_case(c, "folder is '%s', expected '%s'", plan.folder, folder);
    else if (file && (plan.n == 0 || strcmp(plan.files[0].rel_path, file) != 0))
        rc = fail_case(c, "first file is '%s', expected '%s'",
                       plan.n ? plan.files[0].rel_path : "(no file)", file);
    else if (file_count >= 0 && (long)plan.n != file_count) {
        char got[32], want[32];
        snprintf(got, sizeof got, "%zu", plan.n);
        snprintf(want, sizeof want, "%ld", file_count);
        rc = fail_case(c, "plan has %s files, expected %s", got, want);
    }
    ar_plan_free(&plan);
    return rc;
}

/* An expected run-time error: in a verdict, else in the plan of a match. */
static int check_error(case_run *c, ar_engine *e, const char *want, const ar_verdict *v, size_t nv)
{
    size_t i;
    const char *seen = NULL;

    for (i = 0; i < nv; i++) {
        if (v[i].error) {
            if (strstr(v[i].reason, want))
                return 0;
            seen = v[i].reason;
        }
    }
    for (i = 0; i < nv && !seen; i++) {
        ar_plan plan;
        char err[MSG];
        if (!v[i].matched)
            continue;
        memset(&plan, 0, sizeof plan);
        if (ar_engine_plan(e, c->study, v[i].rule, v[i].series_id[0] ? v[i].series_id : NULL, &plan, err,
                           sizeof err) == 0) {
            ar_plan_free(&plan);
            continue;
        }
        if (strstr(err, want))
            return 0;
        return fail_case(c, "plan error '%s' does not contain '%s'", err, want);
    }
    if (seen)
        return fail_case(c, "error '%s' does not contain '%s'", seen, want);
    return fail_case(c, "expected an error containing '%s'%s", want, nv ? " (the rule ran without one)" : "");
}

static int check_series(case_run *c, lua_State *L, int ex, int fx, const ar_verdict *v, size_t nv)
{
    int rc = 0;

    lua_getfield(L, ex, "series");
    if (lua_type(L, -1) != LUA_TTABLE) {
        lua_pop(L, 1);
        return 0;
    }
    lua_pushnil(L);
    while (rc == 0 && lua_next(L, -2)) { /* stack: ..., map, key, want */
        const char *key = lua_tostring(L, -2);
        int want = lua_toboolean(L, -1);
        const char *id = key ? series_id_of(L, fx, key) : NULL;
        size_t i;
        int got = -1;

        if (!id) {
            rc = fail_case(c, "series '%s' of expect.json is not in the fixture", key);
        } else {
            for (i = 0; i < nv; i++)
                if (strcmp(v[i].series_id, id) == 0)
                    got = v[i].matched;
            if (got < 0)
                rc = fail_case(c, "no verdict for series %s (%s)", key, id);
            else if (got != want)
                rc = fail_case(c, "series %s: matched is %s", key, got ? "true" : "false");
        }
        lua_pop(L, 1);
    }
    if (rc)
        lua_pop(L, 1); /* the key left by the interrupted walk */
    lua_pop(L, 1);
    return rc;
}

static int check_source(case_run *c, ar_engine *e, lua_State *L, int ex)
{
    const char *want = get_str(L, ex, "source"), *not = get_str(L, ex, "source_not");
    char *src = NULL, err[MSG];
    int rc = 0;

    if (!want && !not)
        return 0;
    if (ar_engine_rule_source(e, 0, &src, err, sizeof err))
        return fail_case(c, "no source: %s", err);
    if (want && !strstr(src, want))
        rc = fail_case(c, "the compiled source lacks '%s'", want);
    else if (not && strstr(src, not))
        rc = fail_case(c, "the compiled source contains '%s'", not);
    free(src);
    return rc;
}

/* ---- the emitted Lua is a rule of its own --------------------------------- */

/* folder and first file of the plan of verdict m ("" when m is NULL). */
static int plan_summary(ar_engine *e, const ar_study *st, const ar_verdict *m, char *out,
                        size_t outlen)
{
    ar_plan plan;
    char err[MSG];

    out[0] = '\0';
    if (!m)
        return 0;
    memset(&plan, 0, sizeof plan);
    if (ar_engine_plan(e, st, m->rule, m->series_id[0] ? m->series_id : NULL, &plan, err,
                       sizeof err)) {
        snprintf(out, outlen, "plan error: %.1000s", err);
        return 0;
    }
    snprintf(out, outlen, "%.900s | %.900s | %zu", plan.folder, plan.n ? plan.files[0].rel_path : "", plan.n);
    ar_plan_free(&plan);
    return 0;
}

/* What `check --emit-lua` prints for a JSON rule must work as a Lua rule:
 * save it as rule.lua in a temporary folder, load it in a fresh engine and
 * compare every verdict and the first plan with the JSON rule's. */
static int check_emitted(case_run *c, ar_engine *e, const char *fixture, size_t fixture_len,
                         const ar_verdict *v, size_t nv)
{
    char tmpl[] = "/tmp/ar-case-XXXXXX", path[64], err[MSG], a[MSG], b[MSG];
    const char *files[1];
    char *src = NULL;
    ar_engine *e2 = NULL;
    ar_study *st2 = NULL;
    ar_verdict *v2 = NULL;
    size_t n2 = 0, i;
    FILE *f;
    int rc = -1;

    if (ar_engine_rule_source(e, 0, &src, err, sizeof err))
        return fail_case(c, "no source: %s", err);
    if (strstr(src, "naming_hook =")) { /* names come from the hook file: JSON only */
        free(src);
        return 0;
    }
    if (!mkdtemp(tmpl)) {
        free(src);
        return fail_case(c, "mkdtemp failed");
    }
    snprintf(path, sizeof path, "%s/rule.lua", tmpl);
    f = fopen(path, "w");
    if (!f || fputs(src, f) < 0) {
        fail_case(c, "cannot write %s", path);
        if (f)
            fclose(f);
        goto out;
    }
    fclose(f);
    files[0] = path;
    if (ar_engine_new(NULL, &e2, err, sizeof err) || ar_engine_load_rule_files(e2, files, 1, err, sizeof err)) {
        fail_case(c, "emitted Lua: %s", err);
        goto out;
    }
    if (!ar_engine_rule(e2, 0)->ok) {
        fail_case(c, "the emitted Lua does not load as a Lua rule: %s", ar_engine_rule(e2, 0)->error);
        goto out;
    }
    if (ar_engine_set_study_fixture(e2, fixture, fixture_len, &st2, err, sizeof err) ||
        ar_engine_evaluate(e2, st2, NULL, 1, &v2, &n2, err, sizeof err)) {
        fail_case(c, "emitted Lua: %s", err);
        goto out;
    }
    if (n2 != nv) {
        fail_case(c, "the emitted Lua gives %zu verdicts, the JSON rule %zu", n2, nv);
        goto out;
    }
    for (i = 0; i < nv; i++) {
        if (v2[i].matched != v[i].matched || v2[i].error != v[i].error ||
            strcmp(v2[i].series_id, v[i].series_id) != 0) {
            fail_case(c, "the emitted Lua decides %s differently", v[i].series_id[0] ? v[i].series_id : "the study");
            goto out;
        }
    }
    plan_summary(e, c->study, first_matched(v, nv), a, sizeof a);
    plan_summary(e2, st2, first_matched(v2, n2), b, sizeof b);
    if (strcmp(a, b) != 0) {
        fail_case(c, "the emitted Lua plans '%s', the JSON rule '%s'", b, a);
        goto out;
    }
    rc = 0;
out:
    free(v2);
    ar_study_free(st2);
    ar_engine_free(e2);
    remove(path);
    rmdir(tmpl);
    free(src);
    return rc;
}

static int run_case(case_run *c, lua_State *L)
{
    char path[4096], rule_path[4096], err[MSG];
    const char *files[1];
    char *text = NULL, *fixture = NULL;
    size_t len, fixture_len, nv = 0;
    ar_engine *e = NULL;
    ar_verdict *v = NULL;
    const ar_rule_info *info;
    const char *want;
    int top = lua_gettop(L), ex, fx, rc = -1, b;

    /* expect.json */
    snprintf(path, sizeof path, "%s/expect.json", c->dir);
    text = read_file(path, &len);
    if (!text) {
        fail_case(c, "cannot read %s", path);
        goto out;
    }
    if (json_decode(L, text, len, c->msg, sizeof c->msg))
        goto out;
    ex = lua_gettop(L);
    if (!lua_istable(L, ex)) {
        fail_case(c, "expect.json is not an object");
        goto out;
    }

    /* the rule */
    snprintf(rule_path, sizeof rule_path, "%s/rule.json", c->dir);
    if (!exists(rule_path))
        snprintf(rule_path, sizeof rule_path, "%s/rule.lua", c->dir);
    if (!exists(rule_path)) {
        fail_case(c, "no rule.json or rule.lua");
        goto out;
    }
    if (ar_engine_new(NULL, &e, err, sizeof err)) {
        fail_case(c, "engine: %s", err);
        goto out;
    }
    files[0] = rule_path;
    if (ar_engine_load_rule_files(e, files, 1, err, sizeof err)) {
        fail_case(c, "load: %s", err);
        goto out;
    }
    if (ar_engine_rule_count(e) != 1) {
        fail_case(c, "expected exactly one loaded rule");
        goto out;
    }
    info = ar_engine_rule(e, 0);
    want = get_str(L, ex, "load_error");
    if (want) {
        if (info->ok)
            fail_case(c, "the rule loaded, expected a load error containing '%s'", want);
        else if (!strstr(info->error, want))
            fail_case(c, "load error '%s' does not contain '%s'", info->error, want);
        else
            rc = 0;
        goto out;
    }
    if (!info->ok) {
        fail_case(c, "load error: %s", info->error);
        goto out;
    }
    if (strcmp(info->name, "rule") != 0) {
        fail_case(c, "rule name is '%s', expected '%s'", info->name, "rule");
        goto out;
    }
    if (check_source(c, e, L, ex))
        goto out;
    b = get_bool(L, ex, "active");
    if (b >= 0 && b != info->active) {
        fail_case(c, "active is %s", info->active ? "true" : "false");
        goto out;
    }

    /* the study */
    want = get_str(L, ex, "fixture");
    if (want && want[0] == '/')
        snprintf(path, sizeof path, "%s", want);
    else
        snprintf(path, sizeof path, "%s/%s", c->dir, want ? want : "fixture.json");
    fixture = read_file(path, &fixture_len);
    if (!fixture) {
        fail_case(c, "cannot read the fixture %s", path);
        goto out;
    }
    if (json_decode(L, fixture, fixture_len, c->msg, sizeof c->msg))
        goto out;
    fx = lua_gettop(L);
    if (ar_engine_set_study_fixture(e, fixture, fixture_len, &c->study, err, sizeof err)) {
        fail_case(c, "fixture: %s", err);
        goto out;
    }

    /* the verdicts */
    if (ar_engine_evaluate(e, c->study, NULL, 1, &v, &nv, err, sizeof err)) {
        fail_case(c, "evaluate: %s", err);
        goto out;
    }
    want = get_str(L, ex, "error");
    if (want) {
        rc = check_error(c, e, want, v, nv);
        goto out;
    }
    for (len = 0; len < nv; len++) {
        if (v[len].error) {
            fail_case(c, "unexpected error: %s", v[len].reason);
            goto out;
        }
    }
    b = get_bool(L, ex, "matched");
    if (b >= 0 && (first_matched(v, nv) != NULL) != b) {
        fail_case(c, "matched is %s (reason: %s)", b ? "false" : "true",
                  nv && v[0].reason[0] ? v[0].reason : "none");
        goto out;
    }
    want = get_str(L, ex, "reason");
    if (want) {
        const char *got = NULL;
        for (len = 0; len < nv && !got; len++)
            if (!v[len].matched)
                got = v[len].reason;
        if (!got || !strstr(got, want)) {
            fail_case(c, "reason '%s' does not contain '%s'", got ? got : "(none)", want);
            goto out;
        }
    }
    if (check_series(c, L, ex, fx, v, nv))
        goto out;
    if (check_plan(c, e, L, ex, v, nv))
        goto out;
    if (strstr(rule_path, ".json") && check_emitted(c, e, fixture, fixture_len, v, nv))
        goto out;
    rc = 0;
out:
    free(v);
    ar_study_free(c->study);
    c->study = NULL;
    ar_engine_free(e);
    free(fixture);
    free(text);
    lua_settop(L, top);
    return rc;
}

/* ---- the walk ------------------------------------------------------------ */

int ar_cases_run_dir(const char *root, const char *filter, ar_case_report_fn report, void *ud,
                     int *passed, int *failed, char *err, size_t errlen)
{
    char **names = NULL;
    size_t n = 0, cap = 0, i;
    struct dirent *d;
    DIR *dir = NULL;
    lua_State *L = NULL;
    int rc = AR_ERR;

    *passed = *failed = 0;
    dir = opendir(root);
    if (!dir)
        return ar_seterr(err, errlen, AR_EIO, "cannot open the cases folder %s", root);
    while ((d = readdir(dir)) != NULL) {
        char p[4096];
        struct stat st;
        if (d->d_name[0] == '.' || d->d_name[0] == '_')
            continue;
        if (filter && !strstr(d->d_name, filter))
            continue;
        if ((size_t)snprintf(p, sizeof p, "%s/%s", root, d->d_name) >= sizeof p)
            continue;
        if (stat(p, &st) != 0 || !S_ISDIR(st.st_mode))
            continue;
        if (n == cap) {
            char **nn;
            cap = cap ? cap * 2 : 128;
            nn = realloc(names, cap * sizeof *names);
            if (!nn) {
                rc = ar_seterr(err, errlen, AR_ENOMEM, "out of memory");
                goto out;
            }
            names = nn;
        }
        names[n] = strdup(d->d_name);
        if (!names[n]) {
            rc = ar_seterr(err, errlen, AR_ENOMEM, "out of memory");
            goto out;
        }
        n++;
    }
    if (n == 0) {
        rc = ar_seterr(err, errlen, AR_ERR, "no case under %s%s%s", root,
                       filter ? " matching " : "", filter ? filter : "");
        goto out;
    }
    qsort(names, n, sizeof *names, cmp_names);

    /* the decoder state: trusted, never sees a rule */
    L = luaL_newstate();
    if (!L) {
        rc = ar_seterr(err, errlen, AR_ENOMEM, "cannot create a Lua state");
        goto out;
    }
    luaL_requiref(L, LUA_GNAME, luaopen_base, 1);
    luaL_requiref(L, "cjson", luaopen_cjson, 1);
    lua_settop(L, 0);

    for (i = 0; i < n; i++) {
        case_run c;
        char dirpath[8192];
        snprintf(dirpath, sizeof dirpath, "%s/%s", root, names[i]);
        c.dir = dirpath;
        c.study = NULL;
        c.msg[0] = '\0';
        int ok = run_case(&c, L) == 0;
        if (ok)
            (*passed)++;
        else
            (*failed)++;
        if (report)
            report(ud, names[i], ok, c.msg);
    }
    rc = AR_OK;
out:
    if (dir)
        closedir(dir);
    for (i = 0; i < n; i++)
        free(names[i]);
    free(names);
    if (L)
        lua_close(L);
    return rc;
}
