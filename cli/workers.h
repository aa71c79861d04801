/* workers.h - the threads that run the ledger's jobs, lane by lane.
 *
 * The ledger is the queue: the watcher (cli/watcher.c) records jobs, the
 * workers claim them.  Each worker thread owns what it touches: its own
 * Orthanc client, its own ledger connection, and (for downloads) its own rule
 * engine, loaded with the very rule texts the watcher decided with (the
 * engine's rule set, bindings/engine.h), into which it loads the study of
 * the job it runs: a hook always sees its own job's study.
 *
 * A job starts when its lane (core/lanes.h) lets it: the storage lane runs
 * up to max_parallel_exports downloads; each FORWARD target runs up to
 * forward_concurrency forwards in Orthanc.  A forward is submitted and then
 * looked at every half second by whichever worker is free (no thread waits
 * on a remote PACS); Orthanc's job id is in the ledger, so a restart looks
 * at the same job again instead of sending twice.  A destination failure
 * takes the lane down: its jobs wait (attempts untouched) while one probe
 * retries with backoff.  Other failures are the job's: counted attempts,
 * retried with backoff up to retry_attempts.
 */
#ifndef AR_WORKERS_H
#define AR_WORKERS_H

#include "app.h"
#include "daemon.h"

typedef struct ar_workers ar_workers;

/* Start the workers for app a (its configuration is copied; the stop flag
 * is shared).  once: every PENDING job is due now, and each runs at most
 * once in this run (a retry waits for the next run). */
int ar_workers_start(ar_app *a, int once, ar_workers **out, char *err, size_t errlen);

/* The watcher recorded jobs, reloaded the configuration or the rules
 * (rules_gen: then the workers take the rule texts the engine `rules`
 * loaded, never the folder as it is by then). */
void ar_workers_kick(ar_workers *w);
void ar_workers_set_config(ar_workers *w, const ar_config *cfg, uint64_t rules_gen,
                           ar_engine *rules);

/* Orthanc was found unreachable (1) or answering (0) at time as_of (by the
 * watcher, or by a worker whose download met an outage): while paused no
 * job starts, so an outage does not burn every job's attempts.  A "back"
 * older than the last pause is ignored. */
void ar_workers_pause(ar_workers *w, int paused, double as_of);

/* --once: wait until no job can start and none runs (a down lane's jobs
 * are left waiting), or until a stop. */
void ar_workers_drain(ar_workers *w);

/* Stop (running transfers end at the stop flag, if set) and join. */
void ar_workers_stop(ar_workers *w);

/* Outcome counts since start (added into st). */
void ar_workers_stats(ar_workers *w, ar_run_stats *st);

/* The lane table (for status). */
struct ar_lanes *ar_workers_lanes(ar_workers *w);

#endif
