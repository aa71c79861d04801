/* state.h - the daemon's durable state: one SQLite database per state folder.
 *
 * Promises:
 *  - the change cursor and the job ledger change together in one transaction
 *    (ar_state_record_jobs), so a crash never skips a change and never loses
 *    a job: jobs are recorded before they run and marked done after the final
 *    rename;
 *  - a (rule, resource, change_seq) job exists at most once;
 *  - folder ownership: each exported folder (relative to the storage root)
 *    belongs to exactly one owner key ("<rule>|<orthanc resource id>"), so two
 *    different studies never share a folder.
 * The database is `<state_dir>/autorthanc.sqlite` (WAL mode, synchronous=FULL).
 * Not thread-safe: one ar_state per thread (each opens its own connection;
 * writers take turns through BEGIN IMMEDIATE and the busy timeout).
 */
#ifndef AR_STATE_H
#define AR_STATE_H

#include <stddef.h>
#include <stdint.h>

typedef struct ar_state ar_state;

enum { AR_JOB_PENDING = 0, AR_JOB_DONE = 1, AR_JOB_FAILED = 2, AR_JOB_GONE = 3 };
/* a zeroed job is normal; urgent ones sort first */
enum { AR_PRIORITY_URGENT = -1, AR_PRIORITY_NORMAL = 0, AR_PRIORITY_LOW = 1 };

#define AR_LANE_LEN 160

typedef struct ar_job {
    int64_t id;
    char rule[256];
    char level[16];          /* "study" | "series" */
    char resource_id[128];   /* Orthanc id of the study or series */
    char study_id[128];      /* Orthanc id of the study */
    int64_t change_seq;      /* the Stable* change that caused the job */
    char action[16];         /* "download" | "forward" | "decide" (a stable change
                                that could not be decided yet: the watcher's) */
    int status;              /* AR_JOB_* */
    int attempts;
    double next_attempt_at;  /* unix time; 0 = now */
    char last_error[1024];
    char path[1024];         /* export folder relative to storage, once known */
    long long bytes;
    char lane[AR_LANE_LEN];  /* "storage", "modality:<name>", "decide" */
    int priority;            /* AR_PRIORITY_* */
    char remote_job[128];    /* Orthanc job id of a forward in flight, "" none */
    double submitted_at;     /* unix time the forward was submitted */
} ar_job;

/* Creates state_dir (mode 0700) and the database if missing. */
int ar_state_open(const char *state_dir, ar_state **out, char *err, size_t errlen);
/* Opens the database only when it exists (commands that read or change the
 * ledger never create one): AR_ENOTFOUND "no state database in ..." when
 * it does not. */
int ar_state_open_existing(const char *state_dir, ar_state **out, char *err, size_t errlen);
void ar_state_close(ar_state *st);

/* *has is 0 when no cursor was ever saved. */
int ar_state_get_cursor(ar_state *st, int64_t *cursor, int *has, char *err, size_t errlen);
int ar_state_set_cursor(ar_state *st, int64_t cursor, char *err, size_t errlen);

/* In ONE transaction: insert the n jobs (ignoring ones already present, by
 * (rule, resource_id, change_seq)) as PENDING and set the cursor to
 * new_cursor.  n may be 0 (just moves the cursor). */
int ar_state_record_jobs(ar_state *st, const ar_job *jobs, size_t n, int64_t new_cursor,
                         char *err, size_t errlen);

/* Arrivals not yet seen stable: a study or series whose New* change was
 * logged but whose Stable* change was not (yet).  See cli/daemon.c. */
typedef struct ar_watch {
    char level[16];          /* "study" | "series" */
    char resource_id[128];
    int64_t seq;             /* the change that announced it */
    /* on autorthanc's clock (unix time), never compared with Orthanc's */
    double first_seen;       /* when its New* change was read (0: now) */
    double next_check;       /* when to ask Orthanc about it next */
    double stable_seen;      /* when Orthanc first said IsStable, 0 not yet */
} ar_watch;

/* record_jobs, plus in the same transaction: start watching `add` (ignoring
 * ones already watched) and stop watching the resource ids in `del`. */
int ar_state_record_batch(ar_state *st, const ar_job *jobs, size_t n, const ar_watch *add,
                          size_t nadd, const char *const *del, size_t ndel, int64_t new_cursor,
                          char *err, size_t errlen);

/* The watched arrivals whose next_check is due by due_by, oldest first
 * (1e300: all).  *out malloc'ed. */
int ar_state_watch_list(ar_state *st, double due_by, ar_watch **out, size_t *n, char *err,
                        size_t errlen);
/* Store w's next_check and stable_seen (and first_seen, if it had none). */
int ar_state_watch_update(ar_state *st, const ar_watch *w, char *err, size_t errlen);

/* Jobs that are PENDING and due (next_attempt_at <= now), oldest first.
 * *out is malloc'ed (free with free()). */
int ar_state_due_jobs(ar_state *st, double now, ar_job **out, size_t *n, char *err, size_t errlen);

/* Up to `limit` PENDING jobs of one lane that may start: due by horizon
 * (now; the run's start for --once, so a job retried in this run waits),
 * or forwards in flight whose next poll is due by now.  Forwards in flight
 * first, then by priority, fresh jobs before retries, oldest first. */
int ar_state_claimable(ar_state *st, const char *lane, double horizon, double now, int limit,
                       ar_job **out, size_t *n, char *err, size_t errlen);
/* The lanes that have PENDING jobs.  *lanes malloc'ed. */
int ar_state_pending_lanes(ar_state *st, char (**lanes)[AR_LANE_LEN], size_t *n, char *err,
                           size_t errlen);
/* PENDING jobs per lane, in lane order.  *out malloc'ed. */
typedef struct ar_lane_count {
    char lane[AR_LANE_LEN];
    size_t pending;
} ar_lane_count;
int ar_state_pending_by_lane(ar_state *st, ar_lane_count **out, size_t *n, char *err,
                             size_t errlen);
/* How many of a lane's PENDING jobs are forwards in flight in Orthanc. */
int ar_state_lane_in_flight(ar_state *st, const char *lane, int *count, char *err, size_t errlen);
/* A forward was handed to Orthanc as job remote_job ("" = no longer in
 * flight); poll it at next_at.  Not an attempt. */
int ar_state_job_remote(ar_state *st, int64_t id, const char *remote_job, double submitted_at,
                        double next_at, char *err, size_t errlen);
/* Postpone a PENDING job to next_at with a reason, without counting an
 * attempt (its lane is down, its forward is still running). */
int ar_state_job_wait(ar_state *st, int64_t id, const char *why, double next_at, char *err,
                      size_t errlen);
/* The id of a newer PENDING job of the same rule and resource (0 = none):
 * it exports the latest stable state, so this one is superseded. */
int ar_state_newer_job(ar_state *st, const ar_job *j, int64_t *newer, char *err, size_t errlen);
/* Jobs migrated from schema 1 have no lane: give rule's jobs this one
 * (rule NULL: every job still without a lane). */
int ar_state_fill_lane(ar_state *st, const char *rule, const char *lane, char *err, size_t errlen);
/* Every PENDING job not in flight is due now (`run --once`). */
int ar_state_jobs_due_now(ar_state *st, char *err, size_t errlen);

/* List jobs; status_filter < 0 = all. */
int ar_state_list_jobs(ar_state *st, int status_filter, ar_job **out, size_t *n,
                       char *err, size_t errlen);

/* How many jobs are in each status (indexed by AR_JOB_*), without reading them. */
int ar_state_job_counts(ar_state *st, size_t counts[4], char *err, size_t errlen);

int ar_state_job_done(ar_state *st, int64_t id, const char *path, long long bytes,
                      char *err, size_t errlen);
int ar_state_job_gone(ar_state *st, int64_t id, const char *why, char *err, size_t errlen);
/* Failed attempt: attempts++, last_error = why.  If retry_at > 0 the job stays
 * PENDING until retry_at; else it becomes FAILED. */
int ar_state_job_failed(ar_state *st, int64_t id, const char *why, double retry_at,
                        char *err, size_t errlen);
/* FAILED -> PENDING (attempts reset).  id < 0: all failed jobs.  *count = requeued. */
int ar_state_job_requeue(ar_state *st, int64_t id, int *count, char *err, size_t errlen);

/* Folder ownership.  Claims `rel` for `owner` and writes the folder to use
 * into out: `rel` itself if free or already owned by `owner`, else
 * `rel~<suffix>` where suffix is the first 8 chars of `owner_suffix_src`
 * (then `rel~<suffix>-2`, `-3`... if even that is taken).  Persists the claim.
 * Characters of the suffix outside [A-Za-z0-9_-] become '_'; an empty or NULL
 * owner_suffix_src gives 8 hex digits of a hash of `owner`.  When a suffix is
 * added, the last component is cut (on a UTF-8 boundary) so that it still
 * fits NAME_MAX with ".WORKING" appended.  The same sequence of claims always
 * gives the same answers. */
int ar_state_claim_folder(ar_state *st, const char *rel, const char *owner,
                          const char *owner_suffix_src, char *out, size_t outlen,
                          char *err, size_t errlen);

/* What ar_state_claim_folder would answer now, claiming nothing (dry runs):
 * the folder `owner` would get in out, and *taken = 1 when `rel` itself
 * belongs to another owner (whose key goes to holder, if not NULL). */
int ar_state_peek_folder(ar_state *st, const char *rel, const char *owner,
                         const char *owner_suffix_src, char *out, size_t outlen, int *taken,
                         char *holder, size_t holderlen, char *err, size_t errlen);

/* Generic key/value (status info etc.). */
int ar_state_get_kv(ar_state *st, const char *key, char *val, size_t vallen, int *has,
                    char *err, size_t errlen);
int ar_state_set_kv(ar_state *st, const char *key, const char *val, char *err, size_t errlen);

#endif
