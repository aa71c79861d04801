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

int ar_status_json(ar_app *a, const ar_status_in *in, char **out, char *err, size_t errlen)
{
    sbuf b = {0};
    int64_t cursor = 0;
    int has = 0;
    size_t counts[4] = {0, 0, 0, 0}, nrules = 0, broken = 0;
    ar_job *jobs = NULL;
    size_t njobs = 0;
    char tbuf[32];
    time_t now = time(NULL);
    struct tm tm;

    *out = NULL;
    gmtime_r(&now, &tm);
    strftime(tbuf, sizeof tbuf, "%Y-%m-%dT%H:%M:%SZ", &tm);
    if (a->state) {
        ar_state_get_cursor(a->state, &cursor, &has, err, errlen);
        if (ar_state_list_jobs(a->state, -1, &jobs, &njobs, err, errlen) == 0)
            for (size_t i = 0; i < njobs; i++)
                if (jobs[i].status >= 0 && jobs[i].status < 4)
                    counts[jobs[i].status]++;
    }
    if (a->engine) {
        nrules = ar_engine_rule_count(a->engine);
        for (size_t i = 0; i < nrules; i++)
            broken += !ar_engine_rule(a->engine, i)->ok;
    }
    sb_add(&b, "{\"time\":\"%s\",\"orthanc\":{\"url\":", tbuf);
    sb_str(&b, a->cfg.orthanc_url);
    sb_add(&b, ",\"reachable\":%s,\"version\":", in->reachable ? "true" : "false");
    sb_str(&b, in->version);
    sb_add(&b, ",\"last_change\":%s,\"error\":",
           in->last_change && in->last_change[0] ? in->last_change : "null");
    sb_str(&b, in->orthanc_error);
    sb_add(&b, "},\"cursor\":%" PRId64 ",\"behind\":%s", cursor,
           has && in->last_change && in->last_change[0]
               ? (strtoll(in->last_change, NULL, 10) > cursor ? "true" : "false")
               : "null");
    sb_add(&b, ",\"rules\":{\"loaded\":%zu,\"broken\":%zu,\"broken_rules\":[", nrules - broken,
           broken);
    for (size_t i = 0, k = 0; a->engine && i < nrules; i++) {
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
           in->jobs_in_flight, counts[AR_JOB_PENDING], counts[AR_JOB_DONE],
           counts[AR_JOB_FAILED], counts[AR_JOB_GONE]);
    /* the five most recent jobs with an error (failed, or pending a retry) */
    for (size_t i = njobs, k = 0; i-- > 0 && k < 5;) {
        const ar_job *j = &jobs[i];
        if (!j->last_error[0] || j->status == AR_JOB_DONE)
            continue;
        sb_add(&b, "%s{\"job\":%" PRId64 ",\"rule\":", k++ ? "," : "", j->id);
        sb_str(&b, j->rule);
        sb_add(&b, ",\"study\":");
        sb_str(&b, j->study_id);
        sb_add(&b, ",\"attempts\":%d,\"status\":\"%s\",\"error\":", j->attempts,
               j->status == AR_JOB_FAILED ? "failed" : j->status == AR_JOB_GONE ? "gone" : "retrying");
        sb_str(&b, j->last_error);
        sb_add(&b, "}");
    }
    sb_add(&b, "]}");
    free(jobs);
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
