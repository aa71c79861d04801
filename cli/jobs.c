/* jobs.c - execute one ledger job: DOWNLOAD (plan -> claim -> export) or,
 * for `fire`, FORWARD (Orthanc store job, waited for; the daemon's workers
 * track forwards without waiting, cli/workers.c). */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/statvfs.h>
#include <time.h>

#include "../core/clock.h"
#include "../core/err.h"
#include "../core/export.h"
#include "../core/forward.h"
#include "../core/log.h"
#include "../core/orthanc.h"
#include "../core/sanitize.h"
#include "daemon.h"
#include "jobs.h"

/* Refuse to start an export the storage folder has no room for (when the
 * size is known): failing before the transfer costs nothing. */
static int check_space(const char *storage, long long need, char *err, size_t errlen)
{
    struct statvfs sv;
    if (need <= 0 || statvfs(storage, &sv) != 0)
        return AR_OK; /* unknown: the writes themselves will tell */
    unsigned long long avail = (unsigned long long)sv.f_bavail * sv.f_frsize;
    /* files plus room for folder entries: one block per 64 files is ample */
    unsigned long long want = (unsigned long long)need + need / 64 + 65536;
    if (avail < want)
        return ar_seterr(err, errlen, AR_EIO,
                         "%s: %s: the export needs %llu bytes, %llu available", storage,
                         strerror(ENOSPC), want, avail);
    return AR_OK;
}

int ar_job_prepare(ar_app *a, const ar_job *job, ar_job_work *w, char *err, size_t errlen)
{
    int rc = AR_ERR;
    char owner[512];

    memset(w, 0, sizeof *w);
    w->job = *job;
    w->storage = a->cfg.storage_dir;
    w->t0 = ar_mono_now();
    w->rule = ar_app_find_rule(a, job->rule);
    if (w->rule < 0)
        return ar_seterr(err, errlen, AR_ERULE,
                         "rule '%s' is not loaded any more (deleted or broken)", job->rule);
    const ar_rule_info *ri = ar_engine_rule(a->engine, (size_t)w->rule);
    if (strcmp(job->action, "forward") == 0) {
        w->forward = 1;
        w->eo.stop = a->stop;
        snprintf(w->destination, sizeof w->destination, "%s", ri->destination);
        return AR_OK;
    }
    const char *series = strcmp(job->level, "series") == 0 ? job->resource_id : NULL;
    if ((rc = ar_app_load_study(a, job->study_id, &w->study, err, errlen)))
        goto out;
    if ((rc = ar_engine_plan(a->engine, w->study, (size_t)w->rule, series, &w->plan, err,
                             errlen)))
        goto out;
    snprintf(owner, sizeof owner, "%s|%s", job->rule, job->resource_id);
    if ((rc = ar_state_claim_folder(a->state, w->plan.folder, owner, job->resource_id, w->folder,
                                    sizeof w->folder, err, errlen)))
        goto out;
    if ((rc = check_space(a->cfg.storage_dir, w->plan.total_bytes, err, errlen)))
        goto out;
    w->eo = (ar_export_opts){
        .verify_md5 = a->cfg.verify_md5,
        .max_connections = a->cfg.max_connections,
        .fsync = a->cfg.fsync,
        .uid = a->cfg.output_uid,
        .gid = a->cfg.output_gid,
        .stop = a->stop,
        .progress = a->progress,
        .progress_ud = a->progress_ud,
    };
    rc = AR_OK;
out:
    if (rc)
        ar_job_work_free(w);
    return rc;
}

void ar_job_transfer(ar_job_work *w)
{
    w->err[0] = 0;
    if (w->forward)
        w->rc = ar_seterr(w->err, sizeof w->err, AR_ERR, "a forward is not a transfer");
    else
        w->rc = ar_export_download(w->http, w->storage, w->folder, w->plan.files, w->plan.n,
                                   &w->eo, &w->res, w->err, sizeof w->err);
    w->seconds = ar_mono_now() - w->t0;
}

int ar_job_finish(ar_app *a, ar_job_work *w, char *err, size_t errlen)
{
    int rc = w->rc;
    const ar_job *job = &w->job;
    if (rc) {
        ar_seterr(err, errlen, rc, "%s", w->err);
        return rc;
    }
    const char *path = w->forward ? w->destination : w->folder;
    if ((rc = ar_state_job_done(a->state, job->id, path, w->res.bytes, err, errlen)))
        return rc;
    ar_log_fields f = {.study = job->study_id, .rule = job->rule, .path = path,
                       .bytes = w->forward ? -1 : w->res.bytes, .seconds = w->seconds};
    if (w->forward) {
        ar_log(AR_LOG_INFO, "forward.done", &f, "%s %s sent to modality %s", job->level,
               job->resource_id, w->destination);
        return AR_OK;
    }
    ar_log(AR_LOG_INFO, "export.done", &f, "%zu file(s)%s", w->res.files,
           w->res.replaced ? ", replaced the previous export" : "");
    char herr[1024] = "";
    const char *series = strcmp(job->level, "series") == 0 ? job->resource_id : NULL;
    long rule = ar_app_find_rule(a, job->rule);
    if (rule >= 0 &&
        ar_engine_on_exported(a->engine, w->study, (size_t)rule, series, w->folder, herr,
                              sizeof herr))
        ar_log(AR_LOG_WARN, "rule.hook_error", &f, "on_exported: %s", herr);
    return AR_OK;
}

void ar_job_work_free(ar_job_work *w)
{
    ar_plan_free(&w->plan);
    memset(&w->plan, 0, sizeof w->plan);
    ar_study_free(w->study);
    w->study = NULL;
}

/* A forward run to its end in this thread (`fire`): submit, then look at
 * Orthanc's job until it is over, the deadline passes or a stop comes. */
static int forward_wait(ar_app *a, ar_job_work *w, char *err, size_t errlen)
{
    char jobid[128], what[64];
    int state = AR_FWD_RUNNING, rc;
    double t0 = ar_mono_now();
    if ((rc = ar_forward_submit(a->http, w->destination, w->job.resource_id, jobid, sizeof jobid,
                                err, errlen)))
        return rc;
    for (;;) {
        if ((rc = ar_forward_look(a->http, w->destination, jobid, &state, what, sizeof what, err,
                                  errlen)))
            return rc;
        if (state == AR_FWD_SUCCESS)
            return AR_OK;
        if (state == AR_FWD_FAILURE)
            return AR_ENET;
        if (a->stop && *a->stop)
            return ar_seterr(err, errlen, AR_ESTOP, "stopped while forwarding to '%s'",
                             w->destination);
        if (ar_mono_now() - t0 > a->cfg.forward_timeout) {
            ar_forward_cancel(a->http, jobid);
            return ar_seterr(err, errlen, AR_ENET,
                             "forward to modality '%s' gave up after %.0f s (forward_timeout): "
                             "Orthanc's job %s was still %s",
                             w->destination, a->cfg.forward_timeout, jobid, what);
        }
        struct timespec ts = {0, 100 * 1000 * 1000};
        nanosleep(&ts, NULL); /* waiting on Orthanc's job, not synchronising a test */
    }
}

int ar_job_execute(ar_app *a, const ar_job *job, char *err, size_t errlen)
{
    ar_job_work w;
    int rc = ar_job_prepare(a, job, &w, err, errlen);
    if (rc)
        return rc;
    w.http = a->http;
    if (w.forward) {
        w.rc = forward_wait(a, &w, w.err, sizeof w.err);
        w.seconds = ar_mono_now() - w.t0;
    } else {
        ar_job_transfer(&w);
    }
    rc = ar_job_finish(a, &w, err, errlen);
    ar_job_work_free(&w);
    return rc;
}
