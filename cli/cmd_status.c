/* cmd_status.c - `autorthanc status`: can we reach Orthanc, where are we in
 * its change log, how are the rules and the jobs.  Exit 0 only when
 * everything the daemon needs works: Orthanc answers, the rules folder
 * reads, the storage folder is writable and the state database opens (it
 * is the container's health check).  It never creates a state folder. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../core/err.h"
#include "../core/orthanc.h"
#include "../core/orthanc_json.h"
#include "app.h"
#include "opts.h"
#include "status.h"

static const char status_usage[] =
    "usage: autorthanc status [--config FILE] [--json]\n"
    "\n"
    "Print Orthanc's reachability and version, our position in its change log\n"
    "versus its last change, rules loaded/broken and job counts.  Exit 0 when\n"
    "Orthanc answers, the rules folder reads, the storage folder is writable and\n"
    "the state database opens; 1 otherwise, naming the problem (a health check).\n";

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
    int sys_rc = ar_orthanc_system(a.http, &b, orthanc_err, sizeof orthanc_err);
    if (sys_rc == 0 &&
        ar_ojson_get(b.data, b.len, "Version", version, sizeof version, orthanc_err,
                     sizeof orthanc_err) == 0) {
        reachable = 1;
        ar_buf_free(&b);
        if (ar_http_get(a.http, "/changes?last", &b, err, sizeof err) == 0)
            ar_ojson_get(b.data, b.len, "Last", last, sizeof last, err, sizeof err);
    }
    ar_buf_free(&b);

    /* what else the daemon needs */
    char problems[3][4400];
    int np = 0;
    if (ar_state_open_existing(a.cfg.state_dir, &a.state, err, sizeof err))
        snprintf(problems[np++], sizeof problems[0], "state: %s", err);
    if (ar_app_open_engine(&a) == 0 &&
        ar_engine_load_rules_dir(a.engine, a.cfg.rules_dir, err, sizeof err) != 0) {
        snprintf(problems[np++], sizeof problems[0], "rules: %s", err);
        ar_engine_free(a.engine);
        a.engine = NULL;
    }
    if (access(a.cfg.storage_dir, W_OK | X_OK) != 0)
        snprintf(problems[np++], sizeof problems[0], "storage: %s is not writable: %s",
                 a.cfg.storage_dir, strerror(errno));
    ar_status_in in = {.reachable = reachable, .version = version, .last_change = last,
                       .orthanc_error = orthanc_err};
    char *json = NULL;
    if (ar_opts_has(&o, "--json")) {
        if (ar_status_json(&a, &in, &json, err, sizeof err) == 0)
            printf("%s\n", json);
        free(json);
    } else {
        ar_status_counts c;
        ar_job *recent = NULL;
        size_t nrecent = 0;
        ar_status_counts_read(&a, &c);
        ar_status_recent_errors(&a, (size_t)-1, &recent, &nrecent);
        if (reachable)
            printf("orthanc   %s: reachable, version %s, last change %s\n", a.cfg.orthanc_url,
                   version, last[0] ? last : "?");
        else
            printf("orthanc   %s: %s: %s\n", a.cfg.orthanc_url,
                   sys_rc == AR_ENET ? "UNREACHABLE" : "REFUSED", orthanc_err);
        printf("position  %" PRId64 "%s\n", c.cursor, c.has_cursor ? "" : " (never ran)");
        printf("rules     %zu loaded, %zu broken (%s)\n", c.rules - c.broken, c.broken,
               a.cfg.rules_dir);
        for (size_t i = 0; a.engine && i < c.rules; i++) {
            const ar_rule_info *r = ar_engine_rule(a.engine, i);
            if (!r->ok)
                printf("          broken: %s\n", r->error);
        }
        printf("jobs      %zu pending, %zu done, %zu failed, %zu gone\n", c.jobs[AR_JOB_PENDING],
               c.jobs[AR_JOB_DONE], c.jobs[AR_JOB_FAILED], c.jobs[AR_JOB_GONE]);
        ar_lane_view *lanes = NULL;
        size_t nl = 0;
        ar_status_lanes(&a, &lanes, &nl);
        for (size_t i = 0; i < nl; i++) {
            char line[1024];
            ar_status_lane_text(&lanes[i], line, sizeof line);
            printf("lane      %s: %s\n", lanes[i].name, line);
        }
        free(lanes);
        for (size_t i = 0, shown = 0; i < nrecent && shown < 5; i++)
            if (recent[i].status == AR_JOB_FAILED) {
                printf("          failed job %" PRId64 " (%s, %s): %s\n", recent[i].id,
                       recent[i].rule, recent[i].study_id, recent[i].last_error);
                shown++;
            }
        free(recent);
    }
    for (int i = 0; i < np; i++)
        fprintf(ar_opts_has(&o, "--json") ? stderr : stdout, "problem   %s\n", problems[i]);
    code = reachable && np == 0 ? AR_EXIT_OK : AR_EXIT_FAIL;
out:
    ar_app_close(&a);
    return code;
}
