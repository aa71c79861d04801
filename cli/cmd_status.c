/* cmd_status.c - `autorthanc status`: can we reach Orthanc, where are we in
 * its change log, how are the rules and the jobs.  Exit 0 when Orthanc answers. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../bindings/jsonq.h"
#include "app.h"
#include "opts.h"

static const char status_usage[] =
    "usage: autorthanc status [--config FILE] [--json]\n"
    "\n"
    "Print Orthanc's reachability and version, our position in its change log\n"
    "versus its last change, rules loaded/broken and job counts.  Exit 0 when\n"
    "Orthanc answers, 1 otherwise (usable as a health check).\n";

int ar_cmd_status(int argc, char **argv)
{
    ar_opts o = {.flags = {"--json"}};
    ar_app a;
    char err[1024] = "", version[64] = "", last[64] = "", orthanc_err[1024] = "";
    ar_buf b = {0};
    int code = ar_opts_parse(&o, argc, argv, status_usage);
    if (code || o.help)
        return code;
    memset(&a, 0, sizeof a);
    if ((code = ar_app_config(&a, o.config)))
        return code;
    if ((code = ar_app_open_http(&a)))
        goto out;
    int reachable = 0;
    if (ar_http_get(a.http, "/system", &b, orthanc_err, sizeof orthanc_err) == 0 &&
        ar_jsonq_get(b.data, b.len, "Version", version, sizeof version, orthanc_err,
                     sizeof orthanc_err) == 0) {
        reachable = 1;
        ar_buf_free(&b);
        if (ar_http_get(a.http, "/changes?last", &b, err, sizeof err) == 0)
            ar_jsonq_get(b.data, b.len, "Last", last, sizeof last, err, sizeof err);
    }
    ar_buf_free(&b);

    int64_t cursor = 0;
    int has = 0;
    size_t counts[4] = {0, 0, 0, 0};
    int state_ok = ar_app_open_state(&a) == 0;
    if (state_ok) {
        ar_job *jobs = NULL;
        size_t n = 0;
        ar_state_get_cursor(a.state, &cursor, &has, err, sizeof err);
        if (ar_state_list_jobs(a.state, -1, &jobs, &n, err, sizeof err) == 0)
            for (size_t i = 0; i < n; i++)
                if (jobs[i].status >= 0 && jobs[i].status < 4)
                    counts[jobs[i].status]++;
        free(jobs);
    }
    size_t nrules = 0, broken = 0;
    if (ar_app_open_engine(&a) == 0 &&
        ar_engine_load_rules_dir(a.engine, a.cfg.rules_dir, err, sizeof err) == 0) {
        nrules = ar_engine_rule_count(a.engine);
        for (size_t i = 0; i < nrules; i++)
            broken += !ar_engine_rule(a.engine, i)->ok;
    }
    if (ar_opts_has(&o, "--json")) {
        char *url = NULL, *oe = NULL;
        ar_jsonq_quote(a.cfg.orthanc_url, &url, err, sizeof err);
        ar_jsonq_quote(orthanc_err, &oe, err, sizeof err);
        printf("{\"orthanc\":{\"url\":%s,\"reachable\":%s,\"version\":\"%s\",\"last_change\":%s,"
               "\"error\":%s},\"cursor\":%" PRId64 ",\"rules\":{\"loaded\":%zu,\"broken\":%zu},"
               "\"jobs\":{\"pending\":%zu,\"done\":%zu,\"failed\":%zu,\"gone\":%zu}}\n",
               url ? url : "null", reachable ? "true" : "false", version, last[0] ? last : "null",
               oe ? oe : "null", cursor, nrules - broken, broken, counts[AR_JOB_PENDING],
               counts[AR_JOB_DONE], counts[AR_JOB_FAILED], counts[AR_JOB_GONE]);
        free(url);
        free(oe);
    } else {
        if (reachable)
            printf("orthanc   %s: reachable, version %s, last change %s\n", a.cfg.orthanc_url,
                   version, last[0] ? last : "?");
        else
            printf("orthanc   %s: UNREACHABLE: %s\n", a.cfg.orthanc_url, orthanc_err);
        printf("position  %" PRId64 "%s\n", cursor, has ? "" : " (never ran)");
        printf("rules     %zu loaded, %zu broken (%s)\n", nrules - broken, broken,
               a.cfg.rules_dir);
        printf("jobs      %zu pending, %zu done, %zu failed, %zu gone\n", counts[AR_JOB_PENDING],
               counts[AR_JOB_DONE], counts[AR_JOB_FAILED], counts[AR_JOB_GONE]);
    }
    code = reachable ? AR_EXIT_OK : AR_EXIT_FAIL;
out:
    ar_app_close(&a);
    return code;
}
