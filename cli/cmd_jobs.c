/* cmd_jobs.c - `autorthanc jobs` (list the ledger) and `autorthanc retry`. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "app.h"
#include "opts.h"

static const char jobs_usage[] =
    "usage: autorthanc jobs [--config FILE] [--failed] [--pending]\n"
    "\n"
    "List the job ledger: id, status, attempts, rule, action, level, resource, path\n"
    "or last error.\n";

static const char retry_usage[] =
    "usage: autorthanc retry [--config FILE] (JOB_ID | --all)\n"
    "\n"
    "Requeue a failed job (or every failed job); the daemon runs it on its next\n"
    "cycle.\n";

static const char *status_name(int s)
{
    switch (s) {
    case AR_JOB_PENDING: return "pending";
    case AR_JOB_DONE: return "done";
    case AR_JOB_FAILED: return "failed";
    case AR_JOB_GONE: return "gone";
    default: return "?";
    }
}

int ar_cmd_jobs(int argc, char **argv)
{
    ar_opts o = {.flags = {"--failed", "--pending"}};
    ar_app a;
    char err[1024] = "";
    ar_job *jobs = NULL;
    size_t n = 0;
    int code = ar_opts_parse(&o, argc, argv, jobs_usage);
    if (code || o.help)
        return code;
    memset(&a, 0, sizeof a);
    if ((code = ar_app_config(&a, o.config)))
        return code;
    if ((code = ar_app_open_existing_state(&a)))
        goto out;
    int filter = ar_opts_has(&o, "--failed") ? AR_JOB_FAILED
                 : ar_opts_has(&o, "--pending") ? AR_JOB_PENDING : -1;
    if (ar_state_list_jobs(a.state, filter, &jobs, &n, err, sizeof err)) {
        fprintf(stderr, "autorthanc jobs: %s\n", err);
        code = AR_EXIT_FAIL;
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        const ar_job *j = &jobs[i];
        printf("%" PRId64 "\t%s\t%d\t%s\t%s\t%s\t%s\t%s\n", j->id, status_name(j->status),
               j->attempts, j->rule, j->action, j->level, j->resource_id,
               j->status == AR_JOB_DONE ? j->path : j->last_error);
    }
    code = AR_EXIT_OK;
out:
    free(jobs);
    ar_app_close(&a);
    return code;
}

int ar_cmd_retry(int argc, char **argv)
{
    ar_opts o = {.flags = {"--all"}};
    ar_app a;
    char err[1024] = "";
    int count = 0;
    int code = ar_opts_parse(&o, argc, argv, retry_usage);
    if (code || o.help)
        return code;
    int all = ar_opts_has(&o, "--all");
    if ((all && o.npos) || (!all && o.npos != 1)) {
        fputs(retry_usage, stderr);
        return AR_EXIT_USAGE;
    }
    int64_t id = -1;
    if (!all) {
        char *end;
        id = strtoll(o.pos[0], &end, 10);
        if (*end || id < 0) {
            fprintf(stderr, "autorthanc retry: '%s' is not a job id\n", o.pos[0]);
            return AR_EXIT_USAGE;
        }
    }
    memset(&a, 0, sizeof a);
    if ((code = ar_app_config(&a, o.config)))
        return code;
    if ((code = ar_app_open_existing_state(&a)))
        goto out;
    if (ar_state_job_requeue(a.state, id, &count, err, sizeof err)) {
        fprintf(stderr, "autorthanc retry: %s\n", err);
        code = AR_EXIT_FAIL;
        goto out;
    }
    if (!all && count == 0) {
        /* say why: an unknown id, or a job that is not failed */
        ar_job *jobs = NULL;
        size_t n = 0, i;
        const ar_job *j = NULL;
        if (ar_state_list_jobs(a.state, -1, &jobs, &n, err, sizeof err) == 0)
            for (i = 0; i < n && !j; i++)
                if (jobs[i].id == id)
                    j = &jobs[i];
        if (!j)
            fprintf(stderr, "autorthanc retry: no job %" PRId64 " in the ledger of %s "
                    "(`autorthanc jobs` lists them)\n", id, a.cfg.state_dir);
        else
            fprintf(stderr, "autorthanc retry: job %" PRId64 " is %s, not failed: nothing to retry\n",
                    id, status_name(j->status));
        free(jobs);
        code = AR_EXIT_FAIL;
        goto out;
    }
    printf("%d job(s) requeued\n", count);
    code = AR_EXIT_OK;
out:
    ar_app_close(&a);
    return code;
}
