/* workers.c - see workers.h */
#include "../core/clock.h"
#include "workers.h"

#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../core/err.h"
#include "../core/forward.h"
#include "../core/lanes.h"
#include "../core/log.h"
#include "../core/orthanc.h"
#include "jobs.h"

#define LOOK_EVERY 0.5    /* seconds between two looks at a forward's Orthanc job */
#define IDLE_WAIT 2.0     /* an idle worker looks at the ledger at least this often */
#define MODALITY_LANE "modality:"
#define REREAD_MAX 3      /* re-reads of a study whose instances vanish mid-export */

typedef struct worker {
    struct ar_workers *pool;
    pthread_t th;
    int started;
    ar_app app;               /* this thread's client, ledger connection, engine */
    uint64_t cfg_gen;         /* of app.cfg */
    uint64_t rules_gen;       /* of app.engine's rules */
    /* the job it runs, under pool->mu (0: none) */
    int64_t cur_id;
    char cur_rule[256], cur_res[128];
} worker;

struct ar_workers {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    ar_config cfg;            /* the current configuration */
    uint64_t cfg_gen, rules_gen;
    ar_ruleset *rules;        /* the watcher's rules (texts), generation rules_gen */
    volatile sig_atomic_t *stop;
    int once;
    double started_at;        /* --once: jobs due by then run in this run */
    int quit;
    int paused;               /* Orthanc is unreachable: start nothing */
    double paused_at;
    ar_lanes *lanes;
    worker *w;
    int nw;
    int busy;                 /* workers running a job */
    uint64_t epoch;           /* bumped by each kick and each job's end */
    uint64_t empty_epoch;     /* epoch at the last scan that found nothing */
    int polls_waiting;        /* that scan saw forwards in flight */
    /* downloads plan (and so claim their folders) in the order they were
     * claimed, the ledger's: the first of two studies wanting one folder
     * name gets it, whichever worker is faster */
    uint64_t plan_tickets, plan_serving;
    /* jobs just run, not to be claimed again before `until` whatever the
     * ledger says (its write may have failed: a full state folder); --once
     * holds every job it ran, so each runs at most once per run */
    struct held { int64_t id; double until; } *held;
    size_t nheld, capheld;
    ar_run_stats st;
};

static int stopping(const ar_workers *p)
{
    return p->quit || (p->stop && *p->stop);
}

static double backoff(const ar_config *c, int attempts)
{
    double d = c->retry_initial;
    for (int i = 1; i < attempts && d < c->retry_max; i++)
        d *= 2;
    return d > c->retry_max ? c->retry_max : d;
}

static int lane_concurrency(const ar_config *c, const char *lane)
{
    if (strncmp(lane, MODALITY_LANE, strlen(MODALITY_LANE)) == 0)
        return ar_config_target_concurrency(c, lane + strlen(MODALITY_LANE));
    return c->max_parallel_exports;
}

static int is_forward_lane(const char *lane)
{
    return strncmp(lane, MODALITY_LANE, strlen(MODALITY_LANE)) == 0;
}

/* ---- outcomes ------------------------------------------------------------------ */

static void count(ar_workers *p, int *field)
{
    pthread_mutex_lock(&p->mu);
    (*field)++;
    pthread_mutex_unlock(&p->mu);
}

/* A failed attempt of the job's own (or Orthanc's): counted, retried with
 * backoff while retryable and attempts are left. */
static void record_failure(worker *w, const ar_job *j, int rc, const char *why)
{
    ar_app *a = &w->app;
    ar_log_fields f = {.study = j->study_id, .rule = j->rule, .bytes = -1, .seconds = -1};
    char serr[1024] = "";
    int attempts = j->attempts + 1;
    double retry_at = 0;
    if (ar_err_retryable(rc) && attempts < a->cfg.retry_attempts)
        retry_at = ar_wall_now() + backoff(&a->cfg, attempts);
    if (retry_at > 0)
        ar_log(AR_LOG_ERROR, "job.failed", &f,
               "job %" PRId64 " (%s %s) attempt %d failed: %s; retrying in %.0f s", j->id,
               j->action, j->resource_id, attempts, why, retry_at - ar_wall_now());
    else
        ar_log(AR_LOG_ERROR, "job.failed", &f,
               "job %" PRId64 " (%s %s) failed for good after %d attempt(s): %s", j->id, j->action,
               j->resource_id, attempts, why);
    if (ar_state_job_failed(a->state, j->id, why, retry_at, serr, sizeof serr))
        ar_log(AR_LOG_ERROR, "state.error", &f, "%s", serr);
    count(w->pool, &w->pool->st.jobs_failed);
}

static void record_outcome(worker *w, const ar_job *j, int rc, const char *why)
{
    ar_log_fields f = {.study = j->study_id, .rule = j->rule, .bytes = -1, .seconds = -1};
    char serr[1024] = "";
    if (rc == AR_OK) {
        count(w->pool, &w->pool->st.jobs_ok);
    } else if (rc == AR_ESTOP) {
        ar_log(AR_LOG_INFO, "job.abandoned", &f, "job %" PRId64 " abandoned: %s (will be redone)",
               j->id, why);
    } else if (rc == AR_ENOTFOUND) {
        count(w->pool, &w->pool->st.jobs_gone);
        ar_log(AR_LOG_WARN, "job.gone", &f, "job %" PRId64 ": %s %s is gone from Orthanc: %s",
               j->id, j->level, j->resource_id, why);
        if (ar_state_job_gone(w->app.state, j->id, why, serr, sizeof serr))
            ar_log(AR_LOG_ERROR, "state.error", &f, "%s", serr);
    } else {
        record_failure(w, j, rc, why);
    }
}

static void lane_log(int change, const char *lane, const char *why)
{
    if (change == AR_LANE_WENT_DOWN)
        ar_log(AR_LOG_ERROR, "lane.down", NULL,
               "%s is down: %s; its jobs wait (attempts are not counted) while one probe "
               "retries with backoff",
               lane, why);
    else if (change == AR_LANE_CAME_UP)
        ar_log(AR_LOG_INFO, "lane.up", NULL, "%s is up again: its queued jobs start", lane);
}

/* ---- one job ------------------------------------------------------------------- */

/* The worker's engine holds the watcher's current rules (their texts). */
static int ensure_engine(worker *w, char *err, size_t errlen)
{
    ar_app *a = &w->app;
    uint64_t gen;
    ar_ruleset *set = NULL;
    ar_engine *e = NULL;
    pthread_mutex_lock(&w->pool->mu);
    gen = w->pool->rules_gen;
    if (!(a->engine && w->rules_gen == gen))
        set = ar_ruleset_ref(w->pool->rules);
    pthread_mutex_unlock(&w->pool->mu);
    if (a->engine && w->rules_gen == gen)
        return AR_OK;
    ar_engine_opts o = {
        .instruction_budget = a->cfg.rule_instruction_budget,
        .timeout_ms = a->cfg.rule_timeout_ms,
        .memory_mb = a->cfg.rule_memory_mb,
    };
    int rc = ar_engine_new(&o, &e, err, errlen);
    if (rc == AR_OK)
        rc = set ? ar_engine_load_ruleset(e, set, err, errlen)
                 : ar_engine_load_rules_dir(e, a->cfg.rules_dir, err, errlen);
    ar_ruleset_free(set);
    if (rc) {
        char tmp[1024];
        if (e)
            ar_engine_free(e);
        if (a->engine)
            return AR_OK; /* keep the rules we have */
        snprintf(tmp, sizeof tmp, "%s", err);
        return ar_seterr(err, errlen, AR_EIO, "loading the rules for a download: %s", tmp);
    }
    if (a->engine)
        ar_engine_free(a->engine);
    a->engine = e;
    w->rules_gen = gen;
    return AR_OK;
}

/* Wait for this download's turn to plan; then plan and pass the turn on. */
static int prepare_in_turn(worker *w, const ar_job *j, uint64_t ticket, ar_job_work *work,
                           char *err, size_t errlen)
{
    ar_workers *p = w->pool;
    int rc;
    pthread_mutex_lock(&p->mu);
    while (p->plan_serving != ticket && !stopping(p))
        pthread_cond_wait(&p->cv, &p->mu);
    pthread_mutex_unlock(&p->mu);
    rc = ensure_engine(w, err, errlen);
    if (rc == AR_OK)
        rc = ar_job_prepare(&w->app, j, work, err, errlen);
    pthread_mutex_lock(&p->mu);
    p->plan_serving = ticket + 1;
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    return rc;
}

static void run_download(worker *w, const ar_job *j, uint64_t ticket)
{
    char err[2048] = "";
    ar_job_work work;
    int rc;
    ar_app *a = &w->app;

    if ((rc = prepare_in_turn(w, j, ticket, &work, err, sizeof err))) {
        record_outcome(w, j, rc, err);
        goto out;
    }
    for (int reread = 0;; reread++) {
        work.http = a->http;
        ar_job_transfer(&work);
        int vanished = work.rc == AR_ENOTFOUND;
        err[0] = 0;
        rc = ar_job_finish(a, &work, err, sizeof err);
        if (!vanished || reread == REREAD_MAX) {
            record_outcome(w, &work.job, rc, err);
            ar_job_work_free(&work);
            break;
        }
        /* an instance was deleted under us (Orthanc logs no change for
         * that): export what the study holds now; a study that is gone for
         * real ends "gone" in prepare */
        ar_log_fields f = {.study = j->study_id, .rule = j->rule, .bytes = -1, .seconds = -1};
        ar_log(AR_LOG_WARN, "export.reread", &f,
               "job %" PRId64 ": %s; reading the %s again to export what it holds now", j->id,
               err, j->level);
        ar_job_work_free(&work);
        if ((rc = ar_job_prepare(a, j, &work, err, sizeof err))) {
            record_outcome(w, j, rc, err);
            break;
        }
    }
out:
    if (rc == AR_ENET && !ar_orthanc_answers(a->http))
        ar_workers_pause(w->pool, 1, ar_wall_now()); /* until the watcher sees Orthanc again */
    ar_lanes_finished(w->pool->lanes, j->lane, j->id, rc == AR_OK ? AR_LANE_OK : AR_LANE_OTHER,
                      err, ar_wall_now());
}

/* Submit a forward, or look at the one in flight.  Returns 1 while it is
 * in flight (to be looked at again soon). */
static int run_forward(worker *w, const ar_job *j)
{
    ar_app *a = &w->app;
    ar_workers *p = w->pool;
    const char *dest = j->lane + strlen(MODALITY_LANE);
    char err[2048] = "", serr[1024] = "", jobid[128], what[64];
    ar_log_fields f = {.study = j->study_id, .rule = j->rule, .path = dest, .bytes = -1,
                       .seconds = -1};
    int outcome = AR_LANE_OTHER, state = AR_FWD_RUNNING, rc;
    double now = ar_wall_now();

    if (!j->remote_job[0]) {
        rc = ar_forward_submit(a->http, dest, j->resource_id, jobid, sizeof jobid, err, sizeof err);
        if (rc == AR_OK) {
            if (ar_state_job_remote(a->state, j->id, jobid, now, now + LOOK_EVERY, serr,
                                    sizeof serr))
                ar_log(AR_LOG_ERROR, "state.error", &f, "%s", serr);
            ar_log(AR_LOG_DEBUG, "forward.submitted", &f,
                   "job %" PRId64 ": %s %s handed to Orthanc (job %s) for modality %s", j->id,
                   j->level, j->resource_id, jobid, dest);
            outcome = AR_LANE_PENDING;
        } else {
            record_outcome(w, j, rc == AR_ERULE ? AR_EHTTP : rc, err);
        }
        goto out;
    }
    rc = ar_forward_look(a->http, dest, j->remote_job, &state, what, sizeof what, err, sizeof err);
    if (rc == AR_ENOTFOUND) {
        /* Orthanc lost its job history (restarted without SaveJobs?): the
         * outcome is unknown, so the forward is sent again */
        ar_log(AR_LOG_WARN, "forward.lost", &f,
               "job %" PRId64 ": Orthanc no longer knows its job %s for modality %s; sending "
               "again",
               j->id, j->remote_job, dest);
        if (ar_state_job_remote(a->state, j->id, "", 0, 0, serr, sizeof serr))
            ar_log(AR_LOG_ERROR, "state.error", &f, "%s", serr);
        goto out;
    }
    if (rc) {
        /* Orthanc did not answer: look again later, the forward runs on */
        if (ar_state_job_remote(a->state, j->id, j->remote_job, j->submitted_at,
                                now + 4 * LOOK_EVERY, serr, sizeof serr))
            ar_log(AR_LOG_ERROR, "state.error", &f, "%s", serr);
        outcome = AR_LANE_PENDING;
        goto out;
    }
    if (state == AR_FWD_SUCCESS) {
        if (ar_state_job_done(a->state, j->id, dest, 0, serr, sizeof serr))
            ar_log(AR_LOG_ERROR, "state.error", &f, "%s", serr);
        f.seconds = now - j->submitted_at;
        ar_log(AR_LOG_INFO, "forward.done", &f, "%s %s sent to modality %s", j->level,
               j->resource_id, dest);
        count(p, &p->st.jobs_ok);
        outcome = AR_LANE_OK;
    } else if (state == AR_FWD_FAILURE) {
        /* the destination's failure: the lane goes down, the job waits for it */
        ar_lane_info li;
        int change = ar_lanes_finished(p->lanes, j->lane, j->id, AR_LANE_DEST_FAIL, err, now);
        lane_log(change, j->lane, err);
        ar_lanes_is_down(p->lanes, j->lane, &li);
        char why[2300];
        snprintf(why, sizeof why, "%s; waiting for modality %s (next probe in %.0f s)", err, dest,
                 li.next_probe_at > now ? li.next_probe_at - now : 0);
        ar_log(AR_LOG_ERROR, "job.failed", &f, "job %" PRId64 " (%s %s): %s", j->id, j->action,
               j->resource_id, why);
        if (ar_state_job_remote(a->state, j->id, "", 0, now, serr, sizeof serr) ||
            ar_state_job_wait(a->state, j->id, why, now, serr, sizeof serr))
            ar_log(AR_LOG_ERROR, "state.error", &f, "%s", serr);
        count(p, &p->st.jobs_failed);
        return 0; /* the lane was told above */
    } else if (now - j->submitted_at > a->cfg.forward_timeout) {
        ar_forward_cancel(a->http, j->remote_job);
        snprintf(err, sizeof err,
                 "forward to modality '%s' gave up after %.0f s (forward_timeout): Orthanc's job "
                 "%s was still %s",
                 dest, a->cfg.forward_timeout, j->remote_job, what);
        if (ar_state_job_remote(a->state, j->id, "", 0, 0, serr, sizeof serr))
            ar_log(AR_LOG_ERROR, "state.error", &f, "%s", serr);
        record_outcome(w, j, AR_ENET, err);
        outcome = AR_LANE_DEST_FAIL;
    } else {
        if (ar_state_job_remote(a->state, j->id, j->remote_job, j->submitted_at,
                                now + LOOK_EVERY, serr, sizeof serr))
            ar_log(AR_LOG_ERROR, "state.error", &f, "%s", serr);
        outcome = AR_LANE_PENDING;
    }
out:
    lane_log(ar_lanes_finished(p->lanes, j->lane, j->id, outcome, err, ar_wall_now()), j->lane, err);
    return outcome == AR_LANE_PENDING;
}

/* ---- claiming -------------------------------------------------------------------- */

/* Hold job id until `until`.  mu held. */
static void hold(ar_workers *p, int64_t id, double until)
{
    double now = ar_wall_now();
    size_t k = 0;
    for (size_t i = 0; i < p->nheld; i++) /* drop the expired ones */
        if (p->held[i].until > now && p->held[i].id != id)
            p->held[k++] = p->held[i];
    p->nheld = k;
    if (p->nheld == p->capheld) {
        size_t cap = p->capheld ? p->capheld * 2 : 64;
        struct held *v = realloc(p->held, cap * sizeof *v);
        if (!v)
            return; /* the ledger's own backoff still applies */
        p->held = v;
        p->capheld = cap;
    }
    p->held[p->nheld].id = id;
    p->held[p->nheld].until = until;
    p->nheld++;
}

static int is_held(const ar_workers *p, int64_t id, double now)
{
    for (size_t i = 0; i < p->nheld; i++)
        if (p->held[i].id == id && p->held[i].until > now)
            return 1;
    return 0;
}

/* Is j (or another job of its rule and resource) running in a worker?  mu held. */
static int running(const ar_workers *p, const ar_job *j)
{
    for (int i = 0; i < p->nw; i++) {
        const worker *o = &p->w[i];
        if (!o->cur_id)
            continue;
        if (o->cur_id == j->id ||
            (strcmp(o->cur_rule, j->rule) == 0 && strcmp(o->cur_res, j->resource_id) == 0))
            return 1;
    }
    return 0;
}

/* Older PENDING jobs of the same rule and resource are superseded by the
 * newest one: it exports the latest stable state, whole. */
static int superseded(worker *w, const ar_job *j)
{
    char err[1024], why[64];
    int64_t newer = 0;
    if (j->remote_job[0] || ar_state_newer_job(w->app.state, j, &newer, err, sizeof err) ||
        !newer)
        return 0;
    snprintf(why, sizeof why, "(superseded by job %" PRId64 ")", newer);
    return ar_state_job_done(w->app.state, j->id, why, 0, err, sizeof err) == 0;
}

/* Find a job that may start now and mark it running.  mu held. */
static int claim(worker *w, ar_job *out, char *err, size_t errlen)
{
    ar_workers *p = w->pool;
    char (*lanes)[AR_LANE_LEN] = NULL;
    size_t nl = 0;
    int found = 0, in_flight_seen = 0;
    double now = ar_wall_now();
    double horizon = p->once ? p->started_at : now;

    if (p->paused)
        return 0;
    if (ar_state_pending_lanes(w->app.state, &lanes, &nl, err, errlen))
        return -1;
    for (size_t l = 0; l < nl && !found; l++) {
        const char *lane = lanes[l];
        ar_job *jobs = NULL;
        size_t n = 0;
        int in_flight = 0;
        if (!lane[0] || strcmp(lane, "decide") == 0)
            continue; /* the watcher's */
        int conc = lane_concurrency(&w->app.cfg, lane);
        if (is_forward_lane(lane) &&
            ar_state_lane_in_flight(w->app.state, lane, &in_flight, err, errlen))
            continue;
        if (in_flight)
            in_flight_seen = 1;
        if (ar_state_claimable(w->app.state, lane, horizon, now, conc + p->nw + 8, &jobs, &n, err,
                               errlen))
            continue;
        for (size_t i = 0; i < n && !found; i++) {
            const ar_job *j = &jobs[i];
            int poll = j->remote_job[0] != 0, probe = 0;
            if (running(p, j) || is_held(p, j->id, now))
                continue;
            if (!poll && superseded(w, j))
                continue;
            if (ar_lanes_try_start(p->lanes, lane, conc, poll ? 0 : in_flight, poll, j->id, now,
                                   &probe)) {
                *out = *j;
                found = 1;
                if (probe)
                    ar_log(AR_LOG_INFO, "lane.probe", NULL,
                           "%s is down: job %" PRId64 " tries it", lane, j->id);
            } else if (!poll) {
                break; /* the lane is full or down */
            }
        }
        free(jobs);
    }
    free(lanes);
    if (!found)
        p->polls_waiting = in_flight_seen;
    return found;
}

/* ---- the thread -------------------------------------------------------------------- */

static void apply_config(worker *w)
{
    ar_workers *p = w->pool;
    ar_config next;
    pthread_mutex_lock(&p->mu);
    uint64_t gen = p->cfg_gen;
    next = p->cfg;
    pthread_mutex_unlock(&p->mu);
    if (gen == w->cfg_gen)
        return;
    int http_changed = strcmp(next.orthanc_url, w->app.cfg.orthanc_url) != 0 ||
                       strcmp(next.orthanc_username, w->app.cfg.orthanc_username) != 0 ||
                       strcmp(next.orthanc_password, w->app.cfg.orthanc_password) != 0 ||
                       next.http_timeout != w->app.cfg.http_timeout ||
                       next.low_speed_limit != w->app.cfg.low_speed_limit ||
                       next.low_speed_time != w->app.cfg.low_speed_time;
    w->app.cfg = next;
    w->cfg_gen = gen;
    if (http_changed) {
        ar_http *old = w->app.http;
        w->app.http = NULL;
        if (ar_app_open_http(&w->app) == AR_EXIT_OK)
            ar_http_free(old);
        else
            w->app.http = old;
    }
}

static void *worker_main(void *arg)
{
    worker *w = arg;
    ar_workers *p = w->pool;
    char err[1024] = "";

    pthread_mutex_lock(&p->mu);
    while (!stopping(p)) {
        ar_job j;
        pthread_mutex_unlock(&p->mu);
        apply_config(w);
        pthread_mutex_lock(&p->mu);
        if (stopping(p))
            break;
        int found = claim(w, &j, err, sizeof err);
        if (found < 0)
            ar_log(AR_LOG_ERROR, "state.error", NULL, "%s", err);
        if (found <= 0) {
            /* tell a drain that nothing is left, once per epoch: a broadcast
             * for every empty scan would wake the other idle workers into
             * scans of their own, round and round */
            if (p->empty_epoch != p->epoch) {
                p->empty_epoch = p->epoch;
                pthread_cond_broadcast(&p->cv);
            }
            /* woken by new jobs; else look again when a forward's look or a
             * retry may be due */
            double until = ar_wall_now() + (p->polls_waiting ? LOOK_EVERY : IDLE_WAIT);
            struct timespec ts = {(time_t)until, (long)((until - floor(until)) * 1e9)};
            pthread_cond_timedwait(&p->cv, &p->mu, &ts);
            continue;
        }
        uint64_t ticket = 0;
        if (strcmp(j.action, "forward") != 0)
            ticket = p->plan_tickets++;
        p->busy++;
        w->cur_id = j.id;
        snprintf(w->cur_rule, sizeof w->cur_rule, "%s", j.rule);
        snprintf(w->cur_res, sizeof w->cur_res, "%s", j.resource_id);
        pthread_mutex_unlock(&p->mu);

        int in_flight = 0;
        if (strcmp(j.action, "forward") == 0)
            in_flight = run_forward(w, &j);
        else
            run_download(w, &j, ticket);

        pthread_mutex_lock(&p->mu);
        /* a forward's next look comes soon; anything else waits for the
         * ledger's backoff (or, with --once, for the next run) */
        hold(p, j.id, in_flight ? ar_wall_now() + LOOK_EVERY
                                : p->once ? INFINITY : ar_wall_now() + w->app.cfg.retry_initial);
        w->cur_id = 0;
        p->busy--;
        p->epoch++;
        pthread_cond_broadcast(&p->cv);
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

int ar_workers_start(ar_app *a, int once, ar_workers **out, char *err, size_t errlen)
{
    int rc = AR_ERR;
    ar_workers *p = calloc(1, sizeof *p);
    *out = NULL;
    if (!p)
        return ar_seterr(err, errlen, AR_ENOMEM, "out of memory for the workers");
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv, NULL);
    p->cfg = a->cfg;
    p->cfg_gen = 1;
    p->rules_gen = a->rules_gen;
    p->rules = a->engine ? ar_engine_ruleset(a->engine) : NULL;
    p->stop = a->stop;
    p->once = once;
    p->started_at = ar_wall_now();
    /* downloads take at most max_parallel_exports workers (the storage
     * lane's limit); one more always serves the forwards */
    p->nw = a->cfg.max_parallel_exports + 1;
    if ((rc = ar_lanes_new(a->cfg.retry_initial, a->cfg.retry_max, &p->lanes, err, errlen)))
        goto out;
    p->w = calloc((size_t)p->nw, sizeof *p->w);
    if (!p->w) {
        rc = ar_seterr(err, errlen, AR_ENOMEM, "out of memory for the workers");
        goto out;
    }
    for (int i = 0; i < p->nw; i++) {
        worker *w = &p->w[i];
        w->pool = p;
        w->app.cfg = a->cfg;
        w->app.stop = a->stop;
        w->cfg_gen = p->cfg_gen;
        if (ar_app_open_http(&w->app) != AR_EXIT_OK || ar_app_open_state(&w->app) != AR_EXIT_OK) {
            rc = ar_seterr(err, errlen, AR_ERR, "a worker could not open its client or ledger");
            goto out;
        }
    }
    /* --once runs every PENDING job now, whatever its backoff said */
    if (once && ar_state_jobs_due_now(p->w[0].app.state, err, errlen)) {
        rc = AR_EIO;
        goto out;
    }
    for (int i = 0; i < p->nw; i++) {
        if (pthread_create(&p->w[i].th, NULL, worker_main, &p->w[i]) != 0) {
            rc = ar_seterr(err, errlen, AR_ERR, "cannot start worker thread %d", i);
            goto out;
        }
        p->w[i].started = 1;
    }
    *out = p;
    p = NULL;
    rc = AR_OK;
out:
    if (p)
        ar_workers_stop(p);
    return rc;
}

void ar_workers_kick(ar_workers *p)
{
    pthread_mutex_lock(&p->mu);
    p->epoch++;
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
}

void ar_workers_set_config(ar_workers *p, const ar_config *cfg, uint64_t rules_gen,
                           ar_engine *rules)
{
    ar_ruleset *old = NULL;
    pthread_mutex_lock(&p->mu);
    if (memcmp(&p->cfg, cfg, sizeof *cfg) != 0) {
        p->cfg = *cfg;
        p->cfg_gen++;
    }
    if (rules_gen != p->rules_gen || !p->rules) {
        old = p->rules;
        p->rules = ar_engine_ruleset(rules);
        p->rules_gen = rules_gen;
    }
    pthread_mutex_unlock(&p->mu);
    ar_ruleset_free(old);
}

void ar_workers_pause(ar_workers *p, int paused, double as_of)
{
    pthread_mutex_lock(&p->mu);
    if (paused)
        p->paused_at = as_of;
    else if (as_of <= p->paused_at)
        paused = p->paused; /* that news is older than the pause */
    if (p->paused != paused) {
        p->paused = paused;
        p->epoch++;
        pthread_cond_broadcast(&p->cv);
    }
    pthread_mutex_unlock(&p->mu);
}

void ar_workers_drain(ar_workers *p)
{
    pthread_mutex_lock(&p->mu);
    p->epoch++;
    pthread_cond_broadcast(&p->cv);
    while (!stopping(p) && !(p->busy == 0 && p->empty_epoch == p->epoch && !p->polls_waiting)) {
        double until = ar_wall_now() + IDLE_WAIT;
        struct timespec ts = {(time_t)until, (long)((until - floor(until)) * 1e9)};
        pthread_cond_timedwait(&p->cv, &p->mu, &ts);
    }
    pthread_mutex_unlock(&p->mu);
}

void ar_workers_stop(ar_workers *p)
{
    if (!p)
        return;
    pthread_mutex_lock(&p->mu);
    p->quit = 1;
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    for (int i = 0; p->w && i < p->nw; i++) {
        if (p->w[i].started)
            pthread_join(p->w[i].th, NULL);
        ar_app_close(&p->w[i].app);
    }
    free(p->w);
    free(p->held);
    ar_ruleset_free(p->rules);
    ar_lanes_free(p->lanes);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->cv);
    free(p);
}

void ar_workers_stats(ar_workers *p, ar_run_stats *st)
{
    pthread_mutex_lock(&p->mu);
    st->jobs_ok += p->st.jobs_ok;
    st->jobs_failed += p->st.jobs_failed;
    st->jobs_gone += p->st.jobs_gone;
    pthread_mutex_unlock(&p->mu);
}

struct ar_lanes *ar_workers_lanes(ar_workers *p)
{
    return p->lanes;
}
