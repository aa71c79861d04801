/* cmd_run.c - `autorthanc run`: the daemon (or one pass with --once). */
#include <stdio.h>
#include <string.h>

#include "../core/log.h"
#include "daemon.h"
#include "opts.h"

static const char run_usage[] =
    "usage: autorthanc run [--config FILE] [--once]\n"
    "\n"
    "Watch Orthanc's change log; when a study or series becomes stable, run every\n"
    "active rule that matches it (download into the storage folder, or forward).\n"
    "  --once    process everything logged so far, finish the resulting jobs, exit:\n"
    "            0 all jobs succeeded, 1 a job failed or Orthanc was unreachable,\n"
    "            2 configuration error.\n"
    "Without --once it polls until SIGINT/SIGTERM; SIGHUP reloads the rules.\n";

int ar_cmd_run(int argc, char **argv)
{
    ar_opts o = {.flags = {"--once"}};
    ar_app a;
    ar_run_stats st;
    int code = ar_opts_parse(&o, argc, argv, run_usage);
    if (code || o.help)
        return code;
    if (o.npos) {
        fprintf(stderr, "autorthanc run: unexpected argument '%s'\n%s", o.pos[0], run_usage);
        return AR_EXIT_USAGE;
    }
    int once = ar_opts_has(&o, "--once");
    memset(&a, 0, sizeof a);
    if ((code = ar_app_config(&a, o.config)))
        return code;
    ar_signals_install(&a);
    if ((code = ar_app_open_http(&a)) || (code = ar_app_open_engine(&a)))
        goto out;
    ar_log(AR_LOG_INFO, "start", NULL, "autorthanc %s watching %s, rules %s, storage %s%s",
           AR_VERSION, a.cfg.orthanc_url, a.cfg.rules_dir, a.cfg.storage_dir,
           once ? " (once)" : "");
    /* the rules folder first: a wrong one creates no state folder */
    if ((code = ar_app_load_rules(&a)) || (code = ar_app_open_state(&a)) ||
        (code = ar_app_lock_state(&a)))
        goto out;
    int rc = ar_daemon_run(&a, once, &st);
    if (once)
        ar_log(AR_LOG_INFO, "done", NULL, "%d job(s) done, %d failed, %d gone", st.jobs_ok,
               st.jobs_failed, st.jobs_gone);
    else
        ar_log(AR_LOG_INFO, "stop", NULL, "stopped");
    /* --once: a job that failed, or a stable study that could not even be
     * decided (an answer of the wrong shape), makes the pass a failure */
    code = (rc || st.jobs_failed || a.decisions_failed) && once ? AR_EXIT_FAIL : AR_EXIT_OK;
out:
    ar_app_close(&a);
    return code;
}
