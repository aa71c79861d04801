/* engine.h - the rule engine as the C side sees it (the only door to Lua).
 *
 * An ar_engine owns one Lua 5.4 state with a counting allocator (memory cap),
 * the embedded Lua sources of rules/ (prelude, JSON->Lua compiler, loader,
 * study model, default layout), lua-cjson for JSON rule files and rules'
 * own use (study answers are decoded in C: core/snapshot.c), and the
 * loaded rules, each in its own sandbox environment (no io/os/package/debug/
 * require/dofile/loadfile, no binary chunks, unknown globals are an error).
 * Every call into Lua is protected (lua_pcall + traceback handler) and
 * bounded (instruction budget + wall-clock deadline through a count hook that
 * re-arms itself once over budget so a rule's own pcall can't swallow the
 * stop).  A failing rule yields an error for that rule only.
 *
 * Data walks forward: Orthanc's answers about a study (fetched and decoded
 * by core/: core/snapshot.c for the study, core/orthanc_json.c for
 * transport answers such as /changes) -> a study snapshot (an ar_study
 * value the caller holds); snapshot + rules ->
 * ar_verdict[]; verdict -> ar_plan (sanitised folder + files) for core/export.
 * No function here does HTTP; the caller fetches and hands over bodies.
 */
#ifndef AR_ENGINE_H
#define AR_ENGINE_H

#include <signal.h>
#include <stddef.h>
#include <stdint.h>

#include "../core/export.h"

typedef struct ar_engine ar_engine;

typedef struct ar_engine_opts {
    long long instruction_budget; /* per call into a rule; <= 0: 10,000,000 */
    long timeout_ms;              /* per call into a rule; <= 0: 2000 */
    long memory_mb;               /* whole state; <= 0: 64 */
    const char *lua_dir;          /* NULL: embedded rules only; else a folder whose
                                     <module>.lua files replace the embedded ones
                                     (development, tests) */
} ar_engine_opts;

int ar_engine_new(const ar_engine_opts *o, ar_engine **out, char *err, size_t errlen);
void ar_engine_free(ar_engine *e);

/* Where a rule's print() goes (default: ar_log INFO "rule.print").  rule is
 * the rule's name or NULL.  fn runs inside a call into Lua: it must not call
 * back into the engine.  One engine belongs to one thread. */
void ar_engine_set_print(ar_engine *e, void (*fn)(void *ud, const char *rule, const char *line),
                         void *ud);

/* Bytes the Lua state holds now. */
size_t ar_engine_memory_used(const ar_engine *e);

/* ---- rules ---------------------------------------------------------------- */

typedef struct ar_rule_info {
    char name[256];         /* file name without .json/.lua */
    char file[4096];        /* path it was loaded from */
    char kind[8];           /* "json" | "lua" */
    char check_on[16];      /* "study" | "series" */
    char action[16];        /* "download" | "forward" */
    char destination[256];  /* modality for forward, "" otherwise */
    int active;             /* IsActive */
    int priority;           /* AR_PRIORITY_* (core/state.h): urgent jobs start first in their lane */
    int unconditional;      /* a JSON rule without conditions: it matches every study/series */
    int ok;                 /* 0: broken, see error */
    char error[2048];       /* "rules/x.json: Tags[2].Operator: unknown operator 'foo' (allowed: ...)" */
} ar_rule_info;

/* Replace the loaded rules by every rule file in dir: *.json and *.lua whose
 * name does not start with "master" and does not contain "template".  Broken
 * files are kept as rules with ok=0 (reported by the caller).  Returns an
 * error only when the folder itself can't be read. */
int ar_engine_load_rules_dir(ar_engine *e, const char *dir, char *err, size_t errlen);

/* Why a file named `name` in a rules folder is not loaded although it
 * looks meant as a rule (master*, *template*, "X.JSON", "x.json.bak"), or
 * NULL (loaded, or plainly not a rule). */
const char *ar_engine_ignored_file(const char *name);

/* Replace the loaded rules by exactly these files (for `check FILE...`). */
int ar_engine_load_rule_files(ar_engine *e, const char *const *files, size_t n,
                              char *err, size_t errlen);

/* The rules loaded now, as a value: the texts of their files (and naming
 * hooks) as they were read.  Another engine (another thread) loads exactly
 * the same rules from it without reading the folder again.  Reference
 * counted and immutable: ar_engine_ruleset returns a new reference (NULL
 * when nothing was loaded), ar_ruleset_free drops one. */
typedef struct ar_ruleset ar_ruleset;
ar_ruleset *ar_engine_ruleset(ar_engine *e);
ar_ruleset *ar_ruleset_ref(ar_ruleset *s);
void ar_ruleset_free(ar_ruleset *s);
int ar_engine_load_ruleset(ar_engine *e, const ar_ruleset *s, char *err, size_t errlen);

size_t ar_engine_rule_count(const ar_engine *e);
const ar_rule_info *ar_engine_rule(const ar_engine *e, size_t i);

/* The Lua source a JSON rule compiles to (for Lua rules: the file itself).
 * *out is malloc'ed. */
int ar_engine_rule_source(ar_engine *e, size_t i, char **out, char *err, size_t errlen);

/* ---- the study snapshot ------------------------------------------------ */

/* A study snapshot is a value: the study decoded once into compact C
 * memory (core/snapshot.h) and the read-only view of it rules see.  evaluate, plan
 * and on_exported take it explicitly; a job carries its own until it ends
 * (there is no "current study").  It belongs to the engine that made it
 * (one thread) and must be freed before that engine. */
typedef struct ar_study ar_study;

/* A snapshot from the three answers /studies/<id>, /studies/<id>/series,
 * /studies/<id>/instances.  *out is NULL on failure. */
int ar_engine_set_study(ar_engine *e, const char *study, size_t study_len,
                        const char *series, size_t series_len,
                        const char *instances, size_t instances_len,
                        ar_study **out, char *err, size_t errlen);

/* Same from a fixture file's content: {"study": <answer>, "series": [...],
 * "instances": [...]} (the shapes of the three answers above). */
int ar_engine_set_study_fixture(ar_engine *e, const char *json, size_t len, ar_study **out,
                                char *err, size_t errlen);
/* The same from the fixture file at path, read in small pieces (a fixture
 * of 100,000 instances never sits in memory whole). */
int ar_engine_set_study_fixture_file(ar_engine *e, const char *path, ar_study **out, char *err,
                                     size_t errlen);

/* Drop the snapshot (NULL: nothing); a big one is collected at once. */
void ar_study_free(ar_study *s);

/* Its Orthanc id, and its series ids in study.series order. */
const char *ar_study_id(const ar_study *s);
size_t ar_study_series_count(const ar_study *s);
const char *ar_study_series_id(const ar_study *s, size_t i);
/* Is series_id one of its series? */
int ar_study_has_series(const ar_study *s, const char *series_id);
/* The decoded study itself (core/snapshot.h): tags for labels, ids. */
struct ar_snapshot;
const struct ar_snapshot *ar_study_snapshot(const ar_study *s);

/* ---- decisions ---------------------------------------------------------- */

typedef struct ar_verdict {
    size_t rule;             /* index into the loaded rules */
    char series_id[128];     /* "" for a study rule; the series for a series rule */
    int matched;
    int error;               /* 1: the rule failed; message in reason */
    char reason[1024];       /* why it did not match / the error */
} ar_verdict;

/* Evaluate every ok+active rule against study s: one verdict per
 * study rule, one per (series rule, series).  only_series: if not NULL,
 * series rules are evaluated for that series only and study rules are
 * skipped (a StableSeries change); if NULL, series rules are skipped (a
 * StableStudy change) unless all_levels is set.  *out malloc'ed. */
int ar_engine_evaluate(ar_engine *e, const ar_study *s, const char *only_series, int all_levels,
                       ar_verdict **out, size_t *n, char *err, size_t errlen);

/* The export plan of a matched (rule, series_id) on study s:
 * folder = "<rule>/<name...>" (every component sanitised), files with
 * sanitised relative paths, expected sizes and instance ids. */
typedef struct ar_plan {
    char *folder;              /* malloc'ed */
    ar_export_file *files;     /* malloc'ed array */
    size_t n;
    long long total_bytes;     /* -1 if any size unknown */
    void *owned_;              /* internal storage of the strings */
} ar_plan;

int ar_engine_plan(ar_engine *e, const ar_study *s, size_t rule, const char *series_id,
                   ar_plan *out, char *err, size_t errlen);
void ar_plan_free(ar_plan *p);

/* Call the rule's on_exported(study, path) hook if it has one. */
int ar_engine_on_exported(ar_engine *e, const ar_study *s, size_t rule, const char *series_id,
                          const char *path, char *err, size_t errlen);

/* ---- tools: test, backtest, fire, REPL ------------------------------------- */

/* Evaluate one loaded, usable rule against study s whether it is active or
 * not (a dry run of a rule not yet switched on): series_id is the series a
 * series rule decides, NULL for a study rule.  Fills *out like
 * ar_engine_evaluate; a rule error is a verdict with error=1, not a failure. */
int ar_engine_evaluate_one(ar_engine *e, const ar_study *s, size_t rule, const char *series_id,
                           ar_verdict *out, char *err, size_t errlen);

/* A flag a signal handler sets (SIGINT in the REPL): the budget's count hook
 * checks it, so the running call stops like one over budget ("interrupted")
 * even inside a rule's pcall.  The caller clears it.  NULL: none. */
void ar_engine_set_interrupt(ar_engine *e, volatile sig_atomic_t *flag);

#endif
