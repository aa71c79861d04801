/* toolkit.h - what the rule workbench commands share (test, snapshot,
 * backtest, fire, repl): finding a study by Orthanc id or StudyInstanceUID,
 * making it the engine's current study, picking rules, where a match would
 * be exported (with the collision the state database predicts), a progress
 * bar for terminals, sizes for humans.
 */
#ifndef AR_TOOLKIT_H
#define AR_TOOLKIT_H

#include <stddef.h>

#include "../core/orthanc.h"
#include "app.h"

/* ref: an Orthanc study id, or a StudyInstanceUID (POST /tools/lookup).
 * Writes the Orthanc id.  AR_ENOTFOUND when no study has it. */
int ar_tool_resolve_study(ar_app *a, const char *ref, char *id, size_t idlen, char *err,
                          size_t errlen);

/* Resolve ref and fetch the three answers of the study. */
int ar_tool_fetch_study(ar_app *a, const char *ref, ar_study_answers *ans, char *err,
                        size_t errlen);

/* Whole file into *out (malloc'ed, NUL-terminated). */
int ar_tool_read_file(const char *path, char **out, size_t *len, char *err, size_t errlen);

/* Load the rules named on the command line: none = the rules folder; names
 * of rules in the rules folder; or paths of rule files (an argument with a
 * '/' or a .json/.lua suffix that exists).  *idx (malloc'ed) lists the
 * chosen rules.  A broken or unknown rule is an error naming it. */
int ar_tool_load_rules(ar_app *a, const char *const *names, size_t n, size_t **idx,
                       size_t *nidx, char *err, size_t errlen);

/* Open the state database only if it already exists (a dry run never makes
 * one).  Returns AR_OK with a->state NULL when there is none. */
int ar_tool_open_state_if_any(ar_app *a, char *err, size_t errlen);

/* Where the daemon would export (rule, series) of the current study:
 * the plan's folder as the daemon fits it; with a state database, the
 * folder it would really get (*collision = 1 when another study owns the
 * plain one; its owner key in holder).  files/bytes from the plan. */
typedef struct ar_target {
    char folder[4096];     /* the plan's folder */
    char actual[4096];     /* the folder it would get (== folder without collision) */
    int collision;
    char holder[512];
    size_t files;
    long long bytes;       /* -1 unknown */
} ar_target;

int ar_tool_target(ar_app *a, const ar_study *st, size_t rule, const char *series_id,
                   ar_target *t, char *err, size_t errlen);

/* mkdir -p (mode 0755). */
int ar_tool_mkdirs(const char *path, char *err, size_t errlen);

/* "1.2 MB" */
const char *ar_tool_human_bytes(long long n, char *buf, size_t len);

/* A one-line progress bar on stderr, drawn only when stderr is a terminal. */
typedef struct ar_progress {
    int on;
    double last;
    const char *what;
} ar_progress;

void ar_progress_start(ar_progress *p, const char *what);
/* total_bytes < 0: unknown. */
void ar_progress_draw(ar_progress *p, size_t done, size_t total, long long bytes,
                      long long total_bytes, int force);
void ar_progress_end(ar_progress *p);

#endif
