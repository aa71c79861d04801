/* repl.c - see repl.h.
 *
 * Setup (one unbudgeted door call): a module table M of the REPL's own with
 * lua-cjson, the C helpers below (M.c), private instances of the embedded
 * lpattern, prelude, sandbox, study and layout modules (so REPL globals and studies
 * never touch the daemon's host state), M.orthanc (lua_orthanc.c) and the
 * fixture text; then rules/repl.lua is run with M and its table kept in the
 * registry.  Each complete chunk is one budgeted door call to repl.feed.
 * The helpers read the engine's rules (ar_rule_info, host.rule), sanitise
 * export folders like bindings/plan.c and cli/jobs.c do, ask the state
 * database which folder a claim would get, and reload the rules folder
 * (re-arming the line's budget afterwards: loading runs its own budgeted
 * calls).
 */
#include "repl.h"

#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>
#include <lua-cjson.h>

#include "../core/err.h"
#include "../core/sanitize.h"
#include "engine_int.h"

typedef struct { const char *name; const char *data; size_t len; } ar_embedded_file;
extern const ar_embedded_file ar_embedded_lua[];

struct ar_repl {
    ar_engine *e;
    int ref;                 /* registry ref of rules/repl.lua's table */
    ar_http *http;
    ar_state *state;
    char *rules_dir;
    FILE *out;
    char *buf;               /* the chunk being typed */
    size_t len, cap;
};

const char *ar_embedded_source(const char *name, size_t *len)
{
    for (const ar_embedded_file *f = ar_embedded_lua; f->name; f++)
        if (strcmp(f->name, name) == 0) {
            *len = f->len;
            return f->data;
        }
    return NULL;
}

static ar_repl *repl_of(lua_State *L)
{
    return lua_touserdata(L, lua_upvalueindex(1));
}

/* ---- M.c: output ---------------------------------------------------------- */

static int c_write(lua_State *L)
{
    size_t len;
    const char *s = luaL_checklstring(L, 1, &len);
    ar_repl *r = repl_of(L);
    fwrite(s, 1, len, r->out);
    fflush(r->out);
    return 0;
}

static int c_print(lua_State *L)
{
    c_write(L);
    fputc('\n', repl_of(L)->out);
    fflush(repl_of(L)->out);
    return 0;
}

/* ---- M.c: rules ------------------------------------------------------------ */

static void push_info(lua_State *L, const ar_rule_info *ri)
{
    lua_createtable(L, 0, 10);
    lua_pushstring(L, ri->name);
    lua_setfield(L, -2, "name");
    lua_pushstring(L, ri->file);
    lua_setfield(L, -2, "file");
    lua_pushstring(L, ri->kind);
    lua_setfield(L, -2, "kind");
    lua_pushboolean(L, ri->ok);
    lua_setfield(L, -2, "ok");
    if (ri->ok) {
        lua_pushstring(L, ri->check_on);
        lua_setfield(L, -2, "check_on");
        lua_pushstring(L, ri->action);
        lua_setfield(L, -2, "action");
        lua_pushboolean(L, ri->active);
        lua_setfield(L, -2, "active");
        if (ri->destination[0]) {
            lua_pushstring(L, ri->destination);
            lua_setfield(L, -2, "destination");
        }
    } else {
        lua_pushstring(L, ri->error);
        lua_setfield(L, -2, "error");
    }
}

/* rules() -> { info, ... } */
static int c_rules(lua_State *L)
{
    ar_engine *e = repl_of(L)->e;
    lua_createtable(L, (int)e->nrules, 0);
    for (size_t i = 0; i < e->nrules; i++) {
        push_info(L, &e->rules[i]);
        lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
    return 1;
}

/* rule_index(name) -> index, info | nil, message */
static int c_rule_index(lua_State *L)
{
    ar_engine *e = repl_of(L)->e;
    const char *name = luaL_checkstring(L, 1);
    luaL_Buffer b;

    for (size_t i = 0; i < e->nrules; i++) {
        if (strcmp(e->rules[i].name, name) == 0) {
            lua_pushinteger(L, (lua_Integer)i);
            push_info(L, &e->rules[i]);
            return 2;
        }
    }
    lua_pushnil(L);
    luaL_buffinit(L, &b);
    luaL_addstring(&b, "no rule named '");
    luaL_addstring(&b, name);
    luaL_addstring(&b, "' (loaded:");
    for (size_t i = 0; i < e->nrules; i++) {
        luaL_addchar(&b, ' ');
        luaL_addstring(&b, e->rules[i].name);
    }
    luaL_addstring(&b, e->nrules ? ")" : " none)");
    luaL_pushresult(&b);
    return 2;
}

static int call_host(lua_State *L, const char *fn)
{
    lua_Integer i = luaL_checkinteger(L, 1);
    ar_push_host(L, fn);
    lua_pushinteger(L, i);
    lua_call(L, 1, 1);
    return 1;
}

/* rule_record(index) -> the loaded rule's record (match, name, ...) */
static int c_rule_record(lua_State *L)
{
    return call_host(L, "rule");
}

static int c_rule_source(lua_State *L)
{
    return call_host(L, "rule_source");
}

/* ---- M.c: export folders --------------------------------------------------- */

/* As bindings/plan.c: each component sanitised, the last one leaving room
 * for a collision suffix and ".OLD.WORKING" (AR_FOLDER_NAME_MAX). */

#define AR_FOLDER_MAX_COMPONENTS 33

static size_t add_component(char *out, size_t at, const char *s, size_t len, int last)
{
    char one[AR_NAME_MAX + 1];
    size_t n = ar_sanitize_component(s, len, "UNKNOWN", one, last ? AR_FOLDER_NAME_MAX : AR_NAME_MAX);
    if (at)
        out[at++] = '/';
    memcpy(out + at, one, n);
    return at + n;
}

/* sanitize_folder(rule_name, components) -> "rule/a/b" */
static int c_sanitize_folder(lua_State *L)
{
    static char out[(AR_NAME_MAX + 1) * (AR_FOLDER_MAX_COMPONENTS + 1) + 1];
    size_t len, at;
    const char *rule = luaL_checklstring(L, 1, &len);

    at = add_component(out, 0, rule, len, 0);
    if (lua_type(L, 2) == LUA_TSTRING) {
        const char *s = lua_tolstring(L, 2, &len);
        at = add_component(out, at, s, len, 1);
    } else {
        luaL_checktype(L, 2, LUA_TTABLE);
        lua_Integer n = (lua_Integer)lua_rawlen(L, 2);
        if (n > AR_FOLDER_MAX_COMPONENTS - 1)
            return luaL_error(L, "more than %d folder components", AR_FOLDER_MAX_COMPONENTS - 1);
        if (n == 0)
            at = add_component(out, at, "", 0, 1);
        for (lua_Integer i = 1; i <= n; i++) {
            lua_rawgeti(L, 2, i);
            const char *s = luaL_checklstring(L, -1, &len);
            at = add_component(out, at, s, len, i == n);
            lua_pop(L, 1);
        }
    }
    lua_pushlstring(L, out, at);
    return 1;
}

/* peek_folder(folder, owner, suffix_src) -> folder it would get, taken,
 * holder | nil (no state database) */
static int c_peek_folder(lua_State *L)
{
    ar_repl *r = repl_of(L);
    const char *rel = luaL_checkstring(L, 1), *owner = luaL_checkstring(L, 2);
    const char *src = luaL_optstring(L, 3, NULL);
    char out[4200], holder[512], err[512];
    int taken = 0;

    if (!r->state)
        return 0;
    if (ar_state_peek_folder(r->state, rel, owner, src, out, sizeof out, &taken, holder,
                             sizeof holder, err, sizeof err))
        return luaL_error(L, "%s", err);
    lua_pushstring(L, out);
    lua_pushboolean(L, taken);
    if (holder[0])
        lua_pushstring(L, holder);
    else
        lua_pushnil(L);
    return 3;
}

/* reload() -> rules loaded, broken */
static int c_reload(lua_State *L)
{
    ar_repl *r = repl_of(L);
    ar_engine *e = r->e;
    char err[1024] = "";
    int broken = 0, rc;

    if (!r->rules_dir)
        return luaL_error(L, "reload: no rules folder");
    rc = ar_engine_load_rules_dir(e, r->rules_dir, err, sizeof err);
    /* loading ran budgeted calls of its own, which disarmed the line's */
    ar_budget_arm(L, &e->budget);
    if (rc)
        return luaL_error(L, "%s", err);
    for (size_t i = 0; i < e->nrules; i++)
        broken += !e->rules[i].ok;
    lua_pushinteger(L, (lua_Integer)e->nrules);
    lua_pushinteger(L, broken);
    return 2;
}

/* ---- setup ------------------------------------------------------------------ */

typedef struct init_ctx {
    ar_repl *r;
    const ar_repl_opts *o;
} init_ctx;

static void run_module(lua_State *L, int M, const char *name)
{
    char file[64], chunk[80];
    size_t len = 0;
    const char *src;

    snprintf(file, sizeof file, "%s.lua", name);
    snprintf(chunk, sizeof chunk, "=rules/%s", file);
    src = ar_embedded_source(file, &len);
    if (!src)
        luaL_error(L, "rules/%s is missing from the build", file);
    if (luaL_loadbufferx(L, src, len, chunk, "t") != LUA_OK)
        lua_error(L);
    lua_pushvalue(L, M);
    lua_call(L, 1, 1);
    if (strcmp(name, "repl") != 0)
        lua_setfield(L, M, name);
}

static int init_door(lua_State *L)
{
    init_ctx *c = lua_touserdata(L, 1);
    static const luaL_Reg fns[] = {
        {"write", c_write},
        {"print", c_print},
        {"rules", c_rules},
        {"rule_index", c_rule_index},
        {"rule_record", c_rule_record},
        {"rule_source", c_rule_source},
        {"sanitize_folder", c_sanitize_folder},
        {"peek_folder", c_peek_folder},
        {"reload", c_reload},
        {NULL, NULL},
    };

    lua_newtable(L); /* stack: ctx, M */
    luaL_requiref(L, "cjson", luaopen_cjson, 0);
    lua_setfield(L, 2, "cjson");
    lua_newtable(L);
    lua_pushlightuserdata(L, c->r);
    luaL_setfuncs(L, fns, 1);
    ar_sandbox_register(L, -1);
    ar_lpattern_register(L, -1);
    ar_study_register(L, -1);
    lua_setfield(L, 2, "c");
    if (c->o->http) {
        ar_lua_orthanc_push(L, c->o->http);
        lua_setfield(L, 2, "orthanc");
    }
    if (c->o->fixture) {
        lua_pushlstring(L, c->o->fixture, c->o->fixture_len);
        lua_setfield(L, 2, "fixture");
        lua_pushstring(L, c->o->fixture_name ? c->o->fixture_name : "fixture");
        lua_setfield(L, 2, "fixture_name");
    }
    run_module(L, 2, "lpattern");
    run_module(L, 2, "prelude");
    run_module(L, 2, "sandbox");
    run_module(L, 2, "study");
    run_module(L, 2, "layout");
    run_module(L, 2, "repl"); /* stack: ctx, M, repl */
    if (!lua_istable(L, 3))
        return luaL_error(L, "rules/repl.lua did not return a table");
    c->r->ref = luaL_ref(L, LUA_REGISTRYINDEX);
    return 0;
}

int ar_repl_new(ar_engine *e, const ar_repl_opts *o, ar_repl **out, char *err, size_t errlen)
{
    ar_repl *r = calloc(1, sizeof *r);
    init_ctx c;
    int rc;

    *out = NULL;
    if (!r)
        return ar_seterr(err, errlen, AR_ENOMEM, "out of memory");
    r->e = e;
    r->ref = LUA_NOREF;
    r->http = o->http;
    r->state = o->state;
    r->out = o->out ? o->out : stdout;
    if (o->rules_dir && !(r->rules_dir = strdup(o->rules_dir))) {
        free(r);
        return ar_seterr(err, errlen, AR_ENOMEM, "out of memory");
    }
    c.r = r;
    c.o = o;
    if ((rc = ar_door(e, init_door, &c, 0, err, errlen))) {
        ar_repl_free(r);
        return rc;
    }
    *out = r;
    return AR_OK;
}

void ar_repl_free(ar_repl *r)
{
    if (!r)
        return;
    if (r->ref != LUA_NOREF)
        luaL_unref(r->e->L, LUA_REGISTRYINDEX, r->ref);
    free(r->rules_dir);
    free(r->buf);
    free(r);
}

/* ---- one chunk ---------------------------------------------------------------- */

typedef struct feed_ctx {
    ar_repl *r;
    int more;
} feed_ctx;

static int feed_door(lua_State *L)
{
    feed_ctx *c = lua_touserdata(L, 1);
    lua_rawgeti(L, LUA_REGISTRYINDEX, c->r->ref);
    lua_getfield(L, -1, "feed");
    lua_pushlstring(L, c->r->buf, c->r->len);
    lua_call(L, 1, 1);
    c->more = lua_type(L, -1) == LUA_TSTRING && strcmp(lua_tostring(L, -1), "more") == 0;
    return 0;
}

static int append(ar_repl *r, const char *line)
{
    size_t n = strlen(line);
    while (n && (line[n - 1] == '\n' || line[n - 1] == '\r'))
        n--;
    if (r->len + n + 2 > r->cap) {
        size_t cap = r->cap ? r->cap : 256;
        while (cap < r->len + n + 2)
            cap *= 2;
        char *nb = realloc(r->buf, cap);
        if (!nb)
            return -1;
        r->buf = nb;
        r->cap = cap;
    }
    if (r->len)
        r->buf[r->len++] = '\n';
    memcpy(r->buf + r->len, line, n);
    r->len += n;
    r->buf[r->len] = '\0';
    return 0;
}

void ar_repl_reset(ar_repl *r)
{
    r->len = 0;
    if (r->buf)
        r->buf[0] = '\0';
}

int ar_repl_feed(ar_repl *r, const char *line)
{
    feed_ctx c = {r, 0};
    char err[2048] = "";
    size_t i;

    if (append(r, line)) {
        fprintf(r->out, "error: out of memory\n");
        ar_repl_reset(r);
        return AR_REPL_DONE;
    }
    for (i = 0; i < r->len && (r->buf[i] == ' ' || r->buf[i] == '\t' || r->buf[i] == '\n'); i++)
        ;
    if (i == r->len) { /* nothing typed */
        ar_repl_reset(r);
        return AR_REPL_DONE;
    }
    if (ar_door(r->e, feed_door, &c, 1, err, sizeof err)) {
        fprintf(r->out, "error: %s\n", err);
        fflush(r->out);
        ar_repl_reset(r);
        return AR_REPL_DONE;
    }
    if (c.more)
        return AR_REPL_MORE;
    ar_repl_reset(r);
    return AR_REPL_DONE;
}
