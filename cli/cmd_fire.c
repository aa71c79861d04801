/* cmd_fire.c - `autorthanc fire STUDY [--rule NAME]`: run the real actions
 * for one study now (the original's "force" button), through the job
 * ledger like the daemon: the jobs are recorded first (cursor unchanged,
 * change_seq = minus the current time in ms, so they are new jobs even for
 * a study exported before), then run with cli/jobs.c and marked done or
 * failed; `autorthanc jobs` shows them and `retry` requeues a failed one.
 * A progress bar for the transfer when stderr is a terminal. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../core/clock.h"
#include "../core/statelock.h"
#include "../core/orthanc_json.h"
#include "../core/err.h"
#include "app.h"
#include "daemon.h"
#include "toolkit.h"
#include "watcher.h"

static const char fire_usage[] =
    "usage: autorthanc fire [--config FILE] STUDY [--rule NAME]\n"
    "\n"
    "Decide the rules on STUDY (an Orthanc id or a StudyInstanceUID) now and run the\n"
    "actions of every active rule that matches (download or forward), recorded in the\n"
    "job ledger like the daemon's jobs.  --rule runs only that rule (even an inactive\n"
    "one), if it matches.  Exit 0 when every action succeeded, 1 when one failed or\n"
    "no rule matched, 2 for usage or configuration errors.\n";

typedef struct fire_progress {
    ar_progress bar;
    long long total_bytes;
} fire_progress;

static void on_progress(void *ud, size_t done, size_t total, long long bytes)
{
    fire_progress *p = ud;
    ar_progress_draw(&p->bar, done, total, bytes, p->total_bytes, done == total);
    if (done == total && p->bar.on) { /* keep the full bar; log lines follow below it */
        fputc('\n', stderr);
        p->bar.on = 0;
    }
}

/* The cursor to keep: the saved one, or where the daemon would start. */
static int current_cursor(ar_app *a, int64_t *cursor, char *err, size_t errlen)
{
    int has = 0, rc;
    if ((rc = ar_state_get_cursor(a->state, cursor, &has, err, errlen)) || has)
        return rc;
    *cursor = 0;
    if (a->cfg.start_at_now) {
        ar_buf b = {0};
        char last[64];
        rc = ar_http_get(a->http, "/changes?last", &b, err, errlen);
        if (!rc)
            rc = ar_ojson_get(b.data, b.len, "Last", last, sizeof last, err, errlen);
        ar_buf_free(&b);
        if (rc)
            return rc;
        *cursor = strtoll(last, NULL, 10);
    }
    return AR_OK;
}

/* The jobs fire recorded (change_seq == seq), found in the ledger list. */
static const ar_job *find_recorded(const ar_job *list, size_t n, const ar_job *want, int64_t seq)
{
    for (size_t m = 0; m < n; m++)
        if (list[m].change_seq == seq && !strcmp(list[m].rule, want->rule) &&
            !strcmp(list[m].resource_id, want->resource_id))
            return &list[m];
    return NULL;
}

/* A daemon holds the state folder: it runs the jobs (queued urgent); wait
 * for each to end and report it as if run here.  Ctrl-C stops waiting (the
 * jobs stay queued). */
static int wait_for_daemon(ar_app *a, const ar_job *want, size_t nwant, const ar_job *listed,
                           size_t nlisted, int64_t seq)
{
    int64_t ids[64];
    int finished[64] = {0}, failed = 0;
    size_t n = 0, left, k;
    char err[1024];

    for (k = 0; k < nwant && n < 64; k++) {
        const ar_job *j = find_recorded(listed, nlisted, &want[k], seq);
        if (j)
            ids[n++] = j->id;
    }
    printf("the daemon (pid %ld) runs on this state folder: %zu job(s) handed to it, "
           "first in their lanes; waiting (Ctrl-C stops waiting, the jobs stay queued)\n",
           ar_statelock_holder(a->cfg.state_dir), n);
    fflush(stdout);
    for (left = n; left > 0;) {
        ar_job *all = NULL;
        size_t nall = 0;
        struct timespec ts = {0, 200 * 1000 * 1000};
        if (a->stop && *a->stop) {
            printf("stopped waiting: %zu job(s) stay queued for the daemon\n", left);
            return AR_EXIT_FAIL;
        }
        if (ar_state_list_jobs(a->state, -1, &all, &nall, err, sizeof err)) {
            fprintf(stderr, "autorthanc fire: %s\n", err);
            return AR_EXIT_FAIL;
        }
        for (k = 0; k < n; k++) {
            const ar_job *j = NULL;
            if (finished[k])
                continue;
            for (size_t m = 0; m < nall && !j; m++)
                if (all[m].id == ids[k])
                    j = &all[m];
            if (!j || j->status == AR_JOB_PENDING)
                continue;
            finished[k] = 1;
            left--;
            if (j->status == AR_JOB_DONE && !strcmp(j->action, "forward"))
                printf("%s: job %" PRId64 " done: %s %s forwarded\n", j->rule, j->id, j->level,
                       j->resource_id);
            else if (j->status == AR_JOB_DONE)
                printf("%s: job %" PRId64 " done: exported to %s\n", j->rule, j->id, j->path);
            else {
                printf("%s: job %" PRId64 " %s: %s\n", j->rule, j->id,
                       j->status == AR_JOB_GONE ? "gone" : "failed", j->last_error);
                failed = 1;
            }
        }
        free(all);
        if (left && ar_statelock_holder(a->cfg.state_dir) == 0) {
            printf("the daemon stopped: %zu job(s) stay queued for its next run\n", left);
            return AR_EXIT_FAIL;
        }
        if (left)
            nanosleep(&ts, NULL); /* the ledger is polled: another process writes it */
    }
    return failed ? AR_EXIT_FAIL : AR_EXIT_OK;
}

int ar_cmd_fire(int argc, char **argv)
{
    const char *config = NULL, *rule_name = NULL, *ref = NULL;
    int code = AR_EXIT_USAGE;
    char err[2048] = "", study_id[128];
    ar_verdict *v = NULL;
    ar_study *st = NULL;
    ar_job *jobs = NULL, *listed = NULL;
    size_t nv = 0, njobs = 0, nlisted = 0, *idx = NULL, nidx = 0;
    ar_app a;

    memset(&a, 0, sizeof a);
    for (int i = 1; i < argc; i++) {
        const char *s = argv[i];
        if (!strcmp(s, "--help") || !strcmp(s, "-h")) {
            fputs(fire_usage, stdout);
            return AR_EXIT_OK;
        } else if ((!strcmp(s, "--config") || !strcmp(s, "-c") || !strcmp(s, "--rule")) &&
                   i + 1 >= argc) {
            fprintf(stderr, "autorthanc fire: %s needs a value\n%s", s, fire_usage);
            return AR_EXIT_USAGE;
        } else if (!strcmp(s, "--config") || !strcmp(s, "-c")) {
            config = argv[++i];
        } else if (!strncmp(s, "--config=", 9)) {
            config = s + 9;
        } else if (!strcmp(s, "--rule")) {
            rule_name = argv[++i];
        } else if (!strncmp(s, "--rule=", 7)) {
            rule_name = s + 7;
        } else if ((s[0] == '-' && s[1]) || ref) {
            fprintf(stderr, "autorthanc fire: unexpected argument '%s'\n%s", s, fire_usage);
            return AR_EXIT_USAGE;
        } else {
            ref = s;
        }
    }
    if (!ref) {
        fprintf(stderr, "autorthanc fire: give a STUDY\n%s", fire_usage);
        return AR_EXIT_USAGE;
    }
    if ((code = ar_app_config(&a, config)))
        return code;
    ar_signals_install(&a);
    if ((code = ar_app_open_http(&a)) || (code = ar_app_open_state(&a)) ||
        (code = ar_app_open_engine(&a)))
        goto out;
    /* Run the jobs here only while holding the state folder (a daemon
     * starting meanwhile waits its turn); when a daemon holds it, hand them
     * over through the ledger. */
    {
        int fd = -1;
        char lerr[1024];
        if (ar_statelock_take(a.cfg.state_dir, &fd, lerr, sizeof lerr) == AR_OK)
            a.lock_fd = fd;
    }
    code = AR_EXIT_USAGE;
    if (ar_tool_load_rules(&a, &rule_name, rule_name ? 1 : 0, &idx, &nidx, err, sizeof err)) {
        fprintf(stderr, "autorthanc fire: %s\n", err);
        goto out;
    }
    code = AR_EXIT_FAIL;
    if (ar_tool_resolve_study(&a, ref, study_id, sizeof study_id, err, sizeof err) ||
        ar_app_load_study(&a, study_id, &st, err, sizeof err)) {
        fprintf(stderr, "autorthanc fire: %s\n", err);
        goto out;
    }

    /* decide */
    if (rule_name) {
        size_t ns = ar_study_series_count(st);
        int series = strcmp(ar_engine_rule(a.engine, idx[0])->check_on, "series") == 0;
        v = calloc(ns + 1, sizeof *v);
        if (!v)
            goto out;
        for (size_t i = 0; i < (series ? ns : 1); i++) {
            if (ar_engine_evaluate_one(a.engine, st, idx[0],
                                       series ? ar_study_series_id(st, i) : NULL, &v[nv], err,
                                       sizeof err)) {
                fprintf(stderr, "autorthanc fire: %s\n", err);
                goto out;
            }
            nv++;
        }
    } else if (ar_engine_evaluate(a.engine, st, NULL, 1, &v, &nv, err, sizeof err)) {
        fprintf(stderr, "autorthanc fire: %s\n", err);
        goto out;
    }
    jobs = calloc(nv + 1, sizeof *jobs);
    if (!jobs)
        goto out;
    int64_t seq = -((int64_t)(ar_wall_now() * 1000));
    for (size_t i = 0; i < nv; i++) {
        const ar_rule_info *r = ar_engine_rule(a.engine, v[i].rule);
        if (v[i].error) {
            printf("%s: error: %s\n", r->name, v[i].reason);
            continue;
        }
        if (!v[i].matched) {
            if (rule_name)
                printf("%s%s%s: no match%s%s\n", r->name, v[i].series_id[0] ? " series " : "",
                       v[i].series_id, v[i].reason[0] ? ": " : "", v[i].reason);
            continue;
        }
        ar_job *j = &jobs[njobs++];
        snprintf(j->rule, sizeof j->rule, "%s", r->name);
        snprintf(j->level, sizeof j->level, "%s", v[i].series_id[0] ? "series" : "study");
        snprintf(j->resource_id, sizeof j->resource_id, "%s",
                 v[i].series_id[0] ? v[i].series_id : study_id);
        snprintf(j->study_id, sizeof j->study_id, "%s", study_id);
        snprintf(j->action, sizeof j->action, "%s", r->action);
        ar_rule_lane(r, j->lane, sizeof j->lane);
        j->priority = AR_PRIORITY_URGENT; /* asked for now: first in its lane */
        j->change_seq = seq;
    }
    if (njobs == 0) {
        printf("no %srule matches study %s: nothing to do\n", rule_name ? "such " : "", study_id);
        goto out;
    }

    /* record, then run */
    int64_t cursor = 0;
    if ((strcmp(jobs[0].action, "download") == 0 &&
         ar_tool_mkdirs(a.cfg.storage_dir, err, sizeof err)) ||
        current_cursor(&a, &cursor, err, sizeof err) ||
        ar_state_record_batch(a.state, jobs, njobs, NULL, 0, NULL, 0, cursor, err, sizeof err) ||
        ar_state_list_jobs(a.state, AR_JOB_PENDING, &listed, &nlisted, err, sizeof err)) {
        fprintf(stderr, "autorthanc fire: %s\n", err);
        goto out;
    }
    int failed = 0;
    if (a.lock_fd <= 0) {
        /* a daemon runs on this state folder: it runs the jobs, we wait */
        code = wait_for_daemon(&a, jobs, njobs, listed, nlisted, seq);
        goto out;
    }
    for (size_t k = 0; k < njobs; k++) {
        ar_job *j = NULL;
        for (size_t m = 0; m < nlisted && !j; m++)
            if (listed[m].change_seq == seq && !strcmp(listed[m].rule, jobs[k].rule) &&
                !strcmp(listed[m].resource_id, jobs[k].resource_id))
                j = &listed[m];
        if (!j) {
            printf("%s: the job was not recorded (already run by the daemon?)\n", jobs[k].rule);
            failed = 1;
            continue;
        }
        fire_progress fp;
        ar_target tg;
        long rule = ar_app_find_rule(&a, j->rule);
        fp.total_bytes = -1;
        if (rule >= 0 && ar_tool_target(&a, st, (size_t)rule,
                                        strcmp(j->level, "series") == 0 ? j->resource_id : NULL,
                                        &tg, err, sizeof err) == 0)
            fp.total_bytes = tg.bytes;
        ar_progress_start(&fp.bar, j->rule);
        a.progress = on_progress;
        a.progress_ud = &fp;
        int rc = ar_job_execute(&a, j, err, sizeof err);
        a.progress = NULL;
        ar_progress_end(&fp.bar);
        char why[2048];
        snprintf(why, sizeof why, "%s", err);
        if (rc == AR_ENOTFOUND) {
            ar_state_job_gone(a.state, j->id, why, err, sizeof err);
            printf("%s: job %" PRId64 " gone: %s\n", j->rule, j->id, why);
            failed = 1;
        } else if (rc) {
            ar_state_job_failed(a.state, j->id, why, 0, err, sizeof err);
            printf("%s: job %" PRId64 " failed: %s\n", j->rule, j->id, why);
            failed = 1;
        } else if (!strcmp(j->action, "forward")) {
            printf("%s: job %" PRId64 " done: %s %s forwarded to %s\n", j->rule, j->id, j->level,
                   j->resource_id, ar_engine_rule(a.engine, (size_t)rule)->destination);
        } else {
            ar_job *done = NULL;
            size_t nd = 0;
            const char *path = "?";
            if (ar_state_list_jobs(a.state, AR_JOB_DONE, &done, &nd, err, sizeof err) == 0)
                for (size_t m = 0; m < nd; m++)
                    if (done[m].id == j->id)
                        path = done[m].path;
            printf("%s: job %" PRId64 " done: exported to %s\n", j->rule, j->id, path);
            free(done);
        }
    }
    code = failed ? AR_EXIT_FAIL : AR_EXIT_OK;
out:
    ar_study_free(st);
    free(listed);
    free(jobs);
    free(v);
    free(idx);
    ar_app_close(&a);
    return code;
}
