/* jobs.h - one ledger job in three steps, so transfers can run side by side:
 *   prepare  (main thread: the engine and the state) the export plan, the
 *            folder claim and the free-space check, or the forward target;
 *   transfer (any thread: network and disk only, through w->http, which
 *            the caller provides and no other thread uses meanwhile);
 *            downloads only: a forward is Orthanc's job (core/forward.h);
 *   finish   (main thread) the ledger entry, the log line, on_exported.
 * "Main thread" is the thread that owns the ar_app (its engine and state):
 * each daemon worker owns one (cli/workers.c).  ar_job_execute runs the
 * three in a row on the app's own client, waiting for a forward to end. */
#ifndef AR_JOBS_H
#define AR_JOBS_H

#include "app.h"

typedef struct ar_job_work {
    ar_job job;
    long rule;
    int forward;
    char destination[256];
    char folder[AR_PATH_LEN];
    ar_plan plan;
    ar_study *study;          /* the job's own snapshot: plan and on_exported read it */
    ar_export_opts eo;
    const char *storage;
    ar_http *http;            /* set by the caller before transfer */
    double t0, seconds;
    int rc;                   /* transfer outcome */
    char err[2048];
    ar_export_result res;
} ar_job_work;

int ar_job_prepare(ar_app *a, const ar_job *job, ar_job_work *w, char *err, size_t errlen);
void ar_job_transfer(ar_job_work *w);
/* Returns the job's outcome: AR_OK (ledger updated), or the transfer's error. */
int ar_job_finish(ar_app *a, ar_job_work *w, char *err, size_t errlen);
void ar_job_work_free(ar_job_work *w);

#endif
