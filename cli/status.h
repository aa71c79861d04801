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

/* What both forms of the status show, read from the state and the engine
 * (job counts by SQL, not by reading the ledger). */
typedef struct ar_status_counts {
    int64_t cursor;
    int has_cursor;
    size_t jobs[4];          /* indexed by AR_JOB_* */
    size_t rules, broken;
} ar_status_counts;

void ar_status_counts_read(ar_app *a, ar_status_counts *c);

/* The most recent jobs with an error (failed, gone, or pending a retry), newest
 * first, at most max.  *out malloc'ed. */
int ar_status_recent_errors(ar_app *a, size_t max, ar_job **out, size_t *n);

/* Each lane the daemon knows (its health, as of the daemon's last cycle)
 * or that has PENDING jobs (their number from the ledger), in name order. */
typedef struct ar_lane_view {
    char name[AR_LANE_LEN];
    int down;
    double down_since, next_probe_at; /* unix time */
    int failures;
    char error[512];
    size_t pending;
} ar_lane_view;

int ar_status_lanes(ar_app *a, ar_lane_view **out, size_t *n);

/* The daemon's lane table into the ledger (meta "lanes"), for `status`. */
struct ar_lane_info;
void ar_status_save_lanes(ar_app *a, const struct ar_lane_info *v, size_t n);

/* One line about a lane: "up, 3 waiting", "DOWN since 14:04:05 (2
 * failures), next probe in 40 s, 7 waiting: <why>". */
void ar_status_lane_text(const ar_lane_view *l, char *out, size_t outlen);

/* *out malloc'ed JSON text (one line, no newline). */
int ar_status_json(ar_app *a, const ar_status_in *in, char **out, char *err, size_t errlen);

/* Write status.json into the state folder (temp + rename). */
int ar_status_write(ar_app *a, const ar_status_in *in, char *err, size_t errlen);

#endif
