/* status.c - see status.h.  Strings are quoted by ar_json_quote (core/orthanc_json.h). */
#include "status.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "../core/err.h"
#include "../core/lanes.h"
#include "../core/orthanc_json.h"

#define LANES_KV_MAX 32768

typedef struct sbuf {
    char *p;
    size_t n, cap;
    int oom;
} sbuf;

static void sb_add(sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_add(sbuf *b, const char *fmt, ...)
{
    va_list ap;
    if (b->oom)
        return;
    for (;;) {
        va_start(ap, fmt);
        int k = vsnprintf(b->p ? b->p + b->n : NULL, b->p ? b->cap - b->n : 0, fmt, ap);
        va_end(ap);
        if (k < 0) {
            b->oom = 1;
            return;
        }
        if (b->p && b->n + (size_t)k < b->cap) {
            b->n += (size_t)k;
            return;
        }
        size_t cap = (b->cap ? b->cap : 256) * 2 + (size_t)k;
        char *np = realloc(b->p, cap);
        if (!np) {
            b->oom = 1;
            return;
        }
        b->p = np;
        b->cap = cap;
    }
}

static void sb_str(sbuf *b, const char *s)
{
    char *q = NULL;
    if (ar_json_quote(s ? s : "", &q, NULL, 0) == 0) {
        sb_add(b, "%s", q);
        free(q);
    } else {
        sb_add(b, "null");
    }
}

void ar_status_counts_read(ar_app *a, ar_status_counts *c)
{
    char err[512];
    memset(c, 0, sizeof *c);
    if (a->state) {
        ar_state_get_cursor(a->state, &c->cursor, &c->has_cursor, err, sizeof err);
        ar_state_job_counts(a->state, c->jobs, err, sizeof err);
    }
    if (a->engine) {
        c->rules = ar_engine_rule_count(a->engine);
        for (size_t i = 0; i < c->rules; i++)
            c->broken += !ar_engine_rule(a->engine, i)->ok;
    }
}

static int by_id_desc(const void *x, const void *y)
{
    const ar_job *p = x, *q = y;
    return p->id < q->id ? 1 : p->id > q->id ? -1 : 0;
}

int ar_status_recent_errors(ar_app *a, size_t max, ar_job **out, size_t *n)
{
    char err[512];
    static const int kinds[] = {AR_JOB_FAILED, AR_JOB_PENDING, AR_JOB_GONE};
    ar_job *part[3] = {NULL, NULL, NULL}, *all = NULL;
    size_t np[3] = {0, 0, 0}, k = 0;
    *out = NULL;
    *n = 0;
    for (int i = 0; i < 3; i++)
        if (!a->state ||
            ar_state_list_jobs(a->state, kinds[i], &part[i], &np[i], err, sizeof err))
            goto out;
    all = malloc((np[0] + np[1] + np[2] + 1) * sizeof *all);
    if (!all)
        goto out;
    for (int i = 0; i < 3; i++)
        for (size_t j = 0; j < np[i]; j++)
            if (part[i][j].last_error[0])
                all[k++] = part[i][j];
    qsort(all, k, sizeof *all, by_id_desc);
    *out = all;
    *n = k < max ? k : max;
    all = NULL;
out:
    for (int i = 0; i < 3; i++)
        free(part[i]);
    free(all);
    return *out ? AR_OK : AR_ERR;
}

void ar_status_save_lanes(ar_app *a, const ar_lane_info *v, size_t n)
{
    sbuf b = {0};
    char err[512];
    for (size_t i = 0; i < n; i++) {
        char why[512];
        size_t k = 0;
        for (const char *p = v[i].last_error; *p && k + 1 < sizeof why; p++)
            why[k++] = (*p == '\t' || *p == '\n') ? ' ' : *p;
        why[k] = 0;
        sb_add(&b, "%s\t%d\t%.3f\t%.3f\t%d\t%s\n", v[i].name, v[i].down, v[i].down_since,
               v[i].next_probe_at, v[i].failures, why);
    }
    if (!b.oom && a->state && b.n < LANES_KV_MAX)
        ar_state_set_kv(a->state, "lanes", b.p ? b.p : "", err, sizeof err);
    free(b.p);
}

static ar_lane_view *view_of(ar_lane_view **v, size_t *n, size_t *cap, const char *name)
{
    for (size_t i = 0; i < *n; i++)
        if (strcmp((*v)[i].name, name) == 0)
            return &(*v)[i];
    if (*n == *cap) {
        size_t nc = *cap ? *cap * 2 : 8;
        ar_lane_view *nv = realloc(*v, nc * sizeof *nv);
        if (!nv)
            return NULL;
        *v = nv;
        *cap = nc;
    }
    ar_lane_view *x = &(*v)[(*n)++];
    memset(x, 0, sizeof *x);
    snprintf(x->name, sizeof x->name, "%s", name);
    return x;
}

static int by_name(const void *x, const void *y)
{
    return strcmp(((const ar_lane_view *)x)->name, ((const ar_lane_view *)y)->name);
}

int ar_status_lanes(ar_app *a, ar_lane_view **out, size_t *n)
{
    char err[512];
    char *kv = NULL;
    ar_lane_count *counts = NULL;
    ar_lane_view *v = NULL;
    size_t nv = 0, cap = 0, nc = 0;
    int has = 0, rc = AR_ERR;
    *out = NULL;
    *n = 0;
    if (!a->state)
        return AR_ERR;
    kv = malloc(LANES_KV_MAX);
    if (!kv)
        goto out;
    if (ar_state_get_kv(a->state, "lanes", kv, LANES_KV_MAX, &has, err, sizeof err))
        goto out;
    for (char *line = has ? kv : NULL; line && *line;) {
        char *nl = strchr(line, '\n');
        if (nl)
            *nl = 0;
        char name[AR_LANE_LEN] = "", why[512] = "";
        int down = 0, failures = 0;
        double since = 0, probe = 0;
        if (sscanf(line, "%159[^\t]\t%d\t%lf\t%lf\t%d\t%511[^\n]", name, &down, &since, &probe,
                   &failures, why) >= 5) {
            ar_lane_view *x = view_of(&v, &nv, &cap, name);
            if (!x)
                goto out;
            x->down = down;
            x->down_since = since;
            x->next_probe_at = probe;
            x->failures = failures;
            snprintf(x->error, sizeof x->error, "%s", why);
        }
        line = nl ? nl + 1 : NULL;
    }
    if (ar_state_pending_by_lane(a->state, &counts, &nc, err, sizeof err))
        goto out;
    for (size_t i = 0; i < nc; i++) {
        ar_lane_view *x = view_of(&v, &nv, &cap, counts[i].lane[0] ? counts[i].lane : "storage");
        if (!x)
            goto out;
        x->pending += counts[i].pending;
    }
    if (nv)
        qsort(v, nv, sizeof *v, by_name);
    *out = v;
    *n = nv;
    v = NULL;
    rc = AR_OK;
out:
    free(v);
    free(counts);
    free(kv);
    return rc;
}

void ar_status_lane_text(const ar_lane_view *l, char *out, size_t outlen)
{
    if (!l->down) {
        snprintf(out, outlen, "up, %zu waiting", l->pending);
        return;
    }
    char since[32] = "?";
    time_t t = (time_t)l->down_since;
    struct tm tm;
    if (localtime_r(&t, &tm))
        strftime(since, sizeof since, "%H:%M:%S", &tm);
    double left = l->next_probe_at - (double)time(NULL);
    snprintf(out, outlen, "DOWN since %s (%d failure%s), next probe in %.0f s, %zu waiting: %s",
             since, l->failures, l->failures == 1 ? "" : "s", left > 0 ? left : 0, l->pending,
             l->error);
}

int ar_status_json(ar_app *a, const ar_status_in *in, char **out, char *err, size_t errlen)
{
    sbuf b = {0};
    ar_status_counts c;
    ar_job *recent = NULL;
    size_t nrecent = 0;
    char tbuf[32];
    time_t now = time(NULL);
    struct tm tm;

    *out = NULL;
    gmtime_r(&now, &tm);
    strftime(tbuf, sizeof tbuf, "%Y-%m-%dT%H:%M:%SZ", &tm);
    ar_status_counts_read(a, &c);
    ar_status_recent_errors(a, 5, &recent, &nrecent);
    sb_add(&b, "{\"time\":\"%s\",\"orthanc\":{\"url\":", tbuf);
    sb_str(&b, a->cfg.orthanc_url);
    sb_add(&b, ",\"reachable\":%s,\"version\":", in->reachable ? "true" : "false");
    sb_str(&b, in->version);
    sb_add(&b, ",\"last_change\":%s,\"error\":",
           in->last_change && in->last_change[0] ? in->last_change : "null");
    sb_str(&b, in->orthanc_error);
    sb_add(&b, "},\"cursor\":%" PRId64 ",\"behind\":%s", c.cursor,
           c.has_cursor && in->last_change && in->last_change[0]
               ? (strtoll(in->last_change, NULL, 10) > c.cursor ? "true" : "false")
               : "null");
    sb_add(&b, ",\"rules\":{\"loaded\":%zu,\"broken\":%zu,\"broken_rules\":[",
           c.rules - c.broken, c.broken);
    for (size_t i = 0, k = 0; a->engine && i < c.rules; i++) {
        const ar_rule_info *r = ar_engine_rule(a->engine, i);
        if (r->ok)
            continue;
        sb_add(&b, "%s{\"name\":", k++ ? "," : "");
        sb_str(&b, r->name);
        sb_add(&b, ",\"error\":");
        sb_str(&b, r->error);
        sb_add(&b, "}");
    }
    sb_add(&b, "]},\"jobs\":{\"in_flight\":%d,\"pending\":%zu,\"done\":%zu,\"failed\":%zu,"
               "\"gone\":%zu},\"last_failures\":[",
           in->jobs_in_flight, c.jobs[AR_JOB_PENDING], c.jobs[AR_JOB_DONE],
           c.jobs[AR_JOB_FAILED], c.jobs[AR_JOB_GONE]);
    for (size_t i = 0; i < nrecent; i++) {
        const ar_job *j = &recent[i];
        sb_add(&b, "%s{\"job\":%" PRId64 ",\"rule\":", i ? "," : "", j->id);
        sb_str(&b, j->rule);
        sb_add(&b, ",\"study\":");
        sb_str(&b, j->study_id);
        sb_add(&b, ",\"attempts\":%d,\"status\":\"%s\",\"error\":", j->attempts,
               j->status == AR_JOB_FAILED ? "failed" : j->status == AR_JOB_GONE ? "gone" : "retrying");
        sb_str(&b, j->last_error);
        sb_add(&b, "}");
    }
    sb_add(&b, "],\"lanes\":[");
    ar_lane_view *lanes = NULL;
    size_t nl = 0;
    ar_status_lanes(a, &lanes, &nl);
    for (size_t i = 0; i < nl; i++) {
        const ar_lane_view *l = &lanes[i];
        sb_add(&b, "%s{\"name\":", i ? "," : "");
        sb_str(&b, l->name);
        sb_add(&b, ",\"state\":\"%s\",\"waiting\":%zu", l->down ? "down" : "up", l->pending);
        if (l->down) {
            sb_add(&b, ",\"down_since\":%.0f,\"next_probe_at\":%.0f,\"failures\":%d,\"error\":",
                   l->down_since, l->next_probe_at, l->failures);
            sb_str(&b, l->error);
        }
        sb_add(&b, "}");
    }
    free(lanes);
    sb_add(&b, "]}");
    free(recent);
    if (b.oom) {
        free(b.p);
        return ar_seterr(err, errlen, AR_ENOMEM, "out of memory writing the status");
    }
    *out = b.p;
    return AR_OK;
}

int ar_status_write(ar_app *a, const ar_status_in *in, char *err, size_t errlen)
{
    char *json = NULL, tmp[AR_PATH_LEN + 32], final[AR_PATH_LEN + 32];
    int rc, fd = -1;
    if ((rc = ar_status_json(a, in, &json, err, errlen)))
        return rc;
    snprintf(final, sizeof final, "%s/status.json", a->cfg.state_dir);
    snprintf(tmp, sizeof tmp, "%s/.status.json.tmp", a->cfg.state_dir);
    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    size_t len = strlen(json);
    if (fd < 0 || write(fd, json, len) != (ssize_t)len || write(fd, "\n", 1) != 1 ||
        close(fd) != 0) {
        rc = ar_seterr(err, errlen, AR_EIO, "write %s: %s", tmp, strerror(errno));
        if (fd >= 0)
            close(fd);
        unlink(tmp);
        goto out;
    }
    if (rename(tmp, final) != 0) {
        rc = ar_seterr(err, errlen, AR_EIO, "rename %s: %s", final, strerror(errno));
        unlink(tmp);
        goto out;
    }
    rc = AR_OK;
out:
    free(json);
    return rc;
}
