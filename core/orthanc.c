/* orthanc.c - see orthanc.h */
#include "orthanc.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "orthanc_json.h"

void ar_study_answers_free(ar_study_answers *a)
{
    ar_buf_free(&a->study);
    ar_buf_free(&a->series);
    ar_buf_free(&a->instances);
}

int ar_orthanc_valid_id(const char *id)
{
    if (!id || !*id || strlen(id) > 100)
        return 0;
    for (const char *p = id; *p; p++)
        if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f') || *p == '-'))
            return 0;
    return 1;
}

int ar_orthanc_fetch_study(ar_http *h, const char *study_id, ar_study_answers *out,
                           char *err, size_t errlen)
{
    int rc = AR_ERR;
    char path[256];
    memset(out, 0, sizeof *out);
    if (!ar_orthanc_valid_id(study_id))
        return ar_seterr(err, errlen, AR_EHTTP, "invalid Orthanc study id '%.100s'", study_id);
    snprintf(path, sizeof path, "/studies/%s", study_id);
    if ((rc = ar_http_get(h, path, &out->study, err, errlen)))
        goto out;
    snprintf(path, sizeof path, "/studies/%s/series", study_id);
    if ((rc = ar_http_get(h, path, &out->series, err, errlen)))
        goto out;
    snprintf(path, sizeof path, "/studies/%s/instances", study_id);
    if ((rc = ar_http_get(h, path, &out->instances, err, errlen)))
        goto out;
    rc = AR_OK;
out:
    if (rc)
        ar_study_answers_free(out);
    return rc;
}

/* A refusal of the whole REST API said as what to fix: 401/403 are the
 * credentials, 404 on a path every Orthanc answers is the URL (a wrong
 * prefix).  Other failures keep their message. */
static int explain(ar_http *h, const char *path, const ar_buf *b, int rc, char *err,
                   size_t errlen)
{
    const char *user = ar_http_username(h);
    if (rc == AR_OK)
        return rc;
    if (b->status == 401 || b->status == 403) {
        if (user && *user)
            return ar_seterr(err, errlen, AR_EHTTP,
                             "Orthanc at %s refused the credentials of user '%s' (HTTP %ld on %s): "
                             "check orthanc_username / orthanc_password",
                             ar_http_base(h), user, b->status, path);
        return ar_seterr(err, errlen, AR_EHTTP,
                         "Orthanc at %s asks for credentials (HTTP %ld on %s): set orthanc_username "
                         "and orthanc_password",
                         ar_http_base(h), b->status, path);
    }
    if (b->status == 404)
        return ar_seterr(err, errlen, AR_EHTTP,
                         "no Orthanc REST API at %s (HTTP 404 on %s): is orthanc_url right, "
                         "with its prefix?",
                         ar_http_base(h), path);
    return rc;
}

int ar_orthanc_changes(ar_http *h, int64_t since, int limit, ar_buf *out, char *err, size_t errlen)
{
    char path[128];
    snprintf(path, sizeof path, "/changes?since=%" PRId64 "&limit=%d", since, limit);
    return explain(h, "/changes", out, ar_http_get(h, path, out, err, errlen), err, errlen);
}

int ar_orthanc_modalities(ar_http *h, char *out, size_t outlen, char *err, size_t errlen)
{
    ar_buf b = {0};
    char **names = NULL;
    size_t n = 0, o = 0;
    int rc = explain(h, "/modalities", &b, ar_http_get(h, "/modalities", &b, err, errlen), err,
                     errlen);
    if (rc == AR_OK && (rc = ar_ojson_list(b.data, b.len, "", &names, &n, err, errlen)) == AR_OK) {
        out[0] = '\0';
        for (size_t i = 0; i < n && o + 1 < outlen; i++)
            o += (size_t)snprintf(out + o, outlen - o, "%s%s", i ? ", " : "", names[i]);
        if (n == 0)
            snprintf(out, outlen, "none");
    }
    free(names);
    ar_buf_free(&b);
    return rc;
}

int ar_orthanc_system(ar_http *h, ar_buf *out, char *err, size_t errlen)
{
    return explain(h, "/system", out, ar_http_get(h, "/system", out, err, errlen), err, errlen);
}

int ar_orthanc_series(ar_http *h, const char *series_id, ar_buf *out, char *err, size_t errlen)
{
    char path[256];
    memset(out, 0, sizeof *out);
    if (!ar_orthanc_valid_id(series_id))
        return ar_seterr(err, errlen, AR_EHTTP, "invalid Orthanc series id '%.100s'", series_id);
    snprintf(path, sizeof path, "/series/%s", series_id);
    return ar_http_get(h, path, out, err, errlen);
}

int ar_orthanc_answers(ar_http *h)
{
    char err[512];
    ar_buf b = {0};
    int rc = ar_orthanc_system(h, &b, err, sizeof err);
    ar_buf_free(&b);
    return rc == AR_OK;
}

int ar_url_segment(const char *s, char *out, size_t outlen)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t o = 0;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        int plain = (*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') ||
                    (*p >= '0' && *p <= '9') || *p == '-' || *p == '_' || *p == '.' || *p == '~';
        if (o + (plain ? 1 : 3) >= outlen)
            return AR_ERR;
        if (plain) {
            out[o++] = (char)*p;
        } else {
            out[o++] = '%';
            out[o++] = hex[*p >> 4];
            out[o++] = hex[*p & 15];
        }
    }
    if (o >= outlen)
        return AR_ERR;
    out[o] = 0;
    return AR_OK;
}
