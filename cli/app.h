/* app.h - what every subcommand shares: configuration, logger, Orthanc
 * client, state database and rule engine, opened on demand.
 *
 * Exit codes of the program: 0 ok, 1 a job/rule/check failed, 2 usage or
 * configuration error.
 */
#ifndef AR_APP_H
#define AR_APP_H

#include <signal.h>
#include <stdint.h>

#include "../bindings/engine.h"
#include "../core/config.h"
#include "../core/http.h"
#include "../core/state.h"

enum { AR_EXIT_OK = 0, AR_EXIT_FAIL = 1, AR_EXIT_USAGE = 2 };

typedef struct ar_app {
    ar_config cfg;
    ar_http *http;
    ar_state *state;
    ar_engine *engine;
    uint64_t rules_sig;          /* fingerprint of the rules folder at last load */
    uint64_t rules_gen;          /* bumped by each load of the rules folder */
    volatile sig_atomic_t *stop; /* set by SIGINT/SIGTERM */
    volatile sig_atomic_t *reload; /* set by SIGHUP */
    int decisions_failed;        /* stable events that could not be decided (logged) */
    uint64_t jobs_recorded;      /* jobs the watcher put in the ledger (wakes the workers) */
    int64_t orthanc_last;        /* Orthanc's last change seen by the loop, -1 unknown */
    /* optional progress of a download job (`fire` draws a bar with it) */
    void (*progress)(void *ud, size_t files_done, size_t files_total, long long bytes_done);
    void *progress_ud;
    int lock_fd;                 /* the daemon's hold on its state folder (held: > 0) */
} ar_app;

/* Load configuration (path may be NULL) and set up logging.  AR_EXIT_USAGE on error. */
int ar_app_config(ar_app *a, const char *config_path);
/* The Orthanc client settings of the configuration (for extra clients). */
ar_http_opts ar_app_http_opts(const ar_app *a);
int ar_app_open_http(ar_app *a);
int ar_app_open_state(ar_app *a);
/* The ledger only if it exists (jobs, retry, history: never create one);
 * AR_EXIT_USAGE with a message naming the folder otherwise. */
int ar_app_open_existing_state(ar_app *a);
int ar_app_open_engine(ar_app *a);
/* The daemon's exclusive hold on its state folder (core/statelock.h):
 * AR_EXIT_USAGE naming the other daemon's pid when one holds it. */
int ar_app_lock_state(ar_app *a);
/* (Re)load every rule of the rules folder, logging each broken one once.
 * AR_EXIT_USAGE when the folder itself cannot be read. */
int ar_app_load_rules(ar_app *a);
/* Reload when the rules folder changed since the last load (or forced). */
void ar_app_maybe_reload_rules(ar_app *a, int force);
/* SIGHUP: re-read the configuration (same file, current environment); on an
 * error keep the running one.  state_dir changes need a restart. */
int ar_app_reload_config(ar_app *a);
void ar_app_close(ar_app *a);

/* A snapshot of study_id in the app's engine, from Orthanc's three answers
 * (the caller frees it with ar_study_free). */
int ar_app_load_study(ar_app *a, const char *study_id, ar_study **out, char *err,
                      size_t errlen);

/* Index of the loaded, usable rule with this name, or -1. */
long ar_app_find_rule(ar_app *a, const char *name);

/* Signal handling: SIGINT/SIGTERM set *stop, SIGHUP sets *reload. */
void ar_signals_install(ar_app *a);

/* Subcommands. argv[0] is the subcommand name. */
int ar_cmd_run(int argc, char **argv);
int ar_cmd_check(int argc, char **argv);
int ar_cmd_jobs(int argc, char **argv);
int ar_cmd_retry(int argc, char **argv);
int ar_cmd_status(int argc, char **argv);
int ar_cmd_test(int argc, char **argv);
int ar_cmd_snapshot(int argc, char **argv);
int ar_cmd_backtest(int argc, char **argv);
int ar_cmd_fire(int argc, char **argv);
int ar_cmd_repl(int argc, char **argv);

#endif
