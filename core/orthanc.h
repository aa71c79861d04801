/* orthanc.h - the Orthanc REST calls the daemon makes, as raw answers.
 *
 * URLs and HTTP here; transport answers are decoded by orthanc_json.h, a
 * study's answers by snapshot.h, forwards live in forward.h.  A study
 * snapshot always costs exactly three requests, whatever the number of
 * series, instances or rules.
 */
#ifndef AR_ORTHANC_H
#define AR_ORTHANC_H

#include <stdint.h>

#include "http.h"

typedef struct ar_study_answers {
    ar_buf study;      /* /studies/<id> */
    ar_buf series;     /* /studies/<id>/series */
    ar_buf instances;  /* /studies/<id>/instances */
} ar_study_answers;

void ar_study_answers_free(ar_study_answers *a);

/* ids are Orthanc ids: checked to be [0-9a-f-]+ before being put in a URL. */
int ar_orthanc_valid_id(const char *id);

int ar_orthanc_fetch_study(ar_http *h, const char *study_id, ar_study_answers *out,
                           char *err, size_t errlen);
/* /changes and /system say what to fix when Orthanc refuses the whole API:
 * "refused the credentials of user 'x' ... check orthanc_username /
 * orthanc_password" (401/403), "no Orthanc REST API at URL ... prefix"
 * (404); AR_EHTTP for both. */
int ar_orthanc_changes(ar_http *h, int64_t since, int limit, ar_buf *out, char *err, size_t errlen);
int ar_orthanc_system(ar_http *h, ar_buf *out, char *err, size_t errlen);
/* The names of the DICOM modalities Orthanc knows ("A, B", "none"). */
int ar_orthanc_modalities(ar_http *h, char *out, size_t outlen, char *err, size_t errlen);
int ar_orthanc_series(ar_http *h, const char *series_id, ar_buf *out, char *err, size_t errlen);

/* Does Orthanc answer at all (GET /system)?  Tells one request's trouble
 * from an outage. */
int ar_orthanc_answers(ar_http *h);

/* Percent-encode s for one URL path segment into out. */
int ar_url_segment(const char *s, char *out, size_t outlen);

#endif
