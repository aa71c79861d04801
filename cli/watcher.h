/* watcher.h - the watcher: Orthanc's change log -> decisions -> the ledger.
 *
 * Runs in the daemon's main thread and owns the app's engine, client and
 * ledger connection; it never waits for a transfer (the workers run jobs,
 * cli/workers.h).  Promises: the cursor moves past a change only in the same
 * transaction that records the jobs that change caused (core/state.h); a
 * stable change that cannot be decided (a study too big for the memory cap,
 * a garbled answer, a 4xx/5xx on one of its requests) never blocks the log:
 * it becomes a decision job (lane "decide") tried again with backoff while
 * the trouble is transient, else failed and listed, retryable with `retry`.
 * Only Orthanc itself not answering stops the pass (the cursor stays).
 */
#ifndef AR_WATCHER_H
#define AR_WATCHER_H

#include "app.h"

/* One pass over the change log from the cursor to Orthanc's last change:
 * decide each stable change and record jobs, arrivals and the new cursor.
 * *outage is cleared when Orthanc answers.  AR_ENET/AR_EHTTP/AR_ENOTFOUND
 * when the change log could not be read. */
int ar_watch_changes(ar_app *a, int *outage, char *err, size_t errlen);

/* Arrivals Orthanc announced but never logged stable (restarted meanwhile):
 * decided once they are stable by Orthanc's word or by age. */
void ar_watch_arrivals(ar_app *a, int *outage);

/* Try the decision jobs due by horizon (now; the run's start for --once). */
void ar_watch_decisions(ar_app *a, double horizon);

/* The lane a rule's jobs wait in: "storage" or "modality:<destination>". */
void ar_rule_lane(const ar_rule_info *r, char *lane, size_t lanelen);

#endif
