/* daemon.c - see daemon.h */
#include "../core/clock.h"
#include "daemon.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "../core/err.h"
#include "../core/export.h"
#include "../core/lanes.h"
#include "../core/log.h"
#include "../core/orthanc.h"
#include "status.h"
#include "watcher.h"
#include "workers.h"

/* Sleep up to `seconds`, waking early on a signal. */
static void nap(ar_app *a, double seconds)
{
    double end = ar_wall_now() + seconds;
    while (!(a->stop && *a->stop) && !(a->reload && *a->reload)) {
        double left = end - ar_wall_now();
        if (left <= 0)
            break;
        if (left > 0.25)
            left = 0.25;
        struct timespec ts = {(time_t)left, (long)((left - floor(left)) * 1e9)};
        nanosleep(&ts, NULL);
    }
}

/* mkdir -p for the storage folder itself (0755). */
static int make_dirs(const char *path, char *err, size_t errlen)
{
    char buf[AR_PATH_LEN];
    if (snprintf(buf, sizeof buf, "%s", path) >= (int)sizeof buf)
        return ar_seterr(err, errlen, AR_EIO, "storage path too long");
    for (char *p = buf + 1;; p++) {
        if (*p == '/' || *p == 0) {
            char c = *p;
            *p = 0;
            if (mkdir(buf, 0755) != 0 && errno != EEXIST)
                return ar_seterr(err, errlen, AR_EIO, "cannot create storage folder %s: %s", buf,
                                 strerror(errno));
            *p = c;
            if (!c)
                break;
        }
    }
    return AR_OK;
}

static void write_status(ar_app *a, int outage, const char *err)
{
    char last[32] = "", serr[1024] = "";
    if (a->orthanc_last >= 0)
        snprintf(last, sizeof last, "%" PRId64, a->orthanc_last);
    ar_status_in in = {.reachable = !outage, .version = "", .last_change = last,
                       .orthanc_error = outage ? err : ""};
    if (ar_status_write(a, &in, serr, sizeof serr))
        ar_log(AR_LOG_WARN, "status.write", NULL, "%s", serr);
}

/* The lane table into the ledger, where `status` reads it. */
/* The lane table as last written to the ledger (status reads it there). */
typedef struct saved_lanes {
    ar_lane_info v[64];
    size_t n;
    int valid;
} saved_lanes;

static int lane_same(const ar_lane_info *x, const ar_lane_info *y)
{
    return !strcmp(x->name, y->name) && x->running == y->running && x->down == y->down &&
           x->down_since == y->down_since && x->next_probe_at == y->next_probe_at &&
           x->failures == y->failures && x->probe_job == y->probe_job &&
           !strcmp(x->last_error, y->last_error);
}

/* Write the lane table when it changed since the last write (an idle
 * daemon writes nothing each cycle). */
static void save_lanes(ar_app *a, ar_workers *w, saved_lanes *last)
{
    ar_lane_info v[64];
    size_t n = ar_lanes_snapshot(ar_workers_lanes(w), v, 64), i;
    n = n < 64 ? n : 64;
    if (last->valid && last->n == n) {
        for (i = 0; i < n && lane_same(&v[i], &last->v[i]); i++)
            ;
        if (i == n)
            return;
    }
    ar_status_save_lanes(a, v, n);
    memcpy(last->v, v, n * sizeof *v);
    last->n = n;
    last->valid = 1;
}

/* Jobs recorded by an older autorthanc (schema 1) have no lane yet. */
static void fill_lanes(ar_app *a)
{
    char err[1024] = "", lane[AR_LANE_LEN];
    size_t n = ar_engine_rule_count(a->engine);
    for (size_t i = 0; i < n; i++) {
        const ar_rule_info *r = ar_engine_rule(a->engine, i);
        if (!r->ok)
            continue;
        ar_rule_lane(r, lane, sizeof lane);
        if (ar_state_fill_lane(a->state, r->name, lane, err, sizeof err))
            ar_log(AR_LOG_ERROR, "state.error", NULL, "%s", err);
    }
    /* a job whose rule is gone meets that when it runs */
    if (ar_state_fill_lane(a->state, NULL, "storage", err, sizeof err))
        ar_log(AR_LOG_ERROR, "state.error", NULL, "%s", err);
}

int ar_daemon_run(ar_app *a, int once, ar_run_stats *st)
{
    char err[2048] = "";
    int outage = 0, removed = 0, rc = AR_OK;
    ar_workers *workers = NULL;
    double started = ar_wall_now();
    uint64_t kicked_at = 0;
    saved_lanes lanes_written; /* ~50 KB: the main thread's stack */
    memset(st, 0, sizeof *st);
    memset(&lanes_written, 0, sizeof lanes_written);
    a->orthanc_last = -1;

    if (make_dirs(a->cfg.storage_dir, err, sizeof err)) {
        ar_log(AR_LOG_ERROR, "storage.create", NULL, "%s", err);
        return AR_EIO;
    }
    if (ar_export_clean_working(a->cfg.storage_dir, &removed, err, sizeof err))
        ar_log(AR_LOG_WARN, "storage.clean", NULL, "%s", err);
    else if (removed)
        ar_log(AR_LOG_INFO, "storage.clean", NULL,
               "removed %d unfinished .WORKING folder(s) left by an interrupted run", removed);
    fill_lanes(a);
    if (ar_workers_start(a, once, &workers, err, sizeof err)) {
        ar_log(AR_LOG_ERROR, "workers.start", NULL, "%s", err);
        return AR_ERR;
    }

    for (;;) {
        if (a->reload && *a->reload) {
            *a->reload = 0;
            ar_log(AR_LOG_INFO, "reload", NULL, "SIGHUP: reloading configuration and rules");
            ar_app_reload_config(a);
            ar_app_maybe_reload_rules(a, 1);
        } else {
            ar_app_maybe_reload_rules(a, 0);
        }
        ar_workers_set_config(workers, &a->cfg, a->rules_gen, a->engine);
        err[0] = 0;
        double polled_at = ar_wall_now();
        rc = ar_watch_changes(a, &outage, err, sizeof err);
        if (rc == AR_ENET || rc == AR_EHTTP || rc == AR_ENOTFOUND) {
            st->poll_errors++;
            if (once) {
                ar_log(AR_LOG_ERROR, "orthanc.unreachable", NULL, "%s", err);
            } else if (!outage) {
                ar_log(AR_LOG_ERROR, "orthanc.unreachable", NULL,
                       "%s; will keep trying every %.1f s", err, a->cfg.poll_interval);
                outage = 1;
            }
        } else if (rc) {
            ar_log(AR_LOG_ERROR, "poll.error", NULL, "%s", err);
        }
        ar_workers_pause(workers, outage, polled_at);
        if (!outage && rc == AR_OK) {
            ar_watch_arrivals(a, &outage);
            ar_watch_decisions(a, once ? started : ar_wall_now());
        }
        if (a->jobs_recorded != kicked_at) {
            kicked_at = a->jobs_recorded; /* new work: wake the workers now */
            ar_workers_kick(workers);
        }
        save_lanes(a, workers, &lanes_written);
        write_status(a, outage, err);
        if (once || (a->stop && *a->stop))
            break;
        nap(a, a->cfg.poll_interval);
        if (a->stop && *a->stop)
            break;
    }
    if (once)
        ar_workers_drain(workers); /* jobs recorded before an error still run */
    ar_workers_stats(workers, st);
    if (once)
        save_lanes(a, workers, &lanes_written);
    ar_workers_stop(workers);
    if (once)
        write_status(a, outage, err);
    return once ? rc : AR_OK;
}
