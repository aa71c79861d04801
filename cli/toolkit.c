/* toolkit.c - see toolkit.h */
#include "../core/clock.h"
#include "toolkit.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "../core/orthanc_json.h"
#include "../core/err.h"
#include "../core/sanitize.h"

int ar_tool_resolve_study(ar_app *a, const char *ref, char *id, size_t idlen, char *err,
                          size_t errlen)
{
    ar_buf b = {0};
    char **ids = NULL;
    size_t n = 0;
    int rc;

    if (!ref || !*ref)
        return ar_seterr(err, errlen, AR_ERR, "empty study reference");
    /* an Orthanc id: 5 groups of 8 hex digits */
    if (ar_orthanc_valid_id(ref) && strlen(ref) == 44 && strchr(ref, '-')) {
        snprintf(id, idlen, "%s", ref);
        return AR_OK;
    }
    rc = ar_http_post(a->http, "/tools/lookup", ref, strlen(ref), "text/plain", &b, err, errlen);
    if (rc)
        goto out;
    if ((rc = ar_ojson_list(b.data, b.len, "", &ids, &n, err, errlen)))
        goto out;
    rc = ar_seterr(err, errlen, AR_ENOTFOUND, "no study has the id or StudyInstanceUID '%s'", ref);
    for (size_t i = 0; i < n; i++) {
        char key[32], type[32];
        snprintf(key, sizeof key, "%zu.Type", i);
        if (ar_ojson_get(b.data, b.len, key, type, sizeof type, NULL, 0) == 0 &&
            strcmp(type, "Study") == 0 && ar_orthanc_valid_id(ids[i])) {
            snprintf(id, idlen, "%s", ids[i]);
            rc = AR_OK;
            break;
        }
    }
out:
    free(ids);
    ar_buf_free(&b);
    return rc;
}

int ar_tool_fetch_study(ar_app *a, const char *ref, ar_study_answers *ans, char *err,
                        size_t errlen)
{
    char id[128];
    int rc;

    memset(ans, 0, sizeof *ans);
    if ((rc = ar_tool_resolve_study(a, ref, id, sizeof id, err, errlen)))
        return rc;
    rc = ar_orthanc_fetch_study(a->http, id, ans, err, errlen);
    if (rc == AR_ENOTFOUND)
        ar_seterr(err, errlen, rc, "no study %s in Orthanc", id);
    return rc;
}

int ar_tool_read_file(const char *path, char **out, size_t *len, char *err, size_t errlen)
{
    FILE *f = fopen(path, "rb");
    char *buf = NULL;
    size_t cap = 0, n = 0;
    int rc = AR_EIO;

    *out = NULL;
    if (!f)
        return ar_seterr(err, errlen, AR_EIO, "%s: %s", path, strerror(errno));
    for (;;) {
        if (n + 65536 + 1 > cap) {
            char *nb;
            cap = cap ? cap * 2 : 131072;
            if (!(nb = realloc(buf, cap))) {
                rc = ar_seterr(err, errlen, AR_ENOMEM, "%s: out of memory", path);
                goto out;
            }
            buf = nb;
        }
        size_t got = fread(buf + n, 1, cap - n - 1, f);
        n += got;
        if (got == 0)
            break;
    }
    if (ferror(f)) {
        rc = ar_seterr(err, errlen, AR_EIO, "%s: read error", path);
        goto out;
    }
    buf[n] = '\0';
    *out = buf;
    buf = NULL;
    if (len)
        *len = n;
    rc = AR_OK;
out:
    free(buf);
    fclose(f);
    return rc;
}

static int is_rule_path(const char *s)
{
    size_t n = strlen(s);
    struct stat st;
    int suffix = (n > 5 && strcmp(s + n - 5, ".json") == 0) || (n > 4 && strcmp(s + n - 4, ".lua") == 0);
    return (strchr(s, '/') || suffix) && stat(s, &st) == 0 && S_ISREG(st.st_mode);
}

int ar_tool_load_rules(ar_app *a, const char *const *names, size_t n, size_t **idx,
                       size_t *nidx, char *err, size_t errlen)
{
    size_t *v = NULL, k = 0, total;
    int files = 0, rc = AR_ERR;

    *idx = NULL;
    *nidx = 0;
    for (size_t i = 0; i < n; i++)
        files |= is_rule_path(names[i]);
    if (files)
        rc = ar_engine_load_rule_files(a->engine, names, n, err, errlen);
    else
        rc = ar_engine_load_rules_dir(a->engine, a->cfg.rules_dir, err, errlen);
    if (rc)
        return rc;
    total = ar_engine_rule_count(a->engine);
    v = calloc(total ? total : 1, sizeof *v);
    if (!v)
        return ar_seterr(err, errlen, AR_ENOMEM, "out of memory");
    if (files || n == 0) {
        for (size_t i = 0; i < total; i++) {
            const ar_rule_info *r = ar_engine_rule(a->engine, i);
            if (!r->ok && files) {
                rc = ar_seterr(err, errlen, AR_ERULE, "%s", r->error);
                goto out;
            }
            if (r->ok)
                v[k++] = i;
        }
    } else {
        for (size_t j = 0; j < n; j++) {
            size_t i;
            for (i = 0; i < total; i++)
                if (strcmp(ar_engine_rule(a->engine, i)->name, names[j]) == 0)
                    break;
            if (i == total) {
                rc = ar_seterr(err, errlen, AR_ERR, "no rule named '%s' in %s", names[j],
                               a->cfg.rules_dir);
                goto out;
            }
            if (!ar_engine_rule(a->engine, i)->ok) {
                rc = ar_seterr(err, errlen, AR_ERULE, "%s", ar_engine_rule(a->engine, i)->error);
                goto out;
            }
            int dup = 0;
            for (size_t m = 0; m < k; m++)
                dup |= v[m] == i;
            if (!dup)
                v[k++] = i;
        }
    }
    *idx = v;
    *nidx = k;
    v = NULL;
    rc = AR_OK;
out:
    free(v);
    return rc;
}

int ar_tool_open_state_if_any(ar_app *a, char *err, size_t errlen)
{
    char path[AR_PATH_LEN + 32];
    struct stat st;

    snprintf(path, sizeof path, "%s/autorthanc.sqlite", a->cfg.state_dir);
    if (stat(path, &st) != 0)
        return AR_OK;
    return ar_state_open(a->cfg.state_dir, &a->state, err, errlen);
}

int ar_tool_target(ar_app *a, const ar_study *st, size_t rule, const char *series_id,
                   ar_target *t, char *err, size_t errlen)
{
    ar_plan plan = {0};
    const ar_rule_info *r = ar_engine_rule(a->engine, rule);
    int rc;

    memset(t, 0, sizeof *t);
    t->bytes = -1;
    if (strcmp(r->action, "forward") == 0) {
        snprintf(t->folder, sizeof t->folder, "modality %s", r->destination);
        snprintf(t->actual, sizeof t->actual, "%s", t->folder);
        return AR_OK;
    }
    if ((rc = ar_engine_plan(a->engine, st, rule, series_id, &plan, err, errlen)))
        return rc;
    snprintf(t->folder, sizeof t->folder, "%s", plan.folder);
    snprintf(t->actual, sizeof t->actual, "%s", t->folder);
    t->files = plan.n;
    t->bytes = plan.total_bytes;
    ar_plan_free(&plan);
    if (a->state) {
        const char *res = series_id ? series_id : ar_study_id(st);
        char owner[512];
        snprintf(owner, sizeof owner, "%s|%s", r->name, res);
        rc = ar_state_peek_folder(a->state, t->folder, owner, res, t->actual, sizeof t->actual,
                                  &t->collision, t->holder, sizeof t->holder, err, errlen);
        if (rc)
            return rc;
    }
    return AR_OK;
}

int ar_tool_mkdirs(const char *path, char *err, size_t errlen)
{
    char buf[AR_PATH_LEN];
    size_t n = strlen(path);

    if (n == 0 || n >= sizeof buf)
        return ar_seterr(err, errlen, AR_EIO, "bad folder name '%.200s'", path);
    memcpy(buf, path, n + 1);
    for (size_t i = 1; i <= n; i++) {
        if (buf[i] != '/' && buf[i] != '\0')
            continue;
        char c = buf[i];
        buf[i] = '\0';
        if (mkdir(buf, 0755) != 0 && errno != EEXIST)
            return ar_seterr(err, errlen, AR_EIO, "mkdir %s: %s", buf, strerror(errno));
        buf[i] = c;
    }
    return AR_OK;
}

const char *ar_tool_human_bytes(long long n, char *buf, size_t len)
{
    static const char *const units[] = {"bytes", "kB", "MB", "GB", "TB"};
    double v = (double)n;
    int u = 0;

    if (n < 0) {
        snprintf(buf, len, "unknown size");
        return buf;
    }
    while (v >= 1000 && u < 4) {
        v /= 1000;
        u++;
    }
    if (u == 0)
        snprintf(buf, len, "%lld bytes", n);
    else
        snprintf(buf, len, "%.1f %s", v, units[u]);
    return buf;
}

void ar_progress_start(ar_progress *p, const char *what)
{
    p->on = isatty(STDERR_FILENO);
    p->last = 0;
    p->what = what;
}

void ar_progress_draw(ar_progress *p, size_t done, size_t total, long long bytes,
                      long long total_bytes, int force)
{
    char bar[41], hb[32], tb[32];
    double t = ar_mono_now();
    size_t fill;

    if (!p->on || (!force && t - p->last < 0.1))
        return;
    p->last = t;
    fill = total ? done * 40 / total : 0;
    for (size_t i = 0; i < 40; i++)
        bar[i] = i < fill ? '#' : '.';
    bar[40] = '\0';
    if (bytes >= 0 && total_bytes > 0)
        fprintf(stderr, "\r%s [%s] %zu/%zu  %s of %s ", p->what, bar, done, total,
                ar_tool_human_bytes(bytes, hb, sizeof hb),
                ar_tool_human_bytes(total_bytes, tb, sizeof tb));
    else if (bytes >= 0)
        fprintf(stderr, "\r%s [%s] %zu/%zu  %s ", p->what, bar, done, total,
                ar_tool_human_bytes(bytes, hb, sizeof hb));
    else
        fprintf(stderr, "\r%s [%s] %zu/%zu ", p->what, bar, done, total);
    fflush(stderr);
}

void ar_progress_end(ar_progress *p)
{
    if (p->on) {
        fputs("\r\033[K", stderr);
        fflush(stderr);
    }
}
