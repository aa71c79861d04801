/* lanes.c - see lanes.h */
#include "lanes.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"

struct ar_lanes {
    pthread_mutex_t mu;
    double probe_initial, probe_max;
    ar_lane_info *v;
    size_t n, cap;
};

int ar_lanes_new(double probe_initial, double probe_max, ar_lanes **out, char *err,
                 size_t errlen)
{
    ar_lanes *l = calloc(1, sizeof *l);
    *out = NULL;
    if (!l)
        return ar_seterr(err, errlen, AR_ENOMEM, "out of memory for the lane table");
    pthread_mutex_init(&l->mu, NULL);
    l->probe_initial = probe_initial > 0 ? probe_initial : 1;
    l->probe_max = probe_max >= l->probe_initial ? probe_max : l->probe_initial;
    *out = l;
    return AR_OK;
}

void ar_lanes_free(ar_lanes *l)
{
    if (!l)
        return;
    pthread_mutex_destroy(&l->mu);
    free(l->v);
    free(l);
}

/* The lane called name, created up when new; NULL only when out of memory.
 * Called with the mutex held.  Kept sorted by name. */
static ar_lane_info *lane(ar_lanes *l, const char *name)
{
    size_t lo = 0, hi = l->n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        int c = strcmp(l->v[mid].name, name);
        if (c == 0)
            return &l->v[mid];
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 8;
        ar_lane_info *v = realloc(l->v, cap * sizeof *v);
        if (!v)
            return NULL;
        l->v = v;
        l->cap = cap;
    }
    memmove(&l->v[lo + 1], &l->v[lo], (l->n - lo) * sizeof *l->v);
    l->n++;
    ar_lane_info *x = &l->v[lo];
    memset(x, 0, sizeof *x);
    snprintf(x->name, sizeof x->name, "%s", name);
    return x;
}

static double backoff(const ar_lanes *l, int failures)
{
    double d = l->probe_initial;
    for (int i = 1; i < failures && d < l->probe_max; i++)
        d *= 2;
    return d > l->probe_max ? l->probe_max : d;
}

int ar_lanes_try_start(ar_lanes *l, const char *name, int concurrency, int in_flight, int poll,
                       int64_t job_id, double now, int *probe)
{
    int ok = 0;
    *probe = 0;
    pthread_mutex_lock(&l->mu);
    ar_lane_info *x = lane(l, name);
    if (!x)
        goto out;
    if (poll) {
        ok = 1;
    } else if (x->down) {
        if (!x->probe_job && now >= x->next_probe_at && x->running + in_flight < concurrency) {
            x->probe_job = job_id;
            *probe = 1;
            ok = 1;
        }
    } else {
        ok = x->running + in_flight < (concurrency > 0 ? concurrency : 1);
    }
    if (ok)
        x->running++;
out:
    pthread_mutex_unlock(&l->mu);
    return ok;
}

/* Apply a verdict on the destination.  Mutex held. */
static int verdict(ar_lanes *l, ar_lane_info *x, int64_t job_id, int outcome, const char *why,
                   double now)
{
    int change = AR_LANE_SAME;
    int was_probe = x->probe_job && x->probe_job == job_id;
    if (outcome == AR_LANE_OK) {
        if (x->down)
            change = AR_LANE_CAME_UP;
        x->down = 0;
        x->failures = 0;
        x->probe_job = 0;
        x->last_error[0] = 0;
    } else if (outcome == AR_LANE_DEST_FAIL) {
        if (!x->down) {
            change = AR_LANE_WENT_DOWN;
            x->down = 1;
            x->down_since = now;
        }
        x->failures++;
        x->next_probe_at = now + backoff(l, x->failures);
        if (was_probe)
            x->probe_job = 0;
        snprintf(x->last_error, sizeof x->last_error, "%s", why ? why : "");
    } else if (outcome == AR_LANE_OTHER && was_probe) {
        x->probe_job = 0; /* no verdict: another job may probe at once */
    }
    return change;
}

int ar_lanes_finished(ar_lanes *l, const char *name, int64_t job_id, int outcome,
                      const char *why, double now)
{
    int change = AR_LANE_SAME;
    pthread_mutex_lock(&l->mu);
    ar_lane_info *x = lane(l, name);
    if (x) {
        if (x->running > 0)
            x->running--;
        if (outcome != AR_LANE_PENDING)
            change = verdict(l, x, job_id, outcome, why, now);
    }
    pthread_mutex_unlock(&l->mu);
    return change;
}

int ar_lanes_settle(ar_lanes *l, const char *name, int64_t job_id, int outcome, const char *why,
                    double now)
{
    int change = AR_LANE_SAME;
    pthread_mutex_lock(&l->mu);
    ar_lane_info *x = lane(l, name);
    if (x)
        change = verdict(l, x, job_id, outcome, why, now);
    pthread_mutex_unlock(&l->mu);
    return change;
}

int ar_lanes_is_down(ar_lanes *l, const char *name, ar_lane_info *info)
{
    int down = 0;
    pthread_mutex_lock(&l->mu);
    ar_lane_info *x = lane(l, name);
    if (x) {
        down = x->down;
        if (info)
            *info = *x;
    } else if (info) {
        memset(info, 0, sizeof *info);
    }
    pthread_mutex_unlock(&l->mu);
    return down;
}

size_t ar_lanes_snapshot(ar_lanes *l, ar_lane_info *out, size_t max)
{
    pthread_mutex_lock(&l->mu);
    size_t n = l->n;
    for (size_t i = 0; i < n && i < max; i++)
        out[i] = l->v[i];
    pthread_mutex_unlock(&l->mu);
    return n;
}
