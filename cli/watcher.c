/* watcher.c - see watcher.h */
#include "../core/clock.h"
#include "watcher.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../core/err.h"
#include "../core/log.h"
#include "../core/orthanc.h"
#include "../core/orthanc_json.h"

#define CHANGES_LIMIT 200
#define DECISIONS_PER_PASS 32

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

void ar_rule_lane(const ar_rule_info *r, char *lane, size_t lanelen)
{
    if (strcmp(r->action, "forward") == 0)
        snprintf(lane, lanelen, "modality:%.*s", AR_LANE_LEN - 16, r->destination);
    else
        snprintf(lane, lanelen, "storage");
}

/* A stable change that could not be decided becomes a decision job (the
 * watcher's lane "decide"), recorded with the batch: tried again in this
 * cycle's decision pass, then with backoff while the trouble is transient;
 * listed by `jobs --failed` and retryable when it is not. */
static int decision_job(ar_app *a, const ar_change *c, const char *why, job_list *jobs,
                        char *err, size_t errlen)
{
    ar_job j;
    int is_study = c->kind == AR_CHANGE_STABLE_STUDY;
    ar_log_fields f = {.study = is_study ? c->id : NULL, .bytes = -1, .seconds = -1};
    memset(&j, 0, sizeof j);
    snprintf(j.level, sizeof j.level, "%s", is_study ? "study" : "series");
    snprintf(j.resource_id, sizeof j.resource_id, "%s", c->id);
    snprintf(j.study_id, sizeof j.study_id, "%s", is_study ? c->id : "");
    snprintf(j.action, sizeof j.action, "decide");
    snprintf(j.lane, sizeof j.lane, "decide");
    j.change_seq = c->seq;
    j.priority = AR_PRIORITY_NORMAL;
    ar_log(AR_LOG_WARN, "study.undecided", &f,
           "%s %s could not be decided (%s); recorded as a decision job to try again",
           c->resource_type, c->id, why);
    if (job_push(jobs, &j))
        return ar_seterr(err, errlen, AR_ENOMEM, "out of memory recording a decision job");
    (void)a;
    return AR_OK;
}

/* How long after Orthanc first says IsStable an unlogged arrival is acted
 * on: Orthanc logs its Stable* change when its own timer fires, in the same
 * moment it turns IsStable; the margin keeps the fallback well clear of that
 * (equal StableAge and stable_age must never export a study twice). */
static double stable_margin(const ar_app *a)
{
    double m = 2 * a->cfg.poll_interval;
    return m < 2 ? 2 : m;
}

/* When to look at an arrival first: stable_age after it was seen, plus the
 * margin (Orthanc normally logs it stable before then). */
static double first_check(const ar_app *a, double seen)
{
    return seen + a->cfg.stable_age + stable_margin(a);
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

/* Make *snap a snapshot of study_id: the one it holds when it is that
 * study, else a new one (the old one freed). */
static int snapshot_of(ar_app *a, const char *study_id, ar_study **snap, char *err,
                       size_t errlen)
{
    if (*snap && strcmp(ar_study_id(*snap), study_id) == 0)
        return AR_OK;
    ar_study_free(*snap);
    *snap = NULL;
    return ar_app_load_study(a, study_id, snap, err, errlen);
}

/* Decide which rules act on one stable study or series; append jobs.
 * *snap is the caller's snapshot of this pass (a value it owns and frees):
 * it is reused for the following stable events of the same study, so
 * deciding a study costs the same requests whether it has 1 series or 50.
 * next_study: the next StableStudy of the same batch, if any: Orthanc logs a
 * study's series stable just before the study, so its snapshot usually names
 * this series and saves the /series/<id> look-up. */
static int decide(ar_app *a, const ar_change *c, const char *next_study, ar_study **snap,
                  job_list *jobs, char *err, size_t errlen)
{
    int rc = AR_ERR;
    ar_buf sb = {0};
    ar_verdict *v = NULL;
    size_t nv = 0;
    char study_id[128];
    const char *series_id = NULL;

    int is_series = c->kind == AR_CHANGE_STABLE_SERIES;
    if (!rules_at(a, is_series ? "series" : "study")) {
        rc = AR_OK; /* no rule decides at this level: not even a request */
        goto out;
    }
    if (is_series) {
        series_id = c->id;
        if (!ar_study_has_series(*snap, c->id) && next_study && ar_orthanc_valid_id(next_study)) {
            rc = snapshot_of(a, next_study, snap, err, errlen);
            if (rc && rc != AR_ENOTFOUND)
                goto out;
        }
        if (ar_study_has_series(*snap, c->id)) {
            snprintf(study_id, sizeof study_id, "%s", ar_study_id(*snap));
        } else {
            if ((rc = ar_orthanc_series(a->http, c->id, &sb, err, errlen)))
                goto out;
            if ((rc = ar_ojson_parent_study(sb.data, sb.len, study_id, sizeof study_id, err,
                                            errlen)))
                goto out;
        }
    } else {
        snprintf(study_id, sizeof study_id, "%s", c->id);
    }
    if ((rc = snapshot_of(a, study_id, snap, err, errlen)))
        goto out;
    if ((rc = ar_engine_evaluate(a->engine, *snap, series_id, 0, &v, &nv, err, errlen)))
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
        ar_rule_lane(ri, j.lane, sizeof j.lane);
        j.priority = ri->priority;
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
int ar_watch_changes(ar_app *a, int *outage, char *err, size_t errlen)
{
    int rc = AR_ERR;
    int64_t cursor = 0;
    int has = 0;
    ar_buf b = {0};
    ar_change *ch = NULL;
    job_list jobs = {0};
    ar_study *snap = NULL; /* this pass's snapshot, reused by decide() */
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
            if ((rc = ar_ojson_get(b.data, b.len, "Last", last, sizeof last, err, errlen)))
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
        if ((rc = ar_ojson_changes(b.data, b.len, &ch, &n, &last, &done, err, errlen))) {
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
            int stable = c->kind == AR_CHANGE_STABLE_STUDY || c->kind == AR_CHANGE_STABLE_SERIES;
            if (stable) {
                char derr[1024] = "";
                const char *next_study = NULL;
                for (size_t k = i + 1; k < n && !next_study; k++)
                    if (ch[k].kind == AR_CHANGE_STABLE_STUDY)
                        next_study = ch[k].id;
                int drc = decide(a, c, next_study, &snap, &jobs, derr, sizeof derr);
                if (drc == AR_ENOTFOUND) {
                    ar_log_fields f = {.study = c->id, .bytes = -1, .seconds = -1};
                    ar_log(AR_LOG_INFO, "study.gone", &f,
                           "%s %s was deleted before it could be examined: %s",
                           c->resource_type, c->id, derr);
                } else if (drc == AR_ENET && !ar_orthanc_answers(a->http)) {
                    /* Orthanc itself is gone: stop here, the cursor stays */
                    snprintf(err, errlen, "%s", derr);
                    rc = drc;
                    stop_batch = 1;
                    break;
                } else if (drc) {
                    /* this change's own trouble: a decision job, the log moves on */
                    if ((rc = decision_job(a, c, derr, &jobs, err, errlen)))
                        goto out;
                }
            }
            if (c->kind == AR_CHANGE_NEW_STUDY || c->kind == AR_CHANGE_NEW_SERIES) {
                ar_watch *w = &adds[nadd++];
                snprintf(w->level, sizeof w->level, "%s",
                         c->kind == AR_CHANGE_NEW_STUDY ? "study" : "series");
                snprintf(w->resource_id, sizeof w->resource_id, "%s", c->id);
                w->seq = c->seq;
                w->first_seen = ar_wall_now();
                w->next_check = first_check(a, w->first_seen);
            } else if (stable) {
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
            a->jobs_recorded += jobs.n;
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
    ar_study_free(snap);
    free(adds);
    free(dels);
    free(jobs.v);
    free(ch);
    ar_buf_free(&b);
    return rc;
}

/* Does Orthanc say this arrival is stable?  AR_ENOTFOUND when it is gone.
 * One request; Orthanc's LastUpdate (local time, 1-second) is never read. */
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
    *stable = ar_ojson_get(b.data, b.len, "IsStable", v, sizeof v, NULL, 0) == 0 &&
              strcmp(v, "true") == 0;
    rc = AR_OK;
out:
    ar_buf_free(&b);
    return rc;
}

/* Studies/series Orthanc announced but never logged as stable (it keeps its
 * stability timers in memory: a restart mid-arrival loses the event).  Each
 * arrival is looked at only when due (stable_age + margin after it was
 * seen, then with a growing gap while Orthanc says it is still arriving:
 * O(log duration) requests per arrival, not one per cycle), and acted on
 * only once Orthanc has said IsStable for longer than the margin and one
 * more pass over the change log did not bring its Stable* change. */
void ar_watch_arrivals(ar_app *a, int *outage)
{
    char err[1024] = "";
    ar_watch *w = NULL, *w2 = NULL;
    size_t n = 0, n2 = 0, ncand = 0;
    char (*cand)[128] = NULL;
    job_list jobs = {0};
    ar_study *snap = NULL; /* this pass's snapshot, reused by decide() */
    int64_t cursor = 0;
    int has = 0;
    double now = ar_wall_now(), margin = stable_margin(a);

    if (ar_state_watch_list(a->state, now, &w, &n, err, sizeof err) || n == 0)
        goto out;
    cand = calloc(n, sizeof *cand);
    if (!cand)
        goto out;
    for (size_t i = 0; i < n; i++) {
        ar_watch *x = &w[i];
        int stable = 0;
        if (x->first_seen <= 0)
            x->first_seen = now; /* migrated from schema 1 */
        if (!rules_at(a, x->level)) {
            /* no rule decides at this level: not even a request */
            x->next_check = now + a->cfg.stable_age + margin;
            ar_state_watch_update(a->state, x, err, sizeof err);
            continue;
        }
        int rc = arrival_stable(a, x, &stable, err, sizeof err);
        if (rc == AR_ENOTFOUND) {
            const char *del = x->resource_id;
            if (ar_state_get_cursor(a->state, &cursor, &has, err, sizeof err) == 0)
                ar_state_record_batch(a->state, NULL, 0, NULL, 0, &del, 1, cursor, err, sizeof err);
            continue;
        }
        if (rc)
            goto out; /* Orthanc trouble: the next cycle will tell */
        if (!stable) {
            /* still arriving: look again after a gap that grows with its age */
            double gap = now - x->first_seen;
            if (gap < a->cfg.stable_age)
                gap = a->cfg.stable_age;
            if (gap < margin)
                gap = margin;
            if (gap > 600)
                gap = 600;
            x->stable_seen = 0;
            x->next_check = now + gap;
        } else if (x->stable_seen <= 0) {
            x->stable_seen = now; /* Orthanc's change may be on its way */
            x->next_check = now + margin;
        } else if (now - x->stable_seen >= margin) {
            snprintf(cand[ncand++], sizeof cand[0], "%s", x->resource_id);
            continue;
        } else {
            x->next_check = x->stable_seen + margin;
        }
        if (ar_state_watch_update(a->state, x, err, sizeof err))
            ar_log(AR_LOG_ERROR, "state.error", NULL, "%s", err);
    }
    if (!ncand)
        goto out;
    if (ar_watch_changes(a, outage, err, sizeof err))
        goto out;
    if (ar_state_watch_list(a->state, 1e300, &w2, &n2, err, sizeof err))
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
        c.kind = strcmp(w2[i].level, "study") == 0 ? AR_CHANGE_STABLE_STUDY
                                                   : AR_CHANGE_STABLE_SERIES;
        snprintf(c.resource_type, sizeof c.resource_type, "%s",
                 strcmp(w2[i].level, "study") == 0 ? "Study" : "Series");
        snprintf(c.id, sizeof c.id, "%s", w2[i].resource_id);
        ar_log_fields f = {.study = c.kind == AR_CHANGE_STABLE_STUDY ? c.id : NULL, .bytes = -1,
                           .seconds = -1};
        ar_log(AR_LOG_WARN, "stable.unlogged", &f,
               "%s %s arrived (change %" PRId64 ") and Orthanc has said it is stable for %.0f s "
               "but never logged it (restarted meanwhile?); treating it as stable now",
               w2[i].level, c.id, c.seq, now - w2[i].stable_seen);
        jobs.n = 0;
        char derr[1024] = "";
        int rc = decide(a, &c, NULL, &snap, &jobs, derr, sizeof derr);
        if (rc == AR_ENET && !ar_orthanc_answers(a->http))
            goto out;
        if (rc && rc != AR_ENOTFOUND && decision_job(a, &c, derr, &jobs, err, sizeof err))
            goto out;
        const char *del = c.id;
        if (ar_state_get_cursor(a->state, &cursor, &has, err, sizeof err) ||
            ar_state_record_batch(a->state, jobs.v, jobs.n, NULL, 0, &del, 1, cursor, err,
                                  sizeof err)) {
            ar_log(AR_LOG_ERROR, "state.error", &f, "%s", err);
            goto out;
        }
        a->jobs_recorded += jobs.n;
    }
out:
    ar_study_free(snap);
    free(jobs.v);
    free(cand);
    free(w);
    free(w2);
}

/* The message of a decision that failed, naming what to fix. */
static void decision_error(const ar_app *a, int rc, const char *why, char *out, size_t outlen)
{
    if (rc == AR_ENOMEM)
        snprintf(out, outlen,
                 "the study is too big for the rule engine's memory cap (rule_memory_mb %ld): %s",
                 a->cfg.rule_memory_mb, why);
    else
        snprintf(out, outlen, "%s", why);
}

void ar_watch_decisions(ar_app *a, double horizon)
{
    char err[1024] = "";
    ar_job *dj = NULL;
    size_t n = 0;
    job_list jobs = {0};
    ar_study *snap = NULL; /* this pass's snapshot, reused by decide() */

    if (ar_state_claimable(a->state, "decide", horizon, ar_wall_now(), DECISIONS_PER_PASS, &dj, &n,
                           err, sizeof err)) {
        ar_log(AR_LOG_ERROR, "state.error", NULL, "%s", err);
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        const ar_job *d = &dj[i];
        ar_change c;
        char derr[1024] = "", why[1400], serr[1024] = "";
        int64_t cursor = 0;
        int has = 0;
        int is_study = strcmp(d->level, "study") == 0;
        ar_log_fields f = {.study = is_study ? d->resource_id : NULL, .bytes = -1, .seconds = -1};
        memset(&c, 0, sizeof c);
        c.seq = d->change_seq;
        c.kind = is_study ? AR_CHANGE_STABLE_STUDY : AR_CHANGE_STABLE_SERIES;
        snprintf(c.change_type, sizeof c.change_type, "%s", is_study ? "StableStudy" : "StableSeries");
        snprintf(c.resource_type, sizeof c.resource_type, "%s", is_study ? "Study" : "Series");
        snprintf(c.id, sizeof c.id, "%s", d->resource_id);
        jobs.n = 0;
        int rc = decide(a, &c, NULL, &snap, &jobs, derr, sizeof derr);
        if (rc == AR_OK) {
            if (ar_state_get_cursor(a->state, &cursor, &has, serr, sizeof serr) ||
                ar_state_record_batch(a->state, jobs.v, jobs.n, NULL, 0, NULL, 0, cursor, serr,
                                      sizeof serr) ||
                ar_state_job_done(a->state, d->id, "", 0, serr, sizeof serr)) {
                ar_log(AR_LOG_ERROR, "state.error", &f, "%s", serr);
                goto out;
            }
            a->jobs_recorded += jobs.n;
            ar_log(AR_LOG_INFO, "decision.done", &f,
                   "decision job %" PRId64 ": %s %s decided on attempt %d, %zu job(s) queued",
                   d->id, d->level, d->resource_id, d->attempts + 1, jobs.n);
        } else if (rc == AR_ENOTFOUND) {
            ar_log(AR_LOG_INFO, "study.gone", &f, "%s %s was deleted before it could be decided: %s",
                   d->level, d->resource_id, derr);
            if (ar_state_job_gone(a->state, d->id, derr, serr, sizeof serr))
                ar_log(AR_LOG_ERROR, "state.error", &f, "%s", serr);
        } else {
            int attempts = d->attempts + 1;
            double retry_at = 0;
            decision_error(a, rc, derr, why, sizeof why);
            if (rc == AR_ENET && attempts < a->cfg.retry_attempts) {
                double delay = a->cfg.retry_initial;
                for (int k = 1; k < attempts && delay < a->cfg.retry_max; k++)
                    delay *= 2;
                retry_at = ar_wall_now() + (delay > a->cfg.retry_max ? a->cfg.retry_max : delay);
            }
            if (retry_at > 0)
                ar_log(AR_LOG_ERROR, "decision.failed", &f,
                       "decision job %" PRId64 " (%s %s) attempt %d failed: %s; retrying in %.0f s",
                       d->id, d->level, d->resource_id, attempts, why, retry_at - ar_wall_now());
            else
                ar_log(AR_LOG_ERROR, "decision.failed", &f,
                       "decision job %" PRId64 " (%s %s) failed for good after %d attempt(s): %s "
                       "(`autorthanc retry %" PRId64 "` tries again)",
                       d->id, d->level, d->resource_id, attempts, why, d->id);
            if (ar_state_job_failed(a->state, d->id, why, retry_at, serr, sizeof serr))
                ar_log(AR_LOG_ERROR, "state.error", &f, "%s", serr);
            a->decisions_failed++;
        }
    }
out:
    ar_study_free(snap);
    free(jobs.v);
    free(dj);
}
