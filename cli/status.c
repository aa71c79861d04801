/* status.c - see status.h.  Strings are quoted by lua-cjson (ar_jsonq_quote). */
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

#include "../bindings/jsonq.h"
#include "../core/err.h"

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
    if (ar_jsonq_quote(s ? s : "", &q, NULL, 0) == 0) {
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
