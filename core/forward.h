/* forward.h - a FORWARD as a tracked Orthanc job: submit, look, cancel.
 *
 * `POST /modalities/<m>/store` with Asynchronous: Orthanc answers at once with
 * a job id and does the DICOM association itself; the caller keeps the id
 * (in the ledger) and looks at the job now and then, holding no thread while
 * Orthanc works, and after a restart looks at the same job again instead of
 * sending twice.  Errors name the modality and Orthanc's own reason.
 */
#ifndef AR_FORWARD_H
#define AR_FORWARD_H

#include <stddef.h>

#include "http.h"

enum ar_forward_state {
    AR_FWD_RUNNING = 0,  /* Pending, Running, Paused, Retry: not over */
    AR_FWD_SUCCESS = 1,
    AR_FWD_FAILURE = 2   /* the store job failed: message in err */
};

/* Hand resource_id (an Orthanc study or series id) to Orthanc for modality.
 * job_id receives Orthanc's job id.  AR_ERULE when Orthanc does not know the
 * modality (a configuration mistake, not a lost study); AR_ENET when Orthanc
 * could not be asked. */
int ar_forward_submit(ar_http *h, const char *modality, const char *resource_id, char *job_id,
                      size_t idlen, char *err, size_t errlen);

/* Look at Orthanc's job once: *state, and Orthanc's word for it in what
 * ("Running", "Paused", ...).  AR_ENOTFOUND when Orthanc no longer knows the
 * job (its job history was lost). */
int ar_forward_look(ar_http *h, const char *modality, const char *job_id, int *state, char *what,
                    size_t whatlen, char *err, size_t errlen);

/* Ask Orthanc to cancel the job (best effort: errors are ignored). */
void ar_forward_cancel(ar_http *h, const char *job_id);

#endif
