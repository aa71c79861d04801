/* state.c - see state.h.
 *
 * Schema version 1 (PRAGMA user_version):
 *   meta(key PRIMARY KEY, value)          cursor and free-form status values
 *   jobs(id, rule, level, resource_id, study_id, change_seq, action, status,
 *        attempts, next_attempt_at, last_error, path, bytes, created_at,
 *        updated_at, UNIQUE(rule, resource_id, change_seq))
 *   folders(rel PRIMARY KEY, owner)       who owns each export folder
 *   watch(resource_id, level, seq)        arrivals not yet seen stable
 *                                         (schema 2: first_seen, next_check,
 *                                         stable_seen, on autorthanc's clock)
 * Schema version 2 adds to jobs: lane (the destination the job waits for:
 * "storage", "modality:<name>", "decide"), priority (-1 urgent, 0 normal,
 * 1 low), remote_job (Orthanc's job id of a FORWARD in flight) and
 * submitted_at; a version 1 database is migrated in place (its forward jobs
 * get their lane from the loaded rules, ar_state_fill_lane).
 * A database written by a newer autorthanc (user_version > 2) is refused
 * rather than guessed at.  Every statement is prepared once at open; every
 * SQLite error becomes AR_EIO with a message naming the database file.
 * Multi-statement changes run inside BEGIN IMMEDIATE, so a second process on
 * the same state folder waits (busy_timeout) instead of failing mid-way.
 */
#include "clock.h"
#include "state.h"
#include "err.h"
#include "log.h"
#include "sanitize.h"

#include <errno.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <time.h>

#define SCHEMA_VERSION 2
#define BUSY_TIMEOUT_MS 10000
#define DB_NAME "autorthanc.sqlite"
#define CLAIM_MAX_TRIES 100000
#define WORKING_LEN 8       /* strlen(".WORKING"): export appends it */

enum {
    Q_KV_GET,
    Q_KV_SET,
    Q_JOB_INSERT,
    Q_JOB_DUE,
    Q_JOB_LIST,
    Q_JOB_DONE,
    Q_JOB_GONE,
    Q_JOB_FAILED,
    Q_JOB_REQUEUE,
    Q_FOLDER_GET,
    Q_FOLDER_PUT,
    Q_JOB_CLAIMABLE,
    Q_JOB_LANES,
    Q_JOB_IN_FLIGHT,
    Q_JOB_REMOTE,
    Q_JOB_WAIT,
    Q_JOB_NEWER,
    Q_JOB_FILL_LANE,
    Q_JOB_DUE_NOW,
    Q_JOB_BY_LANE,
    Q_COUNT
};

#define JOB_COLS "id, rule, level, resource_id, study_id, change_seq, action, status, " \
                 "attempts, next_attempt_at, last_error, path, bytes, lane, priority, " \
                 "remote_job, submitted_at"

static const char *const sql_text[Q_COUNT] = {
    [Q_KV_GET] = "SELECT value FROM meta WHERE key = ?1",
    [Q_KV_SET] = "INSERT INTO meta(key, value) VALUES(?1, ?2) "
                 "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
    [Q_JOB_INSERT] = "INSERT INTO jobs(rule, level, resource_id, study_id, change_seq, action, "
                     "status, attempts, next_attempt_at, last_error, path, bytes, created_at, updated_at, "
                     "lane, priority) "
                     "VALUES(?1, ?2, ?3, ?4, ?5, ?6, 0, 0, 0, '', '', 0, ?7, ?7, ?8, ?9) "
                     "ON CONFLICT(rule, resource_id, change_seq) DO NOTHING",
    [Q_JOB_DUE] = "SELECT " JOB_COLS " FROM jobs WHERE status = 0 AND next_attempt_at <= ?1 ORDER BY id",
    [Q_JOB_LIST] = "SELECT " JOB_COLS " FROM jobs WHERE ?1 < 0 OR status = ?1 ORDER BY id",
    [Q_JOB_DONE] = "UPDATE jobs SET status = 1, path = ?2, bytes = ?3, last_error = '', updated_at = ?4 "
                   "WHERE id = ?1",
    [Q_JOB_GONE] = "UPDATE jobs SET status = 3, last_error = ?2, updated_at = ?3 WHERE id = ?1",
    [Q_JOB_FAILED] = "UPDATE jobs SET attempts = attempts + 1, last_error = ?2, "
                     "status = CASE WHEN ?3 > 0 THEN 0 ELSE 2 END, "
                     "next_attempt_at = CASE WHEN ?3 > 0 THEN ?3 ELSE next_attempt_at END, "
                     "updated_at = ?4 WHERE id = ?1",
    [Q_JOB_REQUEUE] = "UPDATE jobs SET status = 0, attempts = 0, next_attempt_at = 0, updated_at = ?2 "
                      "WHERE status = 2 AND (?1 < 0 OR id = ?1)",
    [Q_FOLDER_GET] = "SELECT owner = ?2 FROM folders WHERE rel = ?1",
    [Q_FOLDER_PUT] = "INSERT INTO folders(rel, owner) VALUES(?1, ?2)",
    /* a lane's next jobs: forwards in flight first (their poll is due), then
     * by priority, fresh jobs before retries, oldest first */
    [Q_JOB_CLAIMABLE] = "SELECT " JOB_COLS " FROM jobs WHERE status = 0 AND lane = ?1 AND "
                        "((remote_job = '' AND next_attempt_at <= ?2) OR (remote_job <> '' AND next_attempt_at <= ?3)) "
                        "ORDER BY remote_job = '', priority, attempts > 0, id LIMIT ?4",
    [Q_JOB_LANES] = "SELECT DISTINCT lane FROM jobs WHERE status = 0 ORDER BY lane",
    [Q_JOB_BY_LANE] = "SELECT lane, count(*) FROM jobs WHERE status = 0 GROUP BY lane ORDER BY lane",
    [Q_JOB_IN_FLIGHT] = "SELECT count(*) FROM jobs WHERE status = 0 AND lane = ?1 AND remote_job <> ''",
    [Q_JOB_REMOTE] = "UPDATE jobs SET remote_job = ?2, submitted_at = ?3, next_attempt_at = ?4, "
                     "updated_at = ?5 WHERE id = ?1",
    [Q_JOB_WAIT] = "UPDATE jobs SET last_error = ?2, next_attempt_at = ?3, updated_at = ?4 WHERE id = ?1",
    [Q_JOB_NEWER] = "SELECT id FROM jobs WHERE status = 0 AND rule = ?1 AND resource_id = ?2 AND id > ?3 "
                    "ORDER BY id DESC LIMIT 1",
    [Q_JOB_FILL_LANE] = "UPDATE jobs SET lane = ?2 WHERE (?1 IS NULL OR rule = ?1) AND lane = ''",
    [Q_JOB_DUE_NOW] = "UPDATE jobs SET next_attempt_at = 0 WHERE status = 0 AND remote_job = '' "
                      "AND next_attempt_at > 0",
};

static const char schema_v1[] =
    "CREATE TABLE IF NOT EXISTS meta(\n"
    "  key TEXT PRIMARY KEY NOT NULL,\n"
    "  value\n"
    ");\n"
    "CREATE TABLE IF NOT EXISTS jobs(\n"
    "  id INTEGER PRIMARY KEY AUTOINCREMENT,\n"
    "  rule TEXT NOT NULL,\n"
    "  level TEXT NOT NULL,\n"
    "  resource_id TEXT NOT NULL,\n"
    "  study_id TEXT NOT NULL,\n"
    "  change_seq INTEGER NOT NULL,\n"
    "  action TEXT NOT NULL,\n"
    "  status INTEGER NOT NULL DEFAULT 0,\n"
    "  attempts INTEGER NOT NULL DEFAULT 0,\n"
    "  next_attempt_at REAL NOT NULL DEFAULT 0,\n"
    "  last_error TEXT NOT NULL DEFAULT '',\n"
    "  path TEXT NOT NULL DEFAULT '',\n"
    "  bytes INTEGER NOT NULL DEFAULT 0,\n"
    "  created_at REAL NOT NULL,\n"
    "  updated_at REAL NOT NULL,\n"
    "  UNIQUE(rule, resource_id, change_seq)\n"
    ");\n"
    "CREATE INDEX IF NOT EXISTS jobs_by_status ON jobs(status, next_attempt_at);\n"
    "CREATE TABLE IF NOT EXISTS folders(\n"
    "  rel TEXT PRIMARY KEY NOT NULL,\n"
    "  owner TEXT NOT NULL\n"
    ");\n"
    "CREATE TABLE IF NOT EXISTS watch(\n"
    "  resource_id TEXT PRIMARY KEY NOT NULL,\n"
    "  level TEXT NOT NULL,\n"
    "  seq INTEGER NOT NULL\n"
    ");\n"
    "PRAGMA user_version = 1;\n";

/* Version 1 -> 2: lanes, priorities, forwards tracked as Orthanc jobs. */
static const char schema_v2[] =
    "ALTER TABLE jobs ADD COLUMN lane TEXT NOT NULL DEFAULT '';\n"
    "ALTER TABLE jobs ADD COLUMN priority INTEGER NOT NULL DEFAULT 0;\n"
    "ALTER TABLE jobs ADD COLUMN remote_job TEXT NOT NULL DEFAULT '';\n"
    "ALTER TABLE jobs ADD COLUMN submitted_at REAL NOT NULL DEFAULT 0;\n"
    "UPDATE jobs SET lane = 'storage' WHERE action = 'download';\n"
    "CREATE INDEX IF NOT EXISTS jobs_by_lane ON jobs(status, lane, priority, id);\n"
    "ALTER TABLE watch ADD COLUMN first_seen REAL NOT NULL DEFAULT 0;\n"
    "ALTER TABLE watch ADD COLUMN next_check REAL NOT NULL DEFAULT 0;\n"
    "ALTER TABLE watch ADD COLUMN stable_seen REAL NOT NULL DEFAULT 0;\n"
    "PRAGMA user_version = 2;\n";

struct ar_state {
    sqlite3 *db;
    char path[4200];
    sqlite3_stmt *q[Q_COUNT];
};

/* An SQLite failure: message names the database and the operation. */
static int db_fail(ar_state *st, const char *what, char *err, size_t errlen)
{
    return ar_seterr(err, errlen, AR_EIO, "state database %s: %s: %s", st->path, what,
                     st->db ? sqlite3_errmsg(st->db) : "not open");
}

static int exec_sql(ar_state *st, const char *sql, const char *what, char *err, size_t errlen)
{
    char *msg = NULL;
    if (sqlite3_exec(st->db, sql, NULL, NULL, &msg) != SQLITE_OK) {
        int rc = ar_seterr(err, errlen, AR_EIO, "state database %s: %s: %s", st->path, what,
                           msg ? msg : sqlite3_errmsg(st->db));
        sqlite3_free(msg);
        return rc;
    }
    return AR_OK;
}

static int begin(ar_state *st, char *err, size_t errlen)
{
    return exec_sql(st, "BEGIN IMMEDIATE", "begin transaction", err, errlen);
}

static int commit(ar_state *st, char *err, size_t errlen)
{
    return exec_sql(st, "COMMIT", "commit", err, errlen);
}

static void rollback(ar_state *st)
{
    if (!sqlite3_get_autocommit(st->db))
        sqlite3_exec(st->db, "ROLLBACK", NULL, NULL, NULL);
}

static void done_stmt(sqlite3_stmt *s)
{
    sqlite3_reset(s);
    sqlite3_clear_bindings(s);
}

/* Bind a fixed-size char field (not trusting it to be terminated). */
static void bind_field(sqlite3_stmt *s, int i, const char *field, size_t size)
{
    sqlite3_bind_text(s, i, field, (int)strnlen(field, size), SQLITE_STATIC);
}

static void bind_str(sqlite3_stmt *s, int i, const char *v)
{
    sqlite3_bind_text(s, i, v ? v : "", -1, SQLITE_STATIC);
}

/* Step a statement that returns no rows.  *changes = rows changed. */
static int step_done(ar_state *st, int q, const char *what, int *changes, char *err, size_t errlen)
{
    sqlite3_stmt *s = st->q[q];
    int rc = sqlite3_step(s);
    if (rc != SQLITE_DONE) {
        rc = db_fail(st, what, err, errlen);
        done_stmt(s);
        return rc;
    }
    if (changes)
        *changes = sqlite3_changes(st->db);
    done_stmt(s);
    return AR_OK;
}

/* mkdir -p with mode 0700 for every folder it creates. */
static int make_dirs(const char *dir, char *err, size_t errlen)
{
    char buf[4096];
    size_t n = strlen(dir), i;
    struct stat sb;

    if (n == 0)
        return ar_seterr(err, errlen, AR_ECONFIG, "state folder: empty path");
    if (n >= sizeof buf)
        return ar_seterr(err, errlen, AR_ECONFIG, "state folder %.100s...: path too long", dir);
    memcpy(buf, dir, n + 1);
    for (i = 1; i <= n; i++) {
        if (buf[i] != '/' && buf[i] != '\0')
            continue;
        if (buf[i - 1] == '/')
            continue;           /* "//" or trailing '/' */
        buf[i] = '\0';
        if (mkdir(buf, 0700) != 0 && errno != EEXIST) {
            int e = errno;
            return ar_seterr(err, errlen, AR_EIO, "cannot create state folder %s: %s", buf, strerror(e));
        }
        if (i < n)
            buf[i] = '/';
    }
    if (stat(dir, &sb) != 0)
        return ar_seterr(err, errlen, AR_EIO, "state folder %s: %s", dir, strerror(errno));
    if (!S_ISDIR(sb.st_mode))
        return ar_seterr(err, errlen, AR_EIO, "state folder %s: not a directory", dir);
    return AR_OK;
}

static int setup_schema(ar_state *st, char *err, size_t errlen)
{
    int rc = AR_EIO, version;
    sqlite3_stmt *s = NULL;

    if ((rc = begin(st, err, errlen)))
        return rc;
    if (sqlite3_prepare_v2(st->db, "PRAGMA user_version", -1, &s, NULL) != SQLITE_OK
        || sqlite3_step(s) != SQLITE_ROW) {
        rc = db_fail(st, "read schema version", err, errlen);
        goto out;
    }
    version = sqlite3_column_int(s, 0);
    sqlite3_finalize(s);
    s = NULL;
    if (version > SCHEMA_VERSION) {
        rc = ar_seterr(err, errlen, AR_EIO,
                       "state database %s: schema version %d is newer than this autorthanc "
                       "understands (%d); use a newer autorthanc or another state folder",
                       st->path, version, SCHEMA_VERSION);
        goto out;
    }
    if (version < 1 && (rc = exec_sql(st, schema_v1, "create schema", err, errlen)))
        goto out;
    if (version < 2 && (rc = exec_sql(st, schema_v2, "migrate schema to version 2", err, errlen)))
        goto out;
    rc = commit(st, err, errlen);
out:
    sqlite3_finalize(s);
    if (rc)
        rollback(st);
    return rc;
}

static int set_journal(ar_state *st, char *err, size_t errlen)
{
    sqlite3_stmt *s = NULL;
    int rc = AR_EIO;
    if (sqlite3_prepare_v2(st->db, "PRAGMA journal_mode = WAL", -1, &s, NULL) != SQLITE_OK
        || sqlite3_step(s) != SQLITE_ROW) {
        rc = db_fail(st, "set WAL mode", err, errlen);
        goto out;
    }
    if (sqlite3_stricmp((const char *)sqlite3_column_text(s, 0), "wal") != 0)
        /* e.g. a file system without shared memory: still safe (rollback
         * journal with synchronous=FULL), only slower. */
        ar_log(AR_LOG_WARN, "state.journal", NULL, "state database %s: WAL mode unavailable, using %s",
               st->path, (const char *)sqlite3_column_text(s, 0));
    rc = exec_sql(st, "PRAGMA synchronous = FULL", "set synchronous=FULL", err, errlen);
out:
    sqlite3_finalize(s);
    return rc;
}

int ar_state_open_existing(const char *state_dir, ar_state **out, char *err, size_t errlen)
{
    char path[4200];
    struct stat sb;
    *out = NULL;
    if (!state_dir || !state_dir[0])
        return ar_seterr(err, errlen, AR_ECONFIG, "state folder: no path given");
    snprintf(path, sizeof path, "%s/" DB_NAME, state_dir);
    if (stat(path, &sb) != 0)
        return ar_seterr(err, errlen, AR_ENOTFOUND,
                         "no state database in %s (%s): autorthanc has not run with this "
                         "state_dir; check AUTORTHANC_STATE_DIR or --config",
                         state_dir, strerror(errno));
    return ar_state_open(state_dir, out, err, errlen);
}

int ar_state_open(const char *state_dir, ar_state **out, char *err, size_t errlen)
{
    int rc = AR_EIO, i;
    ar_state *st = NULL;

    *out = NULL;
    if (!state_dir)
        return ar_seterr(err, errlen, AR_ECONFIG, "state folder: no path given");
    if ((rc = make_dirs(state_dir, err, errlen)))
        return rc;
    st = calloc(1, sizeof *st);
    if (!st)
        return ar_seterr(err, errlen, AR_ENOMEM, "state database: out of memory");
    if ((size_t)snprintf(st->path, sizeof st->path, "%s%s" DB_NAME, state_dir,
                         state_dir[strlen(state_dir) - 1] == '/' ? "" : "/") >= sizeof st->path) {
        rc = ar_seterr(err, errlen, AR_ECONFIG, "state folder %.100s...: path too long", state_dir);
        goto out;
    }
    if (sqlite3_open_v2(st->path, &st->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                        NULL) != SQLITE_OK) {
        rc = db_fail(st, "open", err, errlen);
        goto out;
    }
    sqlite3_extended_result_codes(st->db, 1);
    sqlite3_busy_timeout(st->db, BUSY_TIMEOUT_MS);
    if ((rc = set_journal(st, err, errlen)))
        goto out;
    if ((rc = setup_schema(st, err, errlen)))
        goto out;
    for (i = 0; i < Q_COUNT; i++) {
        if (sqlite3_prepare_v3(st->db, sql_text[i], -1, SQLITE_PREPARE_PERSISTENT, &st->q[i], NULL)
            != SQLITE_OK) {
            rc = db_fail(st, "prepare statement", err, errlen);
            goto out;
        }
    }
    *out = st;
    st = NULL;
    rc = AR_OK;
out:
    ar_state_close(st);
    return rc;
}

void ar_state_close(ar_state *st)
{
    int i;
    if (!st)
        return;
    for (i = 0; i < Q_COUNT; i++)
        sqlite3_finalize(st->q[i]);
    if (st->db)
        sqlite3_close(st->db);
    free(st);
}

/* ---- key/value and the cursor ------------------------------------------ */

int ar_state_get_kv(ar_state *st, const char *key, char *val, size_t vallen, int *has,
                    char *err, size_t errlen)
{
    sqlite3_stmt *s = st->q[Q_KV_GET];
    int rc;
    *has = 0;
    if (val && vallen)
        val[0] = '\0';
    bind_str(s, 1, key);
    rc = sqlite3_step(s);
    if (rc == SQLITE_ROW) {
        const char *v = (const char *)sqlite3_column_text(s, 0);
        *has = 1;
        if (val && vallen)
            snprintf(val, vallen, "%s", v ? v : "");
    } else if (rc != SQLITE_DONE) {
        rc = db_fail(st, "read meta value", err, errlen);
        done_stmt(s);
        return rc;
    }
    done_stmt(s);
    return AR_OK;
}

int ar_state_set_kv(ar_state *st, const char *key, const char *val, char *err, size_t errlen)
{
    sqlite3_stmt *s = st->q[Q_KV_SET];
    bind_str(s, 1, key);
    bind_str(s, 2, val);
    return step_done(st, Q_KV_SET, "write meta value", NULL, err, errlen);
}

int ar_state_get_cursor(ar_state *st, int64_t *cursor, int *has, char *err, size_t errlen)
{
    sqlite3_stmt *s = st->q[Q_KV_GET];
    int rc;
    *has = 0;
    *cursor = 0;
    bind_str(s, 1, "cursor");
    rc = sqlite3_step(s);
    if (rc == SQLITE_ROW) {
        *has = 1;
        *cursor = sqlite3_column_int64(s, 0);
    } else if (rc != SQLITE_DONE) {
        rc = db_fail(st, "read cursor", err, errlen);
        done_stmt(s);
        return rc;
    }
    done_stmt(s);
    return AR_OK;
}

static int put_cursor(ar_state *st, int64_t cursor, char *err, size_t errlen)
{
    sqlite3_stmt *s = st->q[Q_KV_SET];
    bind_str(s, 1, "cursor");
    sqlite3_bind_int64(s, 2, cursor);
    return step_done(st, Q_KV_SET, "write cursor", NULL, err, errlen);
}

int ar_state_set_cursor(ar_state *st, int64_t cursor, char *err, size_t errlen)
{
    return put_cursor(st, cursor, err, errlen);
}

/* ---- the job ledger ------------------------------------------------------ */

int ar_state_record_jobs(ar_state *st, const ar_job *jobs, size_t n, int64_t new_cursor,
                         char *err, size_t errlen)
{
    return ar_state_record_batch(st, jobs, n, NULL, 0, NULL, 0, new_cursor, err, errlen);
}

/* Run one ad-hoc statement binding (text, text, int64) as given; no rows. */
static int exec_bound(ar_state *st, const char *sql, const char *a, const char *b, int64_t c,
                      const char *what, char *err, size_t errlen)
{
    sqlite3_stmt *s = NULL;
    int rc = AR_OK;
    if (sqlite3_prepare_v2(st->db, sql, -1, &s, NULL) != SQLITE_OK)
        return db_fail(st, what, err, errlen);
    if (a)
        sqlite3_bind_text(s, 1, a, -1, SQLITE_STATIC);
    if (b)
        sqlite3_bind_text(s, 2, b, -1, SQLITE_STATIC);
    sqlite3_bind_int64(s, 3, c);
    if (sqlite3_step(s) != SQLITE_DONE)
        rc = db_fail(st, what, err, errlen);
    sqlite3_finalize(s);
    return rc;
}

static int watch_add(ar_state *st, const ar_watch *w, double now, char *err, size_t errlen)
{
    sqlite3_stmt *s = NULL;
    int rc = AR_OK;
    if (sqlite3_prepare_v2(st->db,
                           "INSERT INTO watch(resource_id, level, seq, first_seen, next_check) "
                           "VALUES(?1, ?2, ?3, ?4, ?5) ON CONFLICT(resource_id) DO NOTHING",
                           -1, &s, NULL) != SQLITE_OK)
        return db_fail(st, "watch arrival", err, errlen);
    bind_field(s, 1, w->resource_id, sizeof w->resource_id);
    bind_field(s, 2, w->level, sizeof w->level);
    sqlite3_bind_int64(s, 3, w->seq);
    sqlite3_bind_double(s, 4, w->first_seen > 0 ? w->first_seen : now);
    sqlite3_bind_double(s, 5, w->next_check);
    if (sqlite3_step(s) != SQLITE_DONE)
        rc = db_fail(st, "watch arrival", err, errlen);
    sqlite3_finalize(s);
    return rc;
}

int ar_state_record_batch(ar_state *st, const ar_job *jobs, size_t n, const ar_watch *add,
                          size_t nadd, const char *const *del, size_t ndel, int64_t new_cursor,
                          char *err, size_t errlen)
{
    int rc;
    size_t i;
    double now = ar_wall_now();

    for (i = 0; i < n; i++)
        if ((!jobs[i].rule[0] && strcmp(jobs[i].action, "decide") != 0) ||
            !jobs[i].resource_id[0])
            return ar_seterr(err, errlen, AR_ERR,
                             "state database %s: job %zu has no rule or resource id", st->path, i);
    if ((rc = begin(st, err, errlen)))
        return rc;
    for (i = 0; i < n; i++) {
        const ar_job *j = &jobs[i];
        sqlite3_stmt *s = st->q[Q_JOB_INSERT];
        bind_field(s, 1, j->rule, sizeof j->rule);
        bind_field(s, 2, j->level, sizeof j->level);
        bind_field(s, 3, j->resource_id, sizeof j->resource_id);
        bind_field(s, 4, j->study_id, sizeof j->study_id);
        sqlite3_bind_int64(s, 5, j->change_seq);
        bind_field(s, 6, j->action, sizeof j->action);
        sqlite3_bind_double(s, 7, now);
        bind_field(s, 8, j->lane, sizeof j->lane);
        sqlite3_bind_int(s, 9, j->priority);
        if ((rc = step_done(st, Q_JOB_INSERT, "record job", NULL, err, errlen)))
            goto out;
    }
    for (i = 0; i < nadd; i++)
        if ((rc = watch_add(st, &add[i], now, err, errlen)))
            goto out;
    for (i = 0; i < ndel; i++)
        if ((rc = exec_bound(st, "DELETE FROM watch WHERE resource_id = ?1", del[i], NULL, 0,
                             "unwatch", err, errlen)))
            goto out;
    if ((rc = put_cursor(st, new_cursor, err, errlen)))
        goto out;
    rc = commit(st, err, errlen);
out:
    if (rc)
        rollback(st);
    return rc;
}

int ar_state_watch_update(ar_state *st, const ar_watch *w, char *err, size_t errlen)
{
    sqlite3_stmt *s = NULL;
    int rc = AR_OK;
    if (sqlite3_prepare_v2(st->db,
                           "UPDATE watch SET next_check = ?2, stable_seen = ?3, first_seen = "
                           "CASE WHEN first_seen > 0 THEN first_seen ELSE ?4 END "
                           "WHERE resource_id = ?1",
                           -1, &s, NULL) != SQLITE_OK)
        return db_fail(st, "update arrival", err, errlen);
    bind_field(s, 1, w->resource_id, sizeof w->resource_id);
    sqlite3_bind_double(s, 2, w->next_check);
    sqlite3_bind_double(s, 3, w->stable_seen);
    sqlite3_bind_double(s, 4, w->first_seen);
    if (sqlite3_step(s) != SQLITE_DONE)
        rc = db_fail(st, "update arrival", err, errlen);
    sqlite3_finalize(s);
    return rc;
}

int ar_state_watch_list(ar_state *st, double due_by, ar_watch **out, size_t *n, char *err,
                        size_t errlen)
{
    sqlite3_stmt *s = NULL;
    ar_watch *v = NULL;
    size_t len = 0, cap = 0;
    int rc = AR_OK, step;

    *out = NULL;
    *n = 0;
    if (sqlite3_prepare_v2(st->db,
                           "SELECT resource_id, level, seq, first_seen, next_check, stable_seen "
                           "FROM watch WHERE next_check <= ?1 ORDER BY seq",
                           -1, &s, NULL) != SQLITE_OK)
        return db_fail(st, "list watched arrivals", err, errlen);
    sqlite3_bind_double(s, 1, due_by);
    while ((step = sqlite3_step(s)) == SQLITE_ROW) {
        if (len == cap) {
            size_t ncap = cap ? cap * 2 : 16;
            ar_watch *nv = realloc(v, ncap * sizeof *nv);
            if (!nv) {
                rc = ar_seterr(err, errlen, AR_ENOMEM, "out of memory listing arrivals");
                goto out;
            }
            v = nv;
            cap = ncap;
        }
        const char *id = (const char *)sqlite3_column_text(s, 0);
        const char *lv = (const char *)sqlite3_column_text(s, 1);
        snprintf(v[len].resource_id, sizeof v[len].resource_id, "%s", id ? id : "");
        snprintf(v[len].level, sizeof v[len].level, "%s", lv ? lv : "");
        v[len].seq = sqlite3_column_int64(s, 2);
        v[len].first_seen = sqlite3_column_double(s, 3);
        v[len].next_check = sqlite3_column_double(s, 4);
        v[len].stable_seen = sqlite3_column_double(s, 5);
        len++;
    }
    if (step != SQLITE_DONE)
        rc = db_fail(st, "list watched arrivals", err, errlen);
out:
    sqlite3_finalize(s);
    if (rc) {
        free(v);
        return rc;
    }
    *out = v;
    *n = len;
    return AR_OK;
}

static void copy_col(sqlite3_stmt *s, int col, char *dst, size_t size)
{
    const char *v = (const char *)sqlite3_column_text(s, col);
    snprintf(dst, size, "%s", v ? v : "");
}

static int select_jobs(ar_state *st, int q, ar_job **out, size_t *n, const char *what,
                       char *err, size_t errlen)
{
    sqlite3_stmt *s = st->q[q];
    ar_job *v = NULL;
    size_t len = 0, cap = 0;
    int rc;

    *out = NULL;
    *n = 0;
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        ar_job *j;
        if (len == cap) {
            size_t ncap = cap ? cap * 2 : 16;
            ar_job *nv = realloc(v, ncap * sizeof *nv);
            if (!nv) {
                rc = ar_seterr(err, errlen, AR_ENOMEM, "state database %s: %s: out of memory",
                               st->path, what);
                goto out;
            }
            v = nv;
            cap = ncap;
        }
        j = &v[len++];
        memset(j, 0, sizeof *j);
        j->id = sqlite3_column_int64(s, 0);
        copy_col(s, 1, j->rule, sizeof j->rule);
        copy_col(s, 2, j->level, sizeof j->level);
        copy_col(s, 3, j->resource_id, sizeof j->resource_id);
        copy_col(s, 4, j->study_id, sizeof j->study_id);
        j->change_seq = sqlite3_column_int64(s, 5);
        copy_col(s, 6, j->action, sizeof j->action);
        j->status = sqlite3_column_int(s, 7);
        j->attempts = sqlite3_column_int(s, 8);
        j->next_attempt_at = sqlite3_column_double(s, 9);
        copy_col(s, 10, j->last_error, sizeof j->last_error);
        copy_col(s, 11, j->path, sizeof j->path);
        j->bytes = sqlite3_column_int64(s, 12);
        copy_col(s, 13, j->lane, sizeof j->lane);
        j->priority = sqlite3_column_int(s, 14);
        copy_col(s, 15, j->remote_job, sizeof j->remote_job);
        j->submitted_at = sqlite3_column_double(s, 16);
    }
    if (rc != SQLITE_DONE) {
        rc = db_fail(st, what, err, errlen);
        goto out;
    }
    *out = v;
    *n = len;
    v = NULL;
    rc = AR_OK;
out:
    free(v);
    done_stmt(s);
    return rc;
}

int ar_state_due_jobs(ar_state *st, double now, ar_job **out, size_t *n, char *err, size_t errlen)
{
    sqlite3_bind_double(st->q[Q_JOB_DUE], 1, now);
    return select_jobs(st, Q_JOB_DUE, out, n, "list due jobs", err, errlen);
}

int ar_state_list_jobs(ar_state *st, int status_filter, ar_job **out, size_t *n,
                       char *err, size_t errlen)
{
    sqlite3_bind_int(st->q[Q_JOB_LIST], 1, status_filter < 0 ? -1 : status_filter);
    return select_jobs(st, Q_JOB_LIST, out, n, "list jobs", err, errlen);
}

int ar_state_job_counts(ar_state *st, size_t counts[4], char *err, size_t errlen)
{
    sqlite3_stmt *s = NULL;
    int rc = AR_OK, step;
    counts[0] = counts[1] = counts[2] = counts[3] = 0;
    if (sqlite3_prepare_v2(st->db, "SELECT status, count(*) FROM jobs GROUP BY status", -1, &s,
                           NULL) != SQLITE_OK)
        return db_fail(st, "count jobs", err, errlen);
    while ((step = sqlite3_step(s)) == SQLITE_ROW) {
        int status = sqlite3_column_int(s, 0);
        if (status >= 0 && status < 4)
            counts[status] = (size_t)sqlite3_column_int64(s, 1);
    }
    if (step != SQLITE_DONE)
        rc = db_fail(st, "count jobs", err, errlen);
    sqlite3_finalize(s);
    return rc;
}

static int one_job_changed(ar_state *st, int changes, int64_t id, char *err, size_t errlen)
{
    if (changes == 0)
        return ar_seterr(err, errlen, AR_ERR, "state database %s: no job %lld", st->path, (long long)id);
    return AR_OK;
}

int ar_state_job_done(ar_state *st, int64_t id, const char *path, long long bytes,
                      char *err, size_t errlen)
{
    sqlite3_stmt *s = st->q[Q_JOB_DONE];
    int rc, changes = 0;
    sqlite3_bind_int64(s, 1, id);
    bind_str(s, 2, path);
    sqlite3_bind_int64(s, 3, bytes);
    sqlite3_bind_double(s, 4, ar_wall_now());
    if ((rc = step_done(st, Q_JOB_DONE, "mark job done", &changes, err, errlen)))
        return rc;
    return one_job_changed(st, changes, id, err, errlen);
}

int ar_state_job_gone(ar_state *st, int64_t id, const char *why, char *err, size_t errlen)
{
    sqlite3_stmt *s = st->q[Q_JOB_GONE];
    int rc, changes = 0;
    sqlite3_bind_int64(s, 1, id);
    bind_str(s, 2, why);
    sqlite3_bind_double(s, 3, ar_wall_now());
    if ((rc = step_done(st, Q_JOB_GONE, "mark job gone", &changes, err, errlen)))
        return rc;
    return one_job_changed(st, changes, id, err, errlen);
}

int ar_state_job_failed(ar_state *st, int64_t id, const char *why, double retry_at,
                        char *err, size_t errlen)
{
    sqlite3_stmt *s = st->q[Q_JOB_FAILED];
    int rc, changes = 0;
    sqlite3_bind_int64(s, 1, id);
    bind_str(s, 2, why);
    sqlite3_bind_double(s, 3, retry_at > 0 ? retry_at : 0);
    sqlite3_bind_double(s, 4, ar_wall_now());
    if ((rc = step_done(st, Q_JOB_FAILED, "mark job failed", &changes, err, errlen)))
        return rc;
    return one_job_changed(st, changes, id, err, errlen);
}

int ar_state_job_requeue(ar_state *st, int64_t id, int *count, char *err, size_t errlen)
{
    sqlite3_stmt *s = st->q[Q_JOB_REQUEUE];
    int rc, changes = 0;
    *count = 0;
    sqlite3_bind_int64(s, 1, id < 0 ? -1 : id);
    sqlite3_bind_double(s, 2, ar_wall_now());
    if ((rc = step_done(st, Q_JOB_REQUEUE, "requeue jobs", &changes, err, errlen)))
        return rc;
    *count = changes;
    return AR_OK;
}

int ar_state_claimable(ar_state *st, const char *lane, double horizon, double now, int limit,
                       ar_job **out, size_t *n, char *err, size_t errlen)
{
    sqlite3_stmt *s = st->q[Q_JOB_CLAIMABLE];
    bind_str(s, 1, lane);
    sqlite3_bind_double(s, 2, horizon);
    sqlite3_bind_double(s, 3, now);
    sqlite3_bind_int(s, 4, limit > 0 ? limit : 1);
    return select_jobs(st, Q_JOB_CLAIMABLE, out, n, "list a lane's jobs", err, errlen);
}

int ar_state_pending_lanes(ar_state *st, char (**lanes)[AR_LANE_LEN], size_t *n, char *err,
                           size_t errlen)
{
    sqlite3_stmt *s = st->q[Q_JOB_LANES];
    char (*v)[AR_LANE_LEN] = NULL;
    size_t len = 0, cap = 0;
    int rc = AR_OK, step;
    *lanes = NULL;
    *n = 0;
    while ((step = sqlite3_step(s)) == SQLITE_ROW) {
        if (len == cap) {
            size_t ncap = cap ? cap * 2 : 8;
            char (*nv)[AR_LANE_LEN] = realloc(v, ncap * sizeof *nv);
            if (!nv) {
                rc = ar_seterr(err, errlen, AR_ENOMEM, "out of memory listing lanes");
                goto out;
            }
            v = nv;
            cap = ncap;
        }
        copy_col(s, 0, v[len++], AR_LANE_LEN);
    }
    if (step != SQLITE_DONE)
        rc = db_fail(st, "list lanes", err, errlen);
out:
    done_stmt(s);
    if (rc) {
        free(v);
        return rc;
    }
    *lanes = v;
    *n = len;
    return AR_OK;
}

int ar_state_pending_by_lane(ar_state *st, ar_lane_count **out, size_t *n, char *err,
                             size_t errlen)
{
    sqlite3_stmt *s = st->q[Q_JOB_BY_LANE];
    ar_lane_count *v = NULL;
    size_t len = 0, cap = 0;
    int rc = AR_OK, step;
    *out = NULL;
    *n = 0;
    while ((step = sqlite3_step(s)) == SQLITE_ROW) {
        if (len == cap) {
            size_t ncap = cap ? cap * 2 : 8;
            ar_lane_count *nv = realloc(v, ncap * sizeof *nv);
            if (!nv) {
                rc = ar_seterr(err, errlen, AR_ENOMEM, "out of memory counting lanes");
                goto out;
            }
            v = nv;
            cap = ncap;
        }
        copy_col(s, 0, v[len].lane, sizeof v[len].lane);
        v[len].pending = (size_t)sqlite3_column_int64(s, 1);
        len++;
    }
    if (step != SQLITE_DONE)
        rc = db_fail(st, "count jobs by lane", err, errlen);
out:
    done_stmt(s);
    if (rc) {
        free(v);
        return rc;
    }
    *out = v;
    *n = len;
    return AR_OK;
}

int ar_state_lane_in_flight(ar_state *st, const char *lane, int *count, char *err, size_t errlen)
{
    sqlite3_stmt *s = st->q[Q_JOB_IN_FLIGHT];
    int rc = AR_OK;
    *count = 0;
    bind_str(s, 1, lane);
    if (sqlite3_step(s) == SQLITE_ROW)
        *count = sqlite3_column_int(s, 0);
    else
        rc = db_fail(st, "count forwards in flight", err, errlen);
    done_stmt(s);
    return rc;
}

int ar_state_job_remote(ar_state *st, int64_t id, const char *remote_job, double submitted_at,
                        double next_at, char *err, size_t errlen)
{
    sqlite3_stmt *s = st->q[Q_JOB_REMOTE];
    int rc, changes = 0;
    sqlite3_bind_int64(s, 1, id);
    bind_str(s, 2, remote_job);
    sqlite3_bind_double(s, 3, submitted_at);
    sqlite3_bind_double(s, 4, next_at);
    sqlite3_bind_double(s, 5, ar_wall_now());
    if ((rc = step_done(st, Q_JOB_REMOTE, "record the Orthanc job of a forward", &changes, err,
                        errlen)))
        return rc;
    return one_job_changed(st, changes, id, err, errlen);
}

int ar_state_job_wait(ar_state *st, int64_t id, const char *why, double next_at, char *err,
                      size_t errlen)
{
    sqlite3_stmt *s = st->q[Q_JOB_WAIT];
    int rc, changes = 0;
    sqlite3_bind_int64(s, 1, id);
    bind_str(s, 2, why);
    sqlite3_bind_double(s, 3, next_at);
    sqlite3_bind_double(s, 4, ar_wall_now());
    if ((rc = step_done(st, Q_JOB_WAIT, "postpone job", &changes, err, errlen)))
        return rc;
    return one_job_changed(st, changes, id, err, errlen);
}

int ar_state_newer_job(ar_state *st, const ar_job *j, int64_t *newer, char *err, size_t errlen)
{
    sqlite3_stmt *s = st->q[Q_JOB_NEWER];
    int rc = AR_OK, step;
    *newer = 0;
    bind_field(s, 1, j->rule, sizeof j->rule);
    bind_field(s, 2, j->resource_id, sizeof j->resource_id);
    sqlite3_bind_int64(s, 3, j->id);
    step = sqlite3_step(s);
    if (step == SQLITE_ROW)
        *newer = sqlite3_column_int64(s, 0);
    else if (step != SQLITE_DONE)
        rc = db_fail(st, "look for a newer job", err, errlen);
    done_stmt(s);
    return rc;
}

int ar_state_fill_lane(ar_state *st, const char *rule, const char *lane, char *err, size_t errlen)
{
    sqlite3_stmt *s = st->q[Q_JOB_FILL_LANE];
    if (rule)
        bind_str(s, 1, rule);
    else
        sqlite3_bind_null(s, 1);
    bind_str(s, 2, lane);
    return step_done(st, Q_JOB_FILL_LANE, "set the lane of migrated jobs", NULL, err, errlen);
}

int ar_state_jobs_due_now(ar_state *st, char *err, size_t errlen)
{
    return step_done(st, Q_JOB_DUE_NOW, "make pending jobs due", NULL, err, errlen);
}

/* ---- folder ownership ---------------------------------------------------- */

/* Who owns rel: *state = 0 free, 1 owned by owner, 2 owned by someone else. */
static int folder_owner(ar_state *st, const char *rel, const char *owner, int *state,
                        char *err, size_t errlen)
{
    sqlite3_stmt *s = st->q[Q_FOLDER_GET];
    int rc;
    *state = 0;
    bind_str(s, 1, rel);
    bind_str(s, 2, owner);
    rc = sqlite3_step(s);
    if (rc == SQLITE_ROW) {
        *state = sqlite3_column_int(s, 0) ? 1 : 2;
    } else if (rc != SQLITE_DONE) {
        rc = db_fail(st, "read folder owner", err, errlen);
        done_stmt(s);
        return rc;
    }
    done_stmt(s);
    return AR_OK;
}

/* The 8-character tag that tells colliding folders apart: the first 8
 * characters of src made safe for a file name, or a hash of the owner. */
static void owner_tag(const char *src, const char *owner, char tag[9])
{
    size_t i = 0;
    if (src) {
        for (; i < 8 && src[i]; i++) {
            unsigned char c = (unsigned char)src[i];
            int ok = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
                     || c == '-' || c == '_';
            tag[i] = ok ? (char)c : '_';
        }
    }
    if (i == 0) {
        uint32_t h = 2166136261u;   /* FNV-1a */
        for (; *owner; owner++) {
            h ^= (unsigned char)*owner;
            h *= 16777619u;
        }
        snprintf(tag, 9, "%08x", (unsigned)h);
        return;
    }
    tag[i] = '\0';
}

/* Candidate k for rel: k = 0 -> rel; k = 1 -> rel~tag; k >= 2 -> rel~tag-k.
 * The last component is cut (on a UTF-8 boundary) so that it, plus the
 * suffix, plus ".WORKING", still fits in a file name. */
static int candidate(const char *rel, const char *tag, long k, char *out, size_t outlen)
{
    char suffix[48];
    const char *last = strrchr(rel, '/');
    size_t head, lastlen, keep, sl;

    if (k == 0) {
        if (strlen(rel) >= outlen)
            return -1;
        memcpy(out, rel, strlen(rel) + 1);
        return 0;
    }
    if (k == 1)
        snprintf(suffix, sizeof suffix, "~%s", tag);
    else
        snprintf(suffix, sizeof suffix, "~%s-%ld", tag, k);
    sl = strlen(suffix);
    last = last ? last + 1 : rel;
    head = (size_t)(last - rel);
    lastlen = strlen(last);
    keep = lastlen;
    if (keep + sl > AR_NAME_MAX - WORKING_LEN) {
        keep = AR_NAME_MAX - WORKING_LEN - sl;
        while (keep > 0 && ((unsigned char)last[keep] & 0xC0) == 0x80)
            keep--;             /* do not split a UTF-8 sequence */
    }
    if (head + keep + sl >= outlen)
        return -1;
    memcpy(out, rel, head + keep);
    memcpy(out + head + keep, suffix, sl + 1);
    return 0;
}

int ar_state_claim_folder(ar_state *st, const char *rel, const char *owner,
                          const char *owner_suffix_src, char *out, size_t outlen,
                          char *err, size_t errlen)
{
    int rc;
    long k;
    char tag[9], cand[4200];

    if (!rel || !*rel || !owner || !*owner)
        return ar_seterr(err, errlen, AR_ERR, "state database %s: claim folder: empty folder or owner",
                         st->path);
    owner_tag(owner_suffix_src, owner, tag);
    if ((rc = begin(st, err, errlen)))
        return rc;
    for (k = 0; k < CLAIM_MAX_TRIES; k++) {
        int owned = 0;
        if (candidate(rel, tag, k, cand, sizeof cand) != 0) {
            rc = ar_seterr(err, errlen, AR_EIO, "state database %s: folder name too long: %.200s",
                           st->path, rel);
            goto out;
        }
        if ((rc = folder_owner(st, cand, owner, &owned, err, errlen)))
            goto out;
        if (owned == 2)
            continue;
        if (owned == 0) {
            sqlite3_stmt *s = st->q[Q_FOLDER_PUT];
            bind_str(s, 1, cand);
            bind_str(s, 2, owner);
            if ((rc = step_done(st, Q_FOLDER_PUT, "claim folder", NULL, err, errlen)))
                goto out;
        }
        if (strlen(cand) >= outlen) {
            rc = ar_seterr(err, errlen, AR_ERR, "state database %s: folder name %.200s does not fit",
                           st->path, cand);
            goto out;
        }
        memcpy(out, cand, strlen(cand) + 1);
        rc = commit(st, err, errlen);
        goto out;
    }
    rc = ar_seterr(err, errlen, AR_EIO, "state database %s: no free folder name for %.200s",
                   st->path, rel);
out:
    if (rc)
        rollback(st);
    return rc;
}

int ar_state_peek_folder(ar_state *st, const char *rel, const char *owner,
                         const char *owner_suffix_src, char *out, size_t outlen, int *taken,
                         char *holder, size_t holderlen, char *err, size_t errlen)
{
    int rc;
    long k;
    char tag[9], cand[4200];

    *taken = 0;
    if (holder && holderlen)
        holder[0] = '\0';
    if (!rel || !*rel || !owner || !*owner)
        return ar_seterr(err, errlen, AR_ERR, "state database %s: peek folder: empty folder or owner",
                         st->path);
    owner_tag(owner_suffix_src, owner, tag);
    for (k = 0; k < CLAIM_MAX_TRIES; k++) {
        int owned = 0;
        if (candidate(rel, tag, k, cand, sizeof cand) != 0)
            return ar_seterr(err, errlen, AR_EIO, "state database %s: folder name too long: %.200s",
                             st->path, rel);
        if ((rc = folder_owner(st, cand, owner, &owned, err, errlen)))
            return rc;
        if (owned == 2 && k == 0) {
            *taken = 1;
            if (holder && holderlen) {
                sqlite3_stmt *s = NULL;
                if (sqlite3_prepare_v2(st->db, "SELECT owner FROM folders WHERE rel = ?1", -1, &s,
                                       NULL) == SQLITE_OK) {
                    bind_str(s, 1, rel);
                    if (sqlite3_step(s) == SQLITE_ROW && sqlite3_column_text(s, 0))
                        snprintf(holder, holderlen, "%s", (const char *)sqlite3_column_text(s, 0));
                }
                sqlite3_finalize(s);
            }
        }
        if (owned == 2)
            continue;
        if (strlen(cand) >= outlen)
            return ar_seterr(err, errlen, AR_ERR, "state database %s: folder name %.200s does not fit",
                             st->path, cand);
        memcpy(out, cand, strlen(cand) + 1);
        return AR_OK;
    }
    return ar_seterr(err, errlen, AR_EIO, "state database %s: no free folder name for %.200s",
                     st->path, rel);
}
