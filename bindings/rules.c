/* rules.c - loading rule files into the engine.
 *
 * C lists and reads the files (Lua has no io); rules/loader.lua (through
 * host.load_rule) decodes/compiles/loads each one in its own sandbox
 * environment, inside a budgeted door call, and validates the table it
 * returns.  A broken file becomes a rule with ok=0 and an error that names
 * the file (and the line where one is known); the others load normally.
 * Loading replaces the previous rules; a folder that can't be read leaves
 * them in place.  The texts read are kept as the engine's rule set
 * (ruleset.c), from which another engine loads the same rules.
 */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include <lauxlib.h>

#include "../core/err.h"
#include "../core/state.h"
#include "engine_int.h"

#define AR_RULE_MAX_BYTES (4L * 1024 * 1024)

typedef struct load_ctx {
    size_t index;
    ar_rule_info *info;
    const char *path;   /* naming hook file (attach_door) */
    const char *text;
    size_t len;
    char hook[512];     /* the rule's naming_hook, relative to its folder */
} load_ctx;

static int clear_door(lua_State *L)
{
    ar_push_host(L, "clear_rules");
    lua_call(L, 0, 0);
    return 0;
}

static int load_door(lua_State *L)
{
    load_ctx *c = lua_touserdata(L, 1);

    ar_push_host(L, "load_rule");
    lua_pushinteger(L, (lua_Integer)c->index);
    lua_pushstring(L, c->info->name);
    lua_pushstring(L, c->info->file);
    lua_pushstring(L, c->info->kind);
    lua_pushlstring(L, c->text, c->len);
    lua_call(L, 5, 1); /* stack: ctx, info table */
    if (!lua_istable(L, 2))
        return luaL_error(L, "host.load_rule returned no table");
    lua_getfield(L, 2, "check_on");
    ar_copy_lstr(L, -1, c->info->check_on, sizeof c->info->check_on, "check_on", 0);
    lua_getfield(L, 2, "action");
    ar_copy_lstr(L, -1, c->info->action, sizeof c->info->action, "action", 0);
    lua_getfield(L, 2, "destination");
    ar_copy_lstr(L, -1, c->info->destination, sizeof c->info->destination, "destination", 1);
    lua_getfield(L, 2, "active");
    c->info->active = lua_toboolean(L, -1);
    lua_getfield(L, 2, "priority");
    {
        const char *p = lua_tostring(L, -1);
        c->info->priority = !p ? AR_PRIORITY_NORMAL
                            : strcmp(p, "urgent") == 0 ? AR_PRIORITY_URGENT
                            : strcmp(p, "low") == 0 ? AR_PRIORITY_LOW : AR_PRIORITY_NORMAL;
    }
    lua_getfield(L, 2, "unconditional");
    c->info->unconditional = lua_toboolean(L, -1);
    lua_getfield(L, 2, "naming_hook");
    ar_copy_lstr(L, -1, c->hook, sizeof c->hook, "naming_hook", 1);
    return 0;
}

static int attach_door(lua_State *L)
{
    load_ctx *c = lua_touserdata(L, 1);

    ar_push_host(L, "attach_hook");
    lua_pushinteger(L, (lua_Integer)c->index);
    lua_pushstring(L, c->path);
    lua_pushlstring(L, c->text, c->len);
    lua_call(L, 3, 0);
    return 0;
}

/* A hook path stays inside the rule's folder: relative, no "." or ".."
 * component. */
static int safe_relative(const char *rel)
{
    const char *p = rel;
    if (!*rel || *rel == '/')
        return 0;
    while (*p) {
        size_t n = strcspn(p, "/");
        if (n == 0 || (n == 1 && p[0] == '.') || (n == 2 && p[0] == '.' && p[1] == '.'))
            return 0;
        p += n;
        if (*p == '/')
            p++;
    }
    return 1;
}

/* Read a whole file (at most AR_RULE_MAX_BYTES). */
static int read_text(const char *path, char **out, size_t *outlen, char *err, size_t errlen)
{
    FILE *f = NULL;
    char *buf = NULL;
    size_t cap = 0, len = 0;
    int rc = AR_EIO;

    *out = NULL;
    f = fopen(path, "rb");
    if (!f)
        return ar_seterr(err, errlen, AR_EIO, "%s: %s", path, strerror(errno));
    for (;;) {
        size_t got;
        if (len + 4096 + 1 > cap) {
            char *nb;
            cap = cap ? cap * 2 : 8192;
            nb = realloc(buf, cap);
            if (!nb) {
                rc = ar_seterr(err, errlen, AR_ENOMEM, "%s: out of memory", path);
                goto out;
            }
            buf = nb;
        }
        got = fread(buf + len, 1, cap - len - 1, f);
        len += got;
        if (len > (size_t)AR_RULE_MAX_BYTES) {
            rc = ar_seterr(err, errlen, AR_EIO, "%s: larger than %ld bytes", path,
                           AR_RULE_MAX_BYTES);
            goto out;
        }
        if (got == 0) {
            if (ferror(f)) {
                rc = ar_seterr(err, errlen, AR_EIO, "%s: read error: %s", path, strerror(errno));
                goto out;
            }
            break;
        }
    }
    buf[len] = '\0';
    *out = buf;
    *outlen = len;
    buf = NULL;
    rc = AR_OK;
out:
    free(buf);
    fclose(f);
    return rc;
}

/* The text of a rule or hook file: from the set being replayed, else from
 * the disk (recorded into the set being made). */
static int rule_text(ar_engine *e, const char *path, int rule, char **out, size_t *outlen,
                     char *err, size_t errlen)
{
    int rc;
    if (e->replay) {
        size_t len = 0;
        const char *t = ar_ruleset_text(e->replay, path, &len);
        if (!t)
            return ar_seterr(err, errlen, AR_EIO, "%s: not part of the loaded rules", path);
        *out = malloc(len + 1);
        if (!*out)
            return ar_seterr(err, errlen, AR_ENOMEM, "%s: out of memory", path);
        memcpy(*out, t, len + 1);
        *outlen = len;
        return AR_OK;
    }
    if ((rc = read_text(path, out, outlen, err, errlen)))
        return rc;
    if (e->recording && ar_ruleset_add(e->recording, path, *out, *outlen, rule)) {
        free(*out);
        *out = NULL;
        return ar_seterr(err, errlen, AR_ENOMEM, "%s: out of memory", path);
    }
    return AR_OK;
}

static const char *ext_kind(const char *base)
{
    size_t n = strlen(base);
    if (n > 5 && strcmp(base + n - 5, ".json") == 0)
        return "json";
    if (n > 4 && strcmp(base + n - 4, ".lua") == 0)
        return "lua";
    return NULL;
}

static void fill_identity(ar_rule_info *r, const char *path)
{
    const char *base = strrchr(path, '/');
    const char *kind;
    size_t n;

    base = base ? base + 1 : path;
    kind = ext_kind(base);
    snprintf(r->file, sizeof r->file, "%s", path);
    snprintf(r->kind, sizeof r->kind, "%s", kind ? kind : "");
    n = strlen(base);
    if (kind)
        n -= strlen(kind) + 1;
    if (n >= sizeof r->name)
        n = sizeof r->name - 1;
    memcpy(r->name, base, n);
    r->name[n] = '\0';
}

static void load_one(ar_engine *e, size_t i)
{
    ar_rule_info *r = &e->rules[i];
    char msg[sizeof r->error];
    char *text = NULL;
    size_t len = 0, j;
    load_ctx c;
    int rc;

    r->ok = 0;
    if (strlen(r->file) + 1 >= sizeof r->file) {
        ar_seterr(r->error, sizeof r->error, AR_ERR, "%.200s...: path too long", r->file);
        return;
    }
    if (!r->kind[0]) {
        ar_seterr(r->error, sizeof r->error, AR_ERR, "%s: not a .json or .lua rule file", r->file);
        return;
    }
    for (j = 0; j < i; j++) {
        if (strcmp(e->rules[j].name, r->name) == 0) {
            ar_seterr(r->error, sizeof r->error, AR_ERR, "%s: rule name '%s' is already used by %s",
                     r->file, r->name, e->rules[j].file);
            return;
        }
    }
    if (rule_text(e, r->file, 1, &text, &len, r->error, sizeof r->error))
        return;
    c.index = i;
    c.info = r;
    c.text = text;
    c.len = len;
    c.hook[0] = '\0';
    e->current_rule = (long)i;
    rc = ar_door(e, load_door, &c, 1, msg, sizeof msg);
    free(text);
    text = NULL;
    if (!rc && c.hook[0]) {
        char path[sizeof r->file];
        const char *slash = strrchr(r->file, '/');
        int dirlen = slash ? (int)(slash - r->file) + 1 : 0;
        if (!safe_relative(c.hook)) {
            rc = ar_seterr(msg, sizeof msg, AR_ERR,
                           "%s: NamingHook '%s' must be a relative path inside the rules folder",
                           r->file, c.hook);
        } else if (snprintf(path, sizeof path, "%.*s%s", dirlen, r->file, c.hook) >=
                   (int)sizeof path) {
            rc = ar_seterr(msg, sizeof msg, AR_ERR, "%s: NamingHook path too long", r->file);
        } else if ((rc = rule_text(e, path, 0, &text, &len, msg, sizeof msg)) != AR_OK) {
            char m2[sizeof msg];
            memcpy(m2, msg, sizeof m2);
            ar_seterr(msg, sizeof msg, rc, "%s: NamingHook: %s", r->file, m2);
        } else {
            c.path = path;
            c.text = text;
            c.len = len;
            rc = ar_door(e, attach_door, &c, 1, msg, sizeof msg);
            free(text);
            text = NULL;
        }
    }
    e->current_rule = -1;
    if (rc) {
        if (strstr(msg, r->file))
            ar_seterr(r->error, sizeof r->error, AR_ERR, "%s", msg);
        else
            ar_seterr(r->error, sizeof r->error, AR_ERR, "%s: %s", r->file, msg);
        r->check_on[0] = r->action[0] = r->destination[0] = '\0';
        return;
    }
    r->ok = 1;
}

int ar_engine_load_rule_files(ar_engine *e, const char *const *files, size_t n,
                              char *err, size_t errlen)
{
    ar_rule_info *rules = NULL;
    size_t i;
    int rc;

    if (n) {
        rules = calloc(n, sizeof *rules);
        if (!rules)
            return ar_seterr(err, errlen, AR_ENOMEM, "out of memory for %zu rules", n);
    }
    rc = ar_door(e, clear_door, NULL, 0, err, errlen);
    if (rc) {
        free(rules);
        return rc;
    }
    free(e->rules);
    e->rules = rules;
    e->nrules = n;
    ar_ruleset_free(e->loaded);
    e->loaded = NULL;
    if (!e->replay && ar_ruleset_new(&e->recording) != AR_OK)
        e->recording = NULL; /* out of memory: no set to hand on */
    for (i = 0; i < n; i++)
        fill_identity(&rules[i], files[i]);
    for (i = 0; i < n; i++)
        load_one(e, i);
    e->loaded = e->recording;
    e->recording = NULL;
    lua_gc(e->L, LUA_GCCOLLECT);
    return AR_OK;
}

ar_ruleset *ar_engine_ruleset(ar_engine *e)
{
    return ar_ruleset_ref(e->loaded);
}

int ar_engine_load_ruleset(ar_engine *e, const ar_ruleset *s, char *err, size_t errlen)
{
    size_t n = ar_ruleset_rules(s, NULL, 0);
    const char **paths = calloc(n ? n : 1, sizeof *paths);
    int rc;
    if (!paths)
        return ar_seterr(err, errlen, AR_ENOMEM, "out of memory for %zu rules", n);
    ar_ruleset_rules(s, paths, n);
    e->replay = s;
    rc = ar_engine_load_rule_files(e, paths, n, err, errlen);
    e->replay = NULL;
    free(paths);
    return rc;
}

const char *ar_engine_ignored_file(const char *name)
{
    size_t n = strlen(name);
    const char *dot = strrchr(name, '.');
    if (name[0] == '.')
        return NULL; /* hidden files, ".", "..": not meant as rules */
    if (!ext_kind(name)) {
        if (dot && (!strcasecmp(dot, ".json") || !strcasecmp(dot, ".lua")))
            return "the extension must be lower-case .json or .lua: rename it to be loaded";
        if (n > 5 && (!strcasecmp(name + n - 5, ".json~") || strstr(name, ".json.") ||
                      strstr(name, ".lua.")))
            return "not a .json or .lua file (a backup or a copy?)";
        return NULL; /* not a rule at all (README, notes) */
    }
    if (strncmp(name, "master", 6) == 0)
        return "names starting with 'master' are not loaded (the original autorthanc's convention)";
    if (strstr(name, "template"))
        return "names containing 'template' are not loaded (the original autorthanc's convention)";
    return NULL;
}

static int wanted(const char *name)
{
    return name[0] != '.' && ext_kind(name) && strncmp(name, "master", 6) != 0 &&
           !strstr(name, "template");
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

int ar_engine_load_rules_dir(ar_engine *e, const char *dir, char *err, size_t errlen)
{
    DIR *d = NULL;
    struct dirent *de;
    char **paths = NULL;
    size_t n = 0, cap = 0, i;
    int rc = AR_ERR;

    d = opendir(dir);
    if (!d)
        return ar_seterr(err, errlen, AR_EIO, "rules folder %s: %s", dir, strerror(errno));
    for (;;) {
        struct stat st;
        char *p;
        size_t need;
        errno = 0;
        de = readdir(d);
        if (!de) {
            if (errno) {
                rc = ar_seterr(err, errlen, AR_EIO, "rules folder %s: %s", dir, strerror(errno));
                goto out;
            }
            break;
        }
        if (!wanted(de->d_name))
            continue;
        need = strlen(dir) + 1 + strlen(de->d_name) + 1;
        p = malloc(need);
        if (!p) {
            rc = ar_seterr(err, errlen, AR_ENOMEM, "out of memory");
            goto out;
        }
        snprintf(p, need, "%s/%s", dir, de->d_name);
        if (stat(p, &st) == 0 && !S_ISREG(st.st_mode)) {
            free(p);
            continue;
        }
        if (n == cap) {
            char **np;
            cap = cap ? cap * 2 : 32;
            np = realloc(paths, cap * sizeof *np);
            if (!np) {
                free(p);
                rc = ar_seterr(err, errlen, AR_ENOMEM, "out of memory");
                goto out;
            }
            paths = np;
        }
        paths[n++] = p;
    }
    if (n)
        qsort(paths, n, sizeof *paths, cmp_str);
    rc = ar_engine_load_rule_files(e, (const char *const *)paths, n, err, errlen);
out:
    for (i = 0; i < n; i++)
        free(paths[i]);
    free(paths);
    if (d)
        closedir(d);
    return rc;
}

size_t ar_engine_rule_count(const ar_engine *e)
{
    return e->nrules;
}

const ar_rule_info *ar_engine_rule(const ar_engine *e, size_t i)
{
    return i < e->nrules ? &e->rules[i] : NULL;
}

typedef struct source_ctx {
    size_t index;
    char *out;
} source_ctx;

static int source_door(lua_State *L)
{
    source_ctx *c = lua_touserdata(L, 1);
    size_t len;
    const char *s;

    ar_push_host(L, "rule_source");
    lua_pushinteger(L, (lua_Integer)c->index);
    lua_call(L, 1, 1);
    if (lua_type(L, -1) != LUA_TSTRING)
        return luaL_error(L, "no source for this rule");
    s = lua_tolstring(L, -1, &len);
    c->out = malloc(len + 1);
    if (!c->out)
        return luaL_error(L, "out of memory");
    memcpy(c->out, s, len + 1);
    return 0;
}

int ar_engine_rule_source(ar_engine *e, size_t i, char **out, char *err, size_t errlen)
{
    source_ctx c = {i, NULL};
    int rc;

    *out = NULL;
    if (i >= e->nrules)
        return ar_seterr(err, errlen, AR_ERR, "no rule #%zu", i);
    rc = ar_door(e, source_door, &c, 0, err, errlen);
    if (rc) {
        free(c.out);
        return rc;
    }
    *out = c.out;
    return AR_OK;
}
