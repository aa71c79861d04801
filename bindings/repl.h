/* repl.h - the engine side of `autorthanc repl`: a Lua prompt in the rule
 * sandbox.
 *
 * An ar_repl lives inside an engine's Lua state: a REPL environment made
 * like a rule's (rules/sandbox.lua's new_env over the same frozen globals
 * and prelude) plus the built-ins of rules/repl.lua (studies, study, rules,
 * rule, try, name, reload, help).  Orthanc is reached only through
 * bindings/lua_orthanc.c, which the REPL gets and rules never do.  Each fed
 * chunk runs through the engine's protected door under the rules'
 * instruction budget and deadline; the engine's interrupt flag
 * (ar_engine_set_interrupt) stops it on Ctrl-C.  Input, prompts, readline
 * and signals belong to the caller (cli/cmd_repl.c).
 */
#ifndef AR_REPL_H
#define AR_REPL_H

#include <stdio.h>

#include "../core/http.h"
#include "../core/state.h"
#include "engine.h"

typedef struct ar_repl ar_repl;

typedef struct ar_repl_opts {
    ar_http *http;            /* NULL: no Orthanc (studies() and study(id) say so) */
    ar_state *state;          /* NULL: name() can't predict collisions */
    const char *rules_dir;    /* what reload() reads */
    const char *fixture;      /* --fixture text (the first current study), or NULL */
    size_t fixture_len;
    const char *fixture_name;
    FILE *out;                /* where values, print() and errors go */
} ar_repl_opts;

enum { AR_REPL_DONE = 0, AR_REPL_MORE = 1 };

int ar_repl_new(ar_engine *e, const ar_repl_opts *o, ar_repl **out, char *err, size_t errlen);
void ar_repl_free(ar_repl *r);

/* One line of input.  AR_REPL_MORE: the chunk so far is unfinished (prompt
 * for more); AR_REPL_DONE: it ran, its values or its error were printed. */
int ar_repl_feed(ar_repl *r, const char *line);

/* Forget an unfinished chunk (Ctrl-C at the prompt). */
void ar_repl_reset(ar_repl *r);

#endif
