/* status.h - the daemon's health in one JSON object, for `status --json`
 * and for <state_dir>/status.json, which the daemon rewrites atomically
 * (temp file + rename) after each cycle. */
#ifndef AR_STATUS_H
#define AR_STATUS_H

#include "app.h"

typedef struct ar_status_in {
    int reachable;
    const char *version;      /* Orthanc's, "" if unknown */
    const char *last_change;  /* Orthanc's last change seq as text, "" if unknown */
    const char *orthanc_error;
    int jobs_in_flight;
} ar_status_in;

/* *out malloc'ed JSON text (one line, no newline). */
int ar_status_json(ar_app *a, const ar_status_in *in, char **out, char *err, size_t errlen);

/* Write status.json into the state folder (temp + rename). */
int ar_status_write(ar_app *a, const ar_status_in *in, char *err, size_t errlen);

#endif
