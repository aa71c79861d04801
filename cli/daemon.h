/* daemon.h - the daemon's wiring: the watcher in this thread (changes ->
 * decisions -> ledger, cli/watcher.h), the workers in theirs (ledger ->
 * lanes -> jobs, cli/workers.h), signals, reloads and status.
 *
 * Promises: the cursor moves past a change only in the same transaction that
 * records the jobs that change caused (core/state.h), so a crash at any point
 * either redoes the decision or finds its jobs in the ledger; jobs are marked
 * done only after the final rename (core/export.h).  The watcher never waits
 * for a transfer.  Orthanc being down is logged once per outage; the loop
 * keeps its position, starts no job meanwhile and resumes by itself.
 */
#ifndef AR_DAEMON_H
#define AR_DAEMON_H

#include "app.h"

typedef struct ar_run_stats {
    int jobs_ok;
    int jobs_failed;
    int jobs_gone;
    int poll_errors;
} ar_run_stats;

/* once: process everything logged so far, run every pending job, return.
 * Returns AR_OK, or an error code when Orthanc could not be read (once). */
int ar_daemon_run(ar_app *a, int once, ar_run_stats *stats);

/* Run one job (download or forward).  Used by the loop and by `fire`. */
int ar_job_execute(ar_app *a, const ar_job *job, char *err, size_t errlen);

#endif
