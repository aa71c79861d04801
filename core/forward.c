/* forward.c - see forward.h */
#include "forward.h"

#include <stdio.h>
#include <string.h>

#include "err.h"
#include "orthanc.h"
#include "orthanc_json.h"

int ar_forward_submit(ar_http *h, const char *modality, const char *resource_id, char *job_id,
                      size_t idlen, char *err, size_t errlen)
{
    int rc = AR_ERR;
    ar_buf b = {0};
    char path[1024], seg[768], body[256], detail[512] = "";

    if (idlen)
        job_id[0] = 0;
    if (!ar_orthanc_valid_id(resource_id))
        return ar_seterr(err, errlen, AR_EHTTP, "invalid resource id '%.100s'", resource_id);
    if (ar_url_segment(modality, seg, sizeof seg))
        return ar_seterr(err, errlen, AR_ERULE, "modality name too long");
    snprintf(path, sizeof path, "/modalities/%s/store", seg);
    snprintf(body, sizeof body, "{\"Resources\":[\"%s\"],\"Asynchronous\":true}", resource_id);
    rc = ar_http_post(h, path, body, strlen(body), NULL, &b, err, errlen);
    if (rc) {
        if (b.data && ar_ojson_get(b.data, b.len, "Message", detail, sizeof detail, NULL, 0))
            detail[0] = 0;
        if (rc == AR_ENOTFOUND) {
            /* Orthanc says "Accessing an inexistent item" for an unknown modality */
            char known[512] = "?", kerr[256];
            ar_orthanc_modalities(h, known, sizeof known, kerr, sizeof kerr);
            rc = ar_seterr(err, errlen, AR_ERULE,
                           "modality '%s' is not configured in Orthanc (known: %s): add it to "
                           "Orthanc's DicomModalities or fix the rule's DestinationModality",
                           modality, known);
        }
        else if (detail[0])
            ar_seterr(err, errlen, rc, "forward to modality '%s' failed: %s", modality, detail);
        else {
            char tmp[1024];
            snprintf(tmp, sizeof tmp, "%s", err);
            ar_seterr(err, errlen, rc, "forward to modality '%s' failed: %s", modality, tmp);
        }
        goto out;
    }
    if (ar_ojson_get(b.data, b.len, "ID", job_id, idlen, err, errlen) ||
        !ar_orthanc_valid_id(job_id)) {
        rc = ar_seterr(err, errlen, AR_ENET,
                       "forward to modality '%s': Orthanc's answer names no job id", modality);
        goto out;
    }
    rc = AR_OK;
out:
    ar_buf_free(&b);
    return rc;
}

int ar_forward_look(ar_http *h, const char *modality, const char *job_id, int *state, char *what,
                    size_t whatlen, char *err, size_t errlen)
{
    int rc = AR_ERR;
    ar_buf b = {0};
    ar_ojson *j = NULL;
    char path[256], desc[512] = "", details[512] = "";

    *state = AR_FWD_RUNNING;
    if (whatlen)
        what[0] = 0;
    if (!ar_orthanc_valid_id(job_id))
        return ar_seterr(err, errlen, AR_ERR, "invalid Orthanc job id '%.100s'", job_id);
    snprintf(path, sizeof path, "/jobs/%s", job_id);
    if ((rc = ar_http_get(h, path, &b, err, errlen)))
        goto out;
    if ((rc = ar_ojson_parse(b.data, b.len, path, &j, err, errlen)))
        goto out;
    if ((rc = ar_ojson_text(j, "State", what, whatlen, err, errlen))) {
        rc = AR_ENET; /* an answer without a state: ask again */
        goto out;
    }
    if (strcmp(what, "Success") == 0) {
        *state = AR_FWD_SUCCESS;
    } else if (strcmp(what, "Failure") == 0) {
        *state = AR_FWD_FAILURE;
        if (ar_ojson_text(j, "ErrorDescription", desc, sizeof desc, NULL, 0))
            snprintf(desc, sizeof desc, "unknown error");
        ar_ojson_text(j, "ErrorDetails", details, sizeof details, NULL, 0);
        ar_seterr(err, errlen, AR_ENET, "forward to modality '%s' failed: %s%s%s", modality, desc,
                  details[0] ? ": " : "", details);
    }
    rc = AR_OK;
out:
    ar_ojson_free(j);
    ar_buf_free(&b);
    return rc;
}

void ar_forward_cancel(ar_http *h, const char *job_id)
{
    char path[256], err[256];
    ar_buf b = {0};
    if (!ar_orthanc_valid_id(job_id))
        return;
    snprintf(path, sizeof path, "/jobs/%s/cancel", job_id);
    ar_http_post(h, path, "", 0, NULL, &b, err, sizeof err);
    ar_buf_free(&b);
}
