/* lanes.h - destinations as lanes: concurrency and health, shared by workers.
 *
 * A lane is one destination: "storage" (the export folder) or
 * "modality:<name>" (a FORWARD target).  Each has its own concurrency and
 * its own breaker, after haproxy's server states:
 *   up    jobs start while fewer than `concurrency` run (for a forward lane,
 *         forwards in flight in Orthanc count too);
 *   down  after a failure that is the destination's (association refused or
 *         timed out, the store job failed): queued jobs wait, not counted as
 *         attempts; one probe job may start once next_probe_at has passed
 *         (backoff doubling from `probe_initial` to `probe_max`); its success
 *         brings the lane up, its failure pushes the next probe further.
 * One dead modality is one lane's problem: other lanes never look at it.
 * The table is in memory (a restart starts every lane up) and thread-safe:
 * every function takes the table's own mutex.
 */
#ifndef AR_LANES_H
#define AR_LANES_H

#include <stddef.h>
#include <stdint.h>

#include "state.h"

typedef struct ar_lanes ar_lanes;

enum ar_lane_outcome {
    AR_LANE_OK = 0,        /* the destination took it */
    AR_LANE_DEST_FAIL = 1, /* the destination failed: the lane goes down */
    AR_LANE_OTHER = 2,     /* the job's own trouble (or Orthanc's): no verdict on the lane */
    AR_LANE_PENDING = 3    /* handed to the destination; the verdict comes by ar_lanes_settle */
};

enum ar_lane_change { AR_LANE_SAME = 0, AR_LANE_WENT_DOWN = 1, AR_LANE_CAME_UP = 2 };

typedef struct ar_lane_info {
    char name[AR_LANE_LEN];
    int running;             /* jobs a worker runs now */
    int down;                /* 1: the breaker is open */
    double down_since;       /* unix time */
    double next_probe_at;    /* unix time, when down */
    int failures;            /* consecutive destination failures */
    int64_t probe_job;       /* the job testing a down lane, 0 none */
    char last_error[512];
} ar_lane_info;

int ar_lanes_new(double probe_initial, double probe_max, ar_lanes **out, char *err,
                 size_t errlen);
void ar_lanes_free(ar_lanes *l);

/* May job `job_id` of lane `name` start now?  in_flight: the lane's work
 * that runs elsewhere (forwards in Orthanc).  A poll of work already in
 * flight is always allowed.  On yes the lane counts it as running (and, on
 * a down lane, as its probe) until ar_lanes_finished; *probe tells which. */
int ar_lanes_try_start(ar_lanes *l, const char *name, int concurrency, int in_flight, int poll,
                       int64_t job_id, double now, int *probe);

/* A started job is over for now: finished, failed, or (AR_LANE_PENDING)
 * handed to Orthanc, which keeps a probe pending until ar_lanes_settle.
 * Returns the lane's change of state. */
int ar_lanes_finished(ar_lanes *l, const char *name, int64_t job_id, int outcome,
                      const char *why, double now);

/* The outcome of work that ran elsewhere (a forward's Orthanc job) is known. */
int ar_lanes_settle(ar_lanes *l, const char *name, int64_t job_id, int outcome, const char *why,
                    double now);

/* Is the lane down now? (*info filled when not NULL, down or not.) */
int ar_lanes_is_down(ar_lanes *l, const char *name, ar_lane_info *info);

/* Copies of up to max lanes, in name order.  Returns how many exist. */
size_t ar_lanes_snapshot(ar_lanes *l, ar_lane_info *out, size_t max);

#endif
