/* engine_int.h - what the bindings/ C files share behind engine.h.
 *
 * Private to bindings/: the ar_engine struct, the counting allocator
 * (lalloc.c), the instruction/time budget (budget.c) and the one protected
 * door into Lua (door.c).  Nothing outside bindings/ includes this.
 *
 * The door: every call into Lua is `ar_door(e, fn, ctx, ...)`.  fn is a C
 * function run under lua_pcall with a message handler; it receives ctx as a
 * light userdata (index 1) and does ALL the Lua work of one operation there
 * (pushing arguments, calling the host function, copying results into C
 * memory owned by ctx), so no Lua API call that can raise ever runs outside
 * protection.  On failure the caller frees whatever ctx holds.
 */
#ifndef AR_ENGINE_INT_H
#define AR_ENGINE_INT_H

#include <lua.h>
#include <signal.h>
#include <stddef.h>
#include <time.h>

#include "engine.h"

/* ---- lalloc.c: lua_Alloc with a cap -------------------------------------- */

typedef struct ar_lalloc {
    size_t used;   /* bytes currently allocated by the state */
    size_t cap;    /* refuse growth past this (0 = no cap) */
    size_t peak;
    size_t refused; /* allocations refused since creation */
    size_t failed;  /* ... refused again after Lua's emergency collection:
                       each one raised "not enough memory" somewhere */
    const void *last_ptr; /* the last refused request, to recognise the retry */
    size_t last_osize, last_nsize;
} ar_lalloc;

void *ar_lalloc_fn(void *ud, void *ptr, size_t osize, size_t nsize);

/* ---- budget.c: count hook + deadline ------------------------------------ */

enum { AR_BUDGET_OK = 0, AR_BUDGET_INSNS = 1, AR_BUDGET_TIME = 2, AR_BUDGET_INTR = 3 };

typedef struct ar_budget {
    long long limit;          /* instructions per call */
    long timeout_ms;          /* wall clock per call */
    long long used;           /* instructions counted in this call */
    struct timespec deadline;
    int tripped;              /* AR_BUDGET_* */
    char where[128];          /* "rules/x.lua:3" where it tripped */
    volatile sig_atomic_t *interrupt; /* set by a signal handler: stop now (NULL: none) */
} ar_budget;

void ar_budget_arm(lua_State *L, ar_budget *b);
/* Add renew_budget() (a fresh budget for the next hook call of the running
 * call; host code only) to the table at index t (M.c). */
void ar_budget_register(lua_State *L, int t);
/* Removes the hook; returns b->tripped. */
int ar_budget_disarm(lua_State *L, ar_budget *b);
/* "exceeded instruction budget (N instructions) at rules/x.lua:3" */
void ar_budget_message(const ar_budget *b, int tripped, char *out, size_t outlen);

/* ---- ruleset.c: the texts of a set of rules --------------------------------- */

int ar_ruleset_new(ar_ruleset **out);
/* Record a text read from path (rule: 1 for a rule file, 0 for a hook). */
int ar_ruleset_add(ar_ruleset *s, const char *path, const char *text, size_t len, int rule);
/* The text recorded for path, or NULL. */
const char *ar_ruleset_text(const ar_ruleset *s, const char *path, size_t *len);
/* The rule files, in load order (paths[0..max)); returns how many. */
size_t ar_ruleset_rules(const ar_ruleset *s, const char **paths, size_t max);

/* ---- the engine ------------------------------------------------------------ */

struct ar_engine {
    lua_State *L;
    ar_lalloc mem;
    ar_budget budget;
    int host_ref;             /* registry ref of rules/host.lua's table */
    int eval_ref;             /* registry ref of host.evaluate (hot path) */
    ar_rule_info *rules;
    size_t nrules;
    long current_rule;        /* rule being called (for print), -1 = none */
    char *lua_dir;            /* overlay folder for the rules/ modules, or NULL */
    ar_ruleset *loaded;       /* the texts of the rules loaded now */
    ar_ruleset *recording;    /* while loading from disk: what was read */
    const ar_ruleset *replay; /* while loading a set: where texts come from */
    void (*print_fn)(void *ud, const char *rule, const char *line);
    void *print_ud;
};

/* door.c: run fn(L) with ctx as its only argument, protected; budgeted calls
 * are bounded by e->budget.  Returns AR_OK, or AR_ERULE (Lua error, budget)
 * / AR_ENOMEM (allocation refused) with a one-line message in err. */
int ar_door(ar_engine *e, lua_CFunction fn, void *ctx, int budgeted, char *err, size_t errlen);

/* Inside a door function: the engine that owns L. */
ar_engine *ar_engine_of(lua_State *L);
/* Inside a door function: push host.<name> (a function). */
void ar_push_host(lua_State *L, const char *name);
/* Inside a door function: copy the string at idx into out (outlen bytes),
 * raising a Lua error naming `what` if it isn't a string or doesn't fit.
 * A nil value gives "" when optional is set. */
void ar_copy_lstr(lua_State *L, int idx, char *out, size_t outlen, const char *what, int optional);

/* evaluate.c: a budgeted door call into rule `rule` (match, hooks).  If it
 * ran out of memory and the state kept what it grabbed, the rule's globals
 * are reset to what it had after loading; if that isn't enough the rule is
 * dropped (ok=0, error says why) so one rule can't starve the others. */
int ar_rule_call(ar_engine *e, size_t rule, lua_CFunction fn, void *ctx, char *err, size_t errlen);

/* sandbox.c: add the sandbox's C helpers to the table at index t (M.c). */
void ar_sandbox_register(lua_State *L, int t);

/* lpattern.c: add pattern_guard and charge (rules/lpattern.lua) to the
 * table at index t (M.c). */
void ar_lpattern_register(lua_State *L, int t);

/* study.c: the host's handle of snapshot s (Lua integer), for door calls;
 * the snapshot helpers rules/study.lua
 * and rules/repl.lua read it with, added to the table at index t (M.c). */
long long ar_study_handle(const ar_study *s);
void ar_study_register(lua_State *L, int t);

/* lua_orthanc.c: push the REPL's Orthanc table {find, lookup, study} over h
 * (never given to rules). */
struct ar_http;
void ar_lua_orthanc_push(lua_State *L, struct ar_http *h);

/* The embedded rules/<name> source (rules/embed.cmake), or NULL. */
const char *ar_embedded_source(const char *name, size_t *len);

#endif
