/* daemon.c - see daemon.h */
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

#include "../bindings/jsonq.h"
#include "../core/err.h"
#include "../core/export.h"
#include "../core/log.h"
#include "../core/orthanc.h"
#include "jobs.h"
#include "status.h"

#define CHANGES_LIMIT 200

typedef struct job_list {
    ar_job *v;
    size_t n, cap;
} job_list;

static int job_push(job_list *l, const ar_job *j)
{
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 16;
        ar_job *v = realloc(l->v, cap * sizeof *v);
        if (!v)
            return AR_ENOMEM;
        l->v = v;
        l->cap = cap;
    }
    l->v[l->n++] = *j;
    return AR_OK;
}

static double wall_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Sleep up to `seconds`, waking early on a signal. */
static void nap(ar_app *a, double seconds)
{
    double end = wall_now() + seconds;
    while (!(a->stop && *a->stop) && !(a->reload && *a->reload)) {
        double left = end - wall_now();
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

/* Does any usable rule decide at this level ("study" / "series")? */
static int rules_at(ar_app *a, const char *level)
{
    size_t n = ar_engine_rule_count(a->engine);
    for (size_t i = 0; i < n; i++) {
        const ar_rule_info *r = ar_engine_rule(a->engine, i);
        if (r->ok && r->active && strcmp(r->check_on, level) == 0)
            return 1;
    }
    return 0;
}

/* Decide which rules act on one stable study or series; append jobs.
 * The engine's snapshot is reused for the following stable events of the
 * same study in this cycle (ar_app_load_study), so deciding a study costs
 * the same requests whether it has 1 series or 50.  next_study: the next
 * StableStudy of the same batch, if any: Orthanc logs a study's series
 * stable just before the study, so its snapshot usually names this series
 * and saves the /series/<id> look-up. */
static int decide(ar_app *a, const ar_change *c, const char *next_study, job_list *jobs,
                  char *err, size_t errlen)
{
    int rc = AR_ERR;
    ar_buf sb = {0};
    ar_verdict *v = NULL;
    size_t nv = 0;
    char study_id[128];
    const char *series_id = NULL;

    int is_series = strcmp(c->change_type, "StableSeries") == 0;
    if (!rules_at(a, is_series ? "series" : "study")) {
        rc = AR_OK; /* no rule decides at this level: not even a request */
        goto out;
    }
    if (is_series) {
        series_id = c->id;
        if (!ar_app_holds_series(a, c->id) && next_study && ar_orthanc_valid_id(next_study)) {
            rc = ar_app_load_study(a, next_study, err, errlen);
            if (rc && rc != AR_ENOTFOUND)
                goto out;
        }
        if (ar_app_holds_series(a, c->id)) {
            snprintf(study_id, sizeof study_id, "%s", a->fresh_study);
        } else {
            if ((rc = ar_orthanc_series(a->http, c->id, &sb, err, errlen)))
                goto out;
            if ((rc = ar_engine_decode_parent_study(a->engine, sb.data, sb.len, study_id,
                                                    sizeof study_id, err, errlen)))
                goto out;
        }
    } else {
        snprintf(study_id, sizeof study_id, "%s", c->id);
    }
    if ((rc = ar_app_load_study(a, study_id, err, errlen)))
        goto out;
    if ((rc = ar_engine_evaluate(a->engine, series_id, 0, &v, &nv, err, errlen)))
        goto out;
    for (size_t i = 0; i < nv; i++) {
        const ar_rule_info *ri = ar_engine_rule(a->engine, v[i].rule);
        ar_log_fields f = {.study = study_id, .rule = ri->name, .bytes = -1, .seconds = -1};
        if (v[i].error) {
            ar_log(AR_LOG_ERROR, "rule.error", &f, "%s", v[i].reason);
            continue;
        }
        if (!v[i].matched) {
            ar_log(AR_LOG_DEBUG, "rule.nomatch", &f, "%s", v[i].reason);
            continue;
        }
        ar_job j;
        memset(&j, 0, sizeof j);
        snprintf(j.rule, sizeof j.rule, "%s", ri->name);
        snprintf(j.level, sizeof j.level, "%s", series_id ? "series" : "study");
        snprintf(j.resource_id, sizeof j.resource_id, "%s", series_id ? series_id : study_id);
        snprintf(j.study_id, sizeof j.study_id, "%s", study_id);
        j.change_seq = c->seq;
        snprintf(j.action, sizeof j.action, "%s", ri->action);
        if ((rc = job_push(jobs, &j)))
            goto out;
        ar_log(AR_LOG_INFO, "rule.match", &f, "%s %s matches: %s queued", j.level,
               j.resource_id, j.action);
    }
    rc = AR_OK;
out:
    free(v);
    ar_buf_free(&sb);
    return rc;
}

/* One pass over the change log from the cursor to Orthanc's last change. */
static int poll_changes(ar_app *a, int *outage, char *err, size_t errlen)
{
    int rc = AR_ERR;
    int64_t cursor = 0;
    int has = 0;
    ar_buf b = {0};
    ar_change *ch = NULL;
    job_list jobs = {0};
    ar_watch *adds = NULL;
    const char **dels = NULL;
    size_t nadd = 0, ndel = 0;

    if ((rc = ar_state_get_cursor(a->state, &cursor, &has, err, errlen)))
        return rc;
    if (!has) {
        cursor = 0;
        if (a->cfg.start_at_now) {
            char last[64];
            if ((rc = ar_http_get(a->http, "/changes?last", &b, err, errlen)))
                goto out;
            if ((rc = ar_jsonq_get(b.data, b.len, "Last", last, sizeof last, err, errlen)))
                goto out;
            cursor = strtoll(last, NULL, 10);
            ar_log(AR_LOG_INFO, "cursor.start", NULL,
                   "start_at=now: ignoring the %" PRId64 " change(s) logged before", cursor);
            ar_buf_free(&b);
        }
        if ((rc = ar_state_set_cursor(a->state, cursor, err, errlen)))
            goto out;
    }
    for (;;) {
        size_t n = 0;
        int64_t last = 0;
        int done = 0;
        if (a->stop && *a->stop)
            break;
        ar_buf_free(&b);
        free(ch);
        ch = NULL;
        rc = ar_orthanc_changes(a->http, cursor, CHANGES_LIMIT, &b, err, errlen);
        if (rc)
            goto out;
        if (*outage) {
            ar_log(AR_LOG_INFO, "orthanc.back", NULL, "Orthanc at %s answers again",
                   a->cfg.orthanc_url);
            *outage = 0;
        }
        if ((rc = ar_engine_decode_changes(a->engine, b.data, b.len, &ch, &n, &last, &done, err,
                                           errlen))) {
            char tmp[1024];
            snprintf(tmp, sizeof tmp, "%s", err);
            ar_seterr(err, errlen, AR_ENET, "garbled answer from %s/changes: %s",
                      a->cfg.orthanc_url, tmp);
            rc = AR_ENET; /* try again later */
            goto out;
        }
        a->orthanc_last = last;
        if (n == 0 && last < cursor) {
            ar_log(AR_LOG_WARN, "orthanc.reset", NULL,
                   "Orthanc's change log restarted (last change %" PRId64
                   " is below our position %" PRId64 "): a new database? starting over from "
                   "its beginning",
                   last, cursor);
            cursor = 0;
            if ((rc = ar_state_set_cursor(a->state, 0, err, errlen)))
                goto out;
            continue;
        }
        int64_t upto = cursor;
        int stop_batch = 0;
        free(adds);
        free(dels);
        adds = calloc(n ? n : 1, sizeof *adds);
        dels = calloc(n ? n : 1, sizeof *dels);
        nadd = ndel = 0;
        if (!adds || !dels) {
            rc = ar_seterr(err, errlen, AR_ENOMEM, "out of memory reading changes");
            goto out;
        }
        for (size_t i = 0; i < n && !stop_batch; i++) {
            const ar_change *c = &ch[i];
            if (strcmp(c->change_type, "StableStudy") == 0 ||
                strcmp(c->change_type, "StableSeries") == 0) {
                char derr[1024] = "";
                const char *next_study = NULL;
                for (size_t k = i + 1; k < n && !next_study; k++)
                    if (strcmp(ch[k].change_type, "StableStudy") == 0)
                        next_study = ch[k].id;
                int drc = decide(a, c, next_study, &jobs, derr, sizeof derr);
                if (drc == AR_ENOTFOUND) {
                    ar_log_fields f = {.study = c->id, .bytes = -1, .seconds = -1};
                    ar_log(AR_LOG_INFO, "study.gone", &f,
                           "%s %s was deleted before it could be examined: %s",
                           c->resource_type, c->id, derr);
                } else if (drc == AR_ENET || drc == AR_ENOMEM) {
                    snprintf(err, errlen, "%s", derr);
                    rc = drc;
                    stop_batch = 1;
                    break;
                } else if (drc) {
                    /* the series' id is not a study id: keep the study field honest */
                    int is_study = strcmp(c->resource_type, "Study") == 0;
                    ar_log_fields f = {.study = is_study ? c->id : NULL, .bytes = -1,
                                       .seconds = -1};
                    ar_log(AR_LOG_ERROR, "study.skipped", &f,
                           "%s %s could not be decided and is skipped: %s", c->resource_type,
                           c->id, derr);
                    a->decisions_failed++;
                }
            }
            if (strcmp(c->change_type, "NewStudy") == 0 ||
                strcmp(c->change_type, "NewSeries") == 0) {
                ar_watch *w = &adds[nadd++];
                snprintf(w->level, sizeof w->level, "%s",
                         c->change_type[3] == 'S' && c->change_type[4] == 't' ? "study" : "series");
                snprintf(w->resource_id, sizeof w->resource_id, "%s", c->id);
                w->seq = c->seq;
            } else if (strcmp(c->change_type, "StableStudy") == 0 ||
                       strcmp(c->change_type, "StableSeries") == 0) {
                dels[ndel++] = c->id;
            }
            upto = c->seq;
        }
        if (n == 0 && last > upto)
            upto = last;
        if (upto != cursor || jobs.n) {
            char serr[1024] = "";
            /* an arrival added and stabilised in the same batch: the delete wins
             * because adds are applied first */
            if (ar_state_record_batch(a->state, jobs.v, jobs.n, adds, nadd, dels, ndel, upto,
                                      serr, sizeof serr)) {
                rc = ar_seterr(err, errlen, AR_EIO, "%s", serr);
                goto out;
            }
            cursor = upto;
        }
        jobs.n = 0;
        if (stop_batch)
            goto out; /* rc already set */
        if (done || n == 0)
            break;
    }
    rc = AR_OK;
out:
    free(adds);
    free(dels);
    free(jobs.v);
    free(ch);
    ar_buf_free(&b);
    return rc;
}

/* Is this watched arrival stable by Orthanc's word (IsStable) or by age
 * (LastUpdate older than stable_age)?  AR_ENOTFOUND when it is gone. */
static int arrival_stable(ar_app *a, const ar_watch *w, int *stable, char *err, size_t errlen)
{
    char path[256], v[64];
    ar_buf b = {0};
    int rc;
    *stable = 0;
    if (!ar_orthanc_valid_id(w->resource_id))
        return AR_ENOTFOUND;
    snprintf(path, sizeof path, "/%s/%s", strcmp(w->level, "study") == 0 ? "studies" : "series",
             w->resource_id);
    if ((rc = ar_http_get(a->http, path, &b, err, errlen)))
        goto out;
    if (ar_jsonq_get(b.data, b.len, "IsStable", v, sizeof v, NULL, 0) == 0 &&
        strcmp(v, "true") == 0) {
        *stable = 1;
    } else if (ar_jsonq_get(b.data, b.len, "LastUpdate", v, sizeof v, NULL, 0) == 0) {
        struct tm tm;
        memset(&tm, 0, sizeof tm);
        if (sscanf(v, "%4d%2d%2dT%2d%2d%2d", &tm.tm_year, &tm.tm_mon, &tm.tm_mday, &tm.tm_hour,
                   &tm.tm_min, &tm.tm_sec) == 6) {
            tm.tm_year -= 1900;
            tm.tm_mon -= 1;
            tm.tm_isdst = -1;
            time_t t = mktime(&tm); /* Orthanc writes LastUpdate in local time */
            if (t != (time_t)-1 && difftime(time(NULL), t) > a->cfg.stable_age)
                *stable = 1;
        }
    }
    rc = AR_OK;
out:
    ar_buf_free(&b);
    return rc;
}

/* Studies/series Orthanc announced but never logged as stable (it keeps its
 * stability timers in memory: a restart mid-arrival loses the event).  An
 * arrival found stable is confirmed only after one more pass over the change
 * log, so an event logged meanwhile is handled the normal way, never twice. */
static void check_unlogged(ar_app *a, int *outage)
{
    char err[1024] = "";
    ar_watch *w = NULL, *w2 = NULL;
    size_t n = 0, n2 = 0, ncand = 0;
    char (*cand)[128] = NULL;
    job_list jobs = {0};
    int64_t cursor = 0;
    int has = 0;

    if (ar_state_watch_list(a->state, &w, &n, err, sizeof err) || n == 0)
        goto out;
    cand = calloc(n, sizeof *cand);
    if (!cand)
        goto out;
    for (size_t i = 0; i < n; i++) {
        int stable = 0;
        int rc = arrival_stable(a, &w[i], &stable, err, sizeof err);
        if (rc == AR_ENOTFOUND) {
            const char *del = w[i].resource_id;
            if (ar_state_get_cursor(a->state, &cursor, &has, err, sizeof err) == 0)
                ar_state_record_batch(a->state, NULL, 0, NULL, 0, &del, 1, cursor, err, sizeof err);
        } else if (rc == AR_OK && stable) {
            snprintf(cand[ncand++], sizeof cand[0], "%s", w[i].resource_id);
        } else if (rc) {
            goto out; /* Orthanc trouble: the next cycle will tell */
        }
    }
    if (!ncand)
        goto out;
    if (poll_changes(a, outage, err, sizeof err))
        goto out;
    if (ar_state_watch_list(a->state, &w2, &n2, err, sizeof err))
        goto out;
    for (size_t i = 0; i < n2; i++) {
        int is_cand = 0;
        for (size_t k = 0; k < ncand && !is_cand; k++)
            is_cand = strcmp(cand[k], w2[i].resource_id) == 0;
        if (!is_cand)
            continue;
        ar_change c;
        memset(&c, 0, sizeof c);
        c.seq = w2[i].seq;
        snprintf(c.change_type, sizeof c.change_type, "%s",
                 strcmp(w2[i].level, "study") == 0 ? "StableStudy" : "StableSeries");
        snprintf(c.resource_type, sizeof c.resource_type, "%s",
                 strcmp(w2[i].level, "study") == 0 ? "Study" : "Series");
        snprintf(c.id, sizeof c.id, "%s", w2[i].resource_id);
        ar_log_fields f = {.study = c.id, .bytes = -1, .seconds = -1};
        ar_log(AR_LOG_WARN, "stable.unlogged", &f,
               "%s %s arrived (change %" PRId64 ") but Orthanc never logged it stable "
               "(restarted meanwhile?); treating it as stable now",
               w2[i].level, c.id, c.seq);
        jobs.n = 0;
        int rc = decide(a, &c, NULL, &jobs, err, sizeof err);
        if (rc == AR_ENET || rc == AR_ENOMEM)
            goto out;
        const char *del = c.id;
        if (ar_state_get_cursor(a->state, &cursor, &has, err, sizeof err) ||
            ar_state_record_batch(a->state, jobs.v, jobs.n, NULL, 0, &del, 1, cursor, err,
                                  sizeof err)) {
            ar_log(AR_LOG_ERROR, "state.error", &f, "%s", err);
            goto out;
        }
    }
out:
    free(jobs.v);
    free(cand);
    free(w);
    free(w2);
}

static double backoff(const ar_config *c, int attempts)
{
    double d = c->retry_initial;
    for (int i = 1; i < attempts && d < c->retry_max; i++)
        d *= 2;
    return d > c->retry_max ? c->retry_max : d;
}

/* Ledger bookkeeping of one job's outcome.  Returns 1 when the failure
 * suggests Orthanc is down (stop starting jobs this cycle). */
static int record_outcome(ar_app *a, const ar_job *j, int rc, const char *err, int once,
                          ar_run_stats *st)
{
    ar_log_fields f = {.study = j->study_id, .rule = j->rule, .bytes = -1, .seconds = -1};
    char serr[1024] = "";
    if (rc == AR_OK) {
        st->jobs_ok++;
    } else if (rc == AR_ESTOP) {
        ar_log(AR_LOG_INFO, "job.abandoned", &f, "job %" PRId64 " abandoned: %s (will be redone)",
               j->id, err);
    } else if (rc == AR_ENOTFOUND) {
        st->jobs_gone++;
        ar_log(AR_LOG_WARN, "job.gone", &f, "job %" PRId64 ": %s %s is gone from Orthanc: %s",
               j->id, j->level, j->resource_id, err);
        if (ar_state_job_gone(a->state, j->id, err, serr, sizeof serr))
            ar_log(AR_LOG_ERROR, "state.error", &f, "%s", serr);
    } else {
        st->jobs_failed++;
        int attempts = j->attempts + 1;
        double retry_at = 0;
        if (ar_err_retryable(rc) && attempts < a->cfg.retry_attempts)
            retry_at = wall_now() + backoff(&a->cfg, attempts);
        if (retry_at > 0)
            ar_log(AR_LOG_ERROR, "job.failed", &f,
                   "job %" PRId64 " (%s %s) attempt %d failed: %s; retrying in %.0f s", j->id,
                   j->action, j->resource_id, attempts, err, retry_at - wall_now());
        else
            ar_log(AR_LOG_ERROR, "job.failed", &f,
                   "job %" PRId64 " (%s %s) failed for good after %d attempt(s): %s", j->id,
                   j->action, j->resource_id, attempts, err);
        if (ar_state_job_failed(a->state, j->id, err, retry_at, serr, sizeof serr))
            ar_log(AR_LOG_ERROR, "state.error", &f, "%s", serr);
        return rc == AR_ENET && !once;
    }
    return 0;
}

/* A pool of export slots: each busy slot runs one job's transfer in its own
 * thread with its own keep-alive client, so a huge study does not hold back
 * small ones; preparing and finishing stay in this thread. */
typedef struct slot {
    ar_job_work w;
    ar_http *http;
    pthread_t th;
    int busy, done;
    struct pool *pool;
} slot;

typedef struct pool {
    pthread_mutex_t mu;
    pthread_cond_t cv;
} pool;

static void *slot_main(void *arg)
{
    slot *s = arg;
    ar_job_transfer(&s->w);
    pthread_mutex_lock(&s->pool->mu);
    s->done = 1;
    pthread_cond_signal(&s->pool->cv);
    pthread_mutex_unlock(&s->pool->mu);
    return NULL;
}

/* Older pending jobs of the same rule and resource are superseded by the
 * newest one: it exports the latest stable state, whole. */
static void supersede(ar_app *a, ar_job *jobs, size_t n, unsigned char *skip)
{
    char err[1024];
    for (size_t i = 0; i < n; i++)
        for (size_t k = i + 1; k < n && !skip[i]; k++)
            if (strcmp(jobs[i].rule, jobs[k].rule) == 0 &&
                strcmp(jobs[i].resource_id, jobs[k].resource_id) == 0) {
                char why[64];
                snprintf(why, sizeof why, "(superseded by job %" PRId64 ")", jobs[k].id);
                if (ar_state_job_done(a->state, jobs[i].id, why, 0, err, sizeof err) == 0)
                    skip[i] = 1;
            }
}

/* Run the pending jobs that are due (all pending ones when once). */
static int run_jobs(ar_app *a, int once, ar_run_stats *st)
{
    char err[2048] = "";
    ar_job *jobs = NULL;
    unsigned char *skip = NULL;
    slot *slots = NULL;
    size_t n = 0, next = 0;
    int nslots = a->cfg.max_parallel_exports > 0 ? a->cfg.max_parallel_exports : 1;
    int halt = 0, rc = AR_OK;
    pool pl;

    if (ar_state_due_jobs(a->state, once ? 1e300 : wall_now(), &jobs, &n, err, sizeof err)) {
        ar_log(AR_LOG_ERROR, "state.error", NULL, "%s", err);
        return AR_EIO;
    }
    if (n == 0)
        goto out;
    skip = calloc(n, 1);
    slots = calloc((size_t)nslots, sizeof *slots);
    if (!skip || !slots) {
        rc = AR_ENOMEM;
        goto out;
    }
    supersede(a, jobs, n, skip);
    pthread_mutex_init(&pl.mu, NULL);
    pthread_cond_init(&pl.cv, NULL);
    for (;;) {
        /* start jobs while a slot is free */
        for (int i = 0; i < nslots && !halt; i++) {
            slot *s = &slots[i];
            if (s->busy)
                continue;
            while (next < n && skip[next])
                next++;
            if (next >= n || (a->stop && *a->stop))
                break;
            const ar_job *j = &jobs[next++];
            err[0] = 0;
            int prc = ar_job_prepare(a, j, &s->w, err, sizeof err);
            if (prc) {
                halt = record_outcome(a, j, prc, err, once, st);
                i--; /* the slot is still free */
                continue;
            }
            if (!s->http) {
                ar_http_opts ho = ar_app_http_opts(a);
                if (ar_http_new(&ho, &s->http, err, sizeof err)) {
                    record_outcome(a, j, AR_ENET, err, once, st);
                    ar_job_work_free(&s->w);
                    halt = 1;
                    break;
                }
            }
            s->w.http = s->http;
            s->pool = &pl;
            s->busy = 1;
            s->done = 0;
            if (pthread_create(&s->th, NULL, slot_main, s) != 0) {
                ar_job_transfer(&s->w); /* no thread: run it here */
                s->done = 1;
                s->th = pthread_self();
            }
        }
        int busy = 0;
        for (int i = 0; i < nslots; i++)
            busy += slots[i].busy;
        if (!busy)
            break;
        /* wait for a slot to finish */
        pthread_mutex_lock(&pl.mu);
        for (;;) {
            int any = 0;
            for (int i = 0; i < nslots; i++)
                any |= slots[i].busy && slots[i].done;
            if (any)
                break;
            pthread_cond_wait(&pl.cv, &pl.mu);
        }
        pthread_mutex_unlock(&pl.mu);
        for (int i = 0; i < nslots; i++) {
            slot *s = &slots[i];
            if (!s->busy || !s->done)
                continue;
            if (!pthread_equal(s->th, pthread_self()))
                pthread_join(s->th, NULL);
            s->busy = 0;
            err[0] = 0;
            int frc = ar_job_finish(a, &s->w, err, sizeof err);
            if (record_outcome(a, &s->w.job, frc, err, once, st))
                halt = 1;
            ar_job_work_free(&s->w);
        }
    }
    pthread_mutex_destroy(&pl.mu);
    pthread_cond_destroy(&pl.cv);
out:
    for (int i = 0; slots && i < nslots; i++)
        if (slots[i].http)
            ar_http_free(slots[i].http);
    free(slots);
    free(skip);
    free(jobs);
    return rc;
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

int ar_daemon_run(ar_app *a, int once, ar_run_stats *st)
{
    char err[2048] = "";
    int outage = 0, removed = 0;
    memset(st, 0, sizeof *st);
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

    for (;;) {
        if (a->reload && *a->reload) {
            *a->reload = 0;
            ar_log(AR_LOG_INFO, "reload", NULL, "SIGHUP: reloading configuration and rules");
            ar_app_reload_config(a);
            ar_app_maybe_reload_rules(a, 1);
        } else {
            ar_app_maybe_reload_rules(a, 0);
        }
        err[0] = 0;
        a->fresh_study[0] = 0;
        int rc = poll_changes(a, &outage, err, sizeof err);
        if (rc == AR_ENET || rc == AR_EHTTP || rc == AR_ENOTFOUND) {
            st->poll_errors++;
            if (once) {
                ar_log(AR_LOG_ERROR, "orthanc.unreachable", NULL, "%s", err);
                run_jobs(a, once, st); /* jobs recorded before the error still run */
                return rc;
            }
            if (!outage) {
                ar_log(AR_LOG_ERROR, "orthanc.unreachable", NULL,
                       "%s; will keep trying every %.1f s", err, a->cfg.poll_interval);
                outage = 1;
            }
        } else if (rc) {
            ar_log(AR_LOG_ERROR, "poll.error", NULL, "%s", err);
            if (once)
                return rc;
        }
        if (!outage && rc == AR_OK)
            check_unlogged(a, &outage);
        if (!outage)
            run_jobs(a, once, st);
        write_status(a, outage, err);
        if (once || (a->stop && *a->stop))
            break;
        nap(a, a->cfg.poll_interval);
        if (a->stop && *a->stop)
            break;
    }
    return AR_OK;
}
