/* test_core_state.c - guards core/state.c: the cursor survives close/open,
 * jobs are recorded atomically with the cursor (also under kill -9) and only
 * once, due jobs come oldest first with retry times honoured, failed jobs can
 * be requeued, gone jobs stay gone, folder claims are deterministic, and
 * errors name the database file. */
#include "err.h"
#include "state.h"
#include "tap.h"

#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static char root[64];

static void path_in(char *out, size_t len, const char *rel)
{
    snprintf(out, len, "%s/%s", root, rel);
}

static ar_job mkjob(const char *rule, const char *res, int64_t seq)
{
    ar_job j;
    memset(&j, 0, sizeof j);
    snprintf(j.rule, sizeof j.rule, "%s", rule);
    snprintf(j.level, sizeof j.level, "study");
    snprintf(j.resource_id, sizeof j.resource_id, "%s", res);
    snprintf(j.study_id, sizeof j.study_id, "%s", res);
    j.change_seq = seq;
    snprintf(j.action, sizeof j.action, "download");
    return j;
}

/* Run SQL on the state database through a second connection. */
static int side_sql(const char *dir, const char *sql)
{
    char p[256];
    sqlite3 *db = NULL;
    int rc;
    snprintf(p, sizeof p, "%s/autorthanc.sqlite", dir);
    if (sqlite3_open(p, &db) != SQLITE_OK)
        return -1;
    sqlite3_busy_timeout(db, 5000);
    rc = sqlite3_exec(db, sql, NULL, NULL, NULL);
    sqlite3_close(db);
    return rc == SQLITE_OK ? 0 : -1;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void test_open_and_cursor(void)
{
    char dir[256], parent[256], err[1024] = "";
    ar_state *st = NULL;
    int64_t cur = -5;
    int has = -1;
    struct stat sb;

    path_in(parent, sizeof parent, "a");
    path_in(dir, sizeof dir, "a/b/state/");
    CHECK_INT(ar_state_open(dir, &st, err, sizeof err), AR_OK);
    CHECK(st != NULL, "opened: %s", err);
    if (!st)
        return;
    CHECK(stat(dir, &sb) == 0 && (sb.st_mode & 0777) == 0700, "state folder mode 0700 (%o)", sb.st_mode & 0777);
    CHECK(stat(parent, &sb) == 0 && (sb.st_mode & 0777) == 0700, "created parents mode 0700");
    CHECK_INT(ar_state_get_cursor(st, &cur, &has, err, sizeof err), AR_OK);
    CHECK_INT(has, 0);
    CHECK_INT(cur, 0);
    CHECK_INT(ar_state_set_cursor(st, 42, err, sizeof err), AR_OK);
    ar_state_close(st);

    /* reopen: the cursor is still there, the schema is not recreated */
    st = NULL;
    CHECK_INT(ar_state_open(dir, &st, err, sizeof err), AR_OK);
    CHECK_INT(ar_state_get_cursor(st, &cur, &has, err, sizeof err), AR_OK);
    CHECK_INT(has, 1);
    CHECK_INT(cur, 42);
    CHECK_INT(ar_state_set_cursor(st, 9000000000LL, err, sizeof err), AR_OK);
    CHECK_INT(ar_state_get_cursor(st, &cur, &has, err, sizeof err), AR_OK);
    CHECK_INT(cur, 9000000000LL);
    CHECK_INT(ar_state_set_cursor(st, 0, err, sizeof err), AR_OK); /* can go back (log reset) */
    CHECK_INT(ar_state_get_cursor(st, &cur, &has, err, sizeof err), AR_OK);
    CHECK_INT(cur, 0);
    CHECK_INT(has, 1);

    {
        char v[64];
        CHECK_INT(ar_state_get_kv(st, "status", v, sizeof v, &has, err, sizeof err), AR_OK);
        CHECK_INT(has, 0);
        CHECK_INT(ar_state_set_kv(st, "status", "ok 1", err, sizeof err), AR_OK);
        CHECK_INT(ar_state_set_kv(st, "status", "ok 2", err, sizeof err), AR_OK);
        CHECK_INT(ar_state_get_kv(st, "status", v, sizeof v, &has, err, sizeof err), AR_OK);
        CHECK_INT(has, 1);
        CHECK_STR(v, "ok 2");
        CHECK_INT(ar_state_get_kv(st, "status", v, 3, &has, err, sizeof err), AR_OK);
        CHECK_STR(v, "ok");
    }
    ar_state_close(st);

    /* WAL and the schema version are in the file */
    {
        char p[300];
        sqlite3 *db;
        sqlite3_stmt *s;
        snprintf(p, sizeof p, "%sautorthanc.sqlite", dir);
        CHECK(sqlite3_open(p, &db) == SQLITE_OK, "side open");
        sqlite3_prepare_v2(db, "PRAGMA journal_mode", -1, &s, NULL);
        CHECK(sqlite3_step(s) == SQLITE_ROW && !strcmp((const char *)sqlite3_column_text(s, 0), "wal"),
              "WAL mode");
        sqlite3_finalize(s);
        sqlite3_prepare_v2(db, "PRAGMA user_version", -1, &s, NULL);
        CHECK(sqlite3_step(s) == SQLITE_ROW && sqlite3_column_int(s, 0) == 2, "user_version 2");
        sqlite3_finalize(s);
        sqlite3_close(db);
    }
}

static void test_open_errors(void)
{
    char dir[256], file[256], err[1024] = "";
    ar_state *st = (ar_state *)&err;  /* must be reset to NULL on failure */
    FILE *f;

    path_in(file, sizeof file, "plainfile");
    f = fopen(file, "w");
    fclose(f);
    CHECK(ar_state_open(file, &st, err, sizeof err) != AR_OK, "a file is not a state folder");
    CHECK(st == NULL, "out reset on failure");
    CHECK(strstr(err, file) != NULL, "error names the path: %s", err);

    path_in(dir, sizeof dir, "plainfile/sub");
    CHECK(ar_state_open(dir, &st, err, sizeof err) != AR_OK, "cannot create under a file");
    CHECK(strstr(err, "plainfile") != NULL, "error names the path: %s", err);

    /* a database from the future is refused */
    path_in(dir, sizeof dir, "future");
    CHECK_INT(ar_state_open(dir, &st, err, sizeof err), AR_OK);
    ar_state_close(st);
    CHECK_INT(side_sql(dir, "PRAGMA user_version = 99"), 0);
    CHECK(ar_state_open(dir, &st, err, sizeof err) != AR_OK, "newer schema refused");
    CHECK(strstr(err, "autorthanc.sqlite") && strstr(err, "99"), "names db and version: %s", err);

    /* a corrupt database file */
    path_in(dir, sizeof dir, "corrupt");
    mkdir(dir, 0700);
    path_in(file, sizeof file, "corrupt/autorthanc.sqlite");
    f = fopen(file, "w");
    fputs("this is not an SQLite database, not at all, no, it is not. ..............................", f);
    fclose(f);
    CHECK(ar_state_open(dir, &st, err, sizeof err) != AR_OK, "corrupt db refused");
    CHECK(strstr(err, file) != NULL, "error names the db file: %s", err);
}

static int find_job(const ar_job *v, size_t n, const char *rule, const char *res, int64_t seq)
{
    size_t i;
    for (i = 0; i < n; i++)
        if (!strcmp(v[i].rule, rule) && !strcmp(v[i].resource_id, res) && v[i].change_seq == seq)
            return (int)i;
    return -1;
}

static void test_jobs(void)
{
    char dir[256], err[1024] = "";
    ar_state *st = NULL;
    ar_job batch[4], *v = NULL;
    size_t n = 0;
    int64_t cur;
    int has, count;
    double now = now_s();

    path_in(dir, sizeof dir, "jobs");
    CHECK_INT(ar_state_open(dir, &st, err, sizeof err), AR_OK);
    if (!st)
        return;

    batch[0] = mkjob("ruleA", "study-1", 10);
    batch[1] = mkjob("ruleB", "study-1", 10);
    batch[2] = mkjob("ruleA", "study-2", 11);
    CHECK_INT(ar_state_record_jobs(st, batch, 3, 11, err, sizeof err), AR_OK);
    CHECK_INT(ar_state_get_cursor(st, &cur, &has, err, sizeof err), AR_OK);
    CHECK_INT(cur, 11);

    /* idempotent: the same jobs again, plus one new, plus the same study
     * stable again later (a new change_seq is a new job) */
    batch[3] = mkjob("ruleA", "study-1", 20);
    CHECK_INT(ar_state_record_jobs(st, batch, 4, 20, err, sizeof err), AR_OK);
    CHECK_INT(ar_state_record_jobs(st, batch, 4, 20, err, sizeof err), AR_OK);
    CHECK_INT(ar_state_list_jobs(st, -1, &v, &n, err, sizeof err), AR_OK);
    CHECK_INT(n, 4);
    free(v);
    /* n == 0 just moves the cursor */
    CHECK_INT(ar_state_record_jobs(st, NULL, 0, 25, err, sizeof err), AR_OK);
    CHECK_INT(ar_state_get_cursor(st, &cur, &has, err, sizeof err), AR_OK);
    CHECK_INT(cur, 25);

    /* due jobs: all pending, oldest first, fields round-trip */
    CHECK_INT(ar_state_due_jobs(st, now, &v, &n, err, sizeof err), AR_OK);
    CHECK_INT(n, 4);
    if (n == 4) {
        CHECK(v[0].id < v[1].id && v[1].id < v[2].id && v[2].id < v[3].id, "oldest first");
        CHECK_STR(v[0].rule, "ruleA");
        CHECK_STR(v[0].resource_id, "study-1");
        CHECK_INT(v[0].change_seq, 10);
        CHECK_STR(v[1].rule, "ruleB");
        CHECK_STR(v[3].resource_id, "study-1");
        CHECK_INT(v[3].change_seq, 20);
        CHECK_STR(v[0].level, "study");
        CHECK_STR(v[0].action, "download");
        CHECK_STR(v[0].study_id, "study-1");
        CHECK_INT(v[0].status, AR_JOB_PENDING);
        CHECK_INT(v[0].attempts, 0);
    }
    {
        int64_t a = n == 4 ? v[0].id : -1, b = n == 4 ? v[1].id : -1;
        int64_t c = n == 4 ? v[2].id : -1, d = n == 4 ? v[3].id : -1;
        free(v);

        /* a retryable failure: still pending, due only from retry_at */
        CHECK_INT(ar_state_job_failed(st, a, "network: timeout", now + 100, err, sizeof err), AR_OK);
        CHECK_INT(ar_state_due_jobs(st, now, &v, &n, err, sizeof err), AR_OK);
        CHECK_INT(n, 3);
        CHECK(find_job(v, n, "ruleA", "study-1", 10) < 0, "retrying job not due yet");
        free(v);
        CHECK_INT(ar_state_due_jobs(st, now + 100, &v, &n, err, sizeof err), AR_OK);
        CHECK_INT(n, 4);
        if (n == 4) {
            CHECK_INT(v[0].id, a);              /* still oldest first */
            CHECK_INT(v[0].attempts, 1);
            CHECK_STR(v[0].last_error, "network: timeout");
            CHECK(v[0].next_attempt_at == now + 100, "retry time stored");
            CHECK_INT(v[0].status, AR_JOB_PENDING);
        }
        free(v);
        CHECK_INT(ar_state_job_failed(st, a, "network: again", now + 200, err, sizeof err), AR_OK);

        /* a final failure */
        CHECK_INT(ar_state_job_failed(st, b, "http 403", 0, err, sizeof err), AR_OK);
        CHECK_INT(ar_state_list_jobs(st, AR_JOB_FAILED, &v, &n, err, sizeof err), AR_OK);
        CHECK_INT(n, 1);
        if (n == 1) {
            CHECK_INT(v[0].id, b);
            CHECK_INT(v[0].attempts, 1);
            CHECK_STR(v[0].last_error, "http 403");
        }
        free(v);

        /* done and gone */
        CHECK_INT(ar_state_job_done(st, c, "ruleA/P-DOE-EX1", 123456789012LL, err, sizeof err), AR_OK);
        CHECK_INT(ar_state_job_gone(st, d, "404 from Orthanc", err, sizeof err), AR_OK);
        CHECK_INT(ar_state_list_jobs(st, AR_JOB_DONE, &v, &n, err, sizeof err), AR_OK);
        CHECK_INT(n, 1);
        if (n == 1) {
            CHECK_STR(v[0].path, "ruleA/P-DOE-EX1");
            CHECK_INT(v[0].bytes, 123456789012LL);
        }
        free(v);
        CHECK_INT(ar_state_list_jobs(st, AR_JOB_GONE, &v, &n, err, sizeof err), AR_OK);
        CHECK_INT(n, 1);
        if (n == 1)
            CHECK_STR(v[0].last_error, "404 from Orthanc");
        free(v);
        CHECK_INT(ar_state_due_jobs(st, now + 1e9, &v, &n, err, sizeof err), AR_OK);
        CHECK_INT(n, 1);                        /* only a, retrying */
        if (n == 1) {
            CHECK_INT(v[0].id, a);
            CHECK_INT(v[0].attempts, 2);
        }
        free(v);

        /* recording the done/gone jobs again does not resurrect them */
        CHECK_INT(ar_state_record_jobs(st, batch, 4, 30, err, sizeof err), AR_OK);
        CHECK_INT(ar_state_list_jobs(st, AR_JOB_DONE, &v, &n, err, sizeof err), AR_OK);
        CHECK_INT(n, 1);
        free(v);

        /* requeue: only failed jobs */
        CHECK_INT(ar_state_job_requeue(st, c, &count, err, sizeof err), AR_OK);
        CHECK_INT(count, 0);
        CHECK_INT(ar_state_job_requeue(st, 999999, &count, err, sizeof err), AR_OK);
        CHECK_INT(count, 0);
        CHECK_INT(ar_state_job_requeue(st, b, &count, err, sizeof err), AR_OK);
        CHECK_INT(count, 1);
        CHECK_INT(ar_state_list_jobs(st, AR_JOB_PENDING, &v, &n, err, sizeof err), AR_OK);
        CHECK_INT(n, 2);
        if (n == 2) {
            int i = v[0].id == b ? 0 : 1;
            CHECK_INT(v[i].id, b);
            CHECK_INT(v[i].attempts, 0);
            CHECK(v[i].next_attempt_at == 0, "requeued job due now");
        }
        free(v);
        /* requeue all */
        CHECK_INT(ar_state_job_failed(st, a, "x", 0, err, sizeof err), AR_OK);
        CHECK_INT(ar_state_job_failed(st, b, "y", 0, err, sizeof err), AR_OK);
        CHECK_INT(ar_state_job_requeue(st, -1, &count, err, sizeof err), AR_OK);
        CHECK_INT(count, 2);
        CHECK_INT(ar_state_due_jobs(st, now, &v, &n, err, sizeof err), AR_OK);
        CHECK_INT(n, 2);
        if (n == 2)
            CHECK(v[0].id == a && v[1].id == b, "requeued jobs oldest first");
        free(v);

        /* unknown ids are errors naming the database */
        CHECK_INT(ar_state_job_done(st, 424242, "x", 0, err, sizeof err), AR_ERR);
        CHECK(strstr(err, "autorthanc.sqlite") && strstr(err, "424242"), "unknown job: %s", err);
        CHECK(ar_state_job_failed(st, 424242, "x", 0, err, sizeof err) != AR_OK, "unknown job failed");
        CHECK(ar_state_job_gone(st, 424242, "x", err, sizeof err) != AR_OK, "unknown job gone");
    }

    /* persistence across close/open */
    ar_state_close(st);
    st = NULL;
    CHECK_INT(ar_state_open(dir, &st, err, sizeof err), AR_OK);
    CHECK_INT(ar_state_list_jobs(st, -1, &v, &n, err, sizeof err), AR_OK);
    CHECK_INT(n, 4);
    free(v);
    CHECK_INT(ar_state_get_cursor(st, &cur, &has, err, sizeof err), AR_OK);
    CHECK_INT(cur, 30);

    /* empty list: out is NULL, n is 0 */
    v = (ar_job *)1;
    CHECK_INT(ar_state_list_jobs(st, 77, &v, &n, err, sizeof err), AR_OK);
    CHECK(v == NULL && n == 0, "empty list");

    /* a failing insert rolls the whole batch back, cursor included */
    CHECK_INT(side_sql(dir, "CREATE TRIGGER boom BEFORE INSERT ON jobs WHEN NEW.rule = 'boom' "
                            "BEGIN SELECT RAISE(ABORT, 'boom rule refused'); END"), 0);
    batch[0] = mkjob("ruleC", "study-9", 40);
    batch[1] = mkjob("boom", "study-9", 40);
    CHECK(ar_state_record_jobs(st, batch, 2, 40, err, sizeof err) != AR_OK, "failing batch refused");
    CHECK(strstr(err, "autorthanc.sqlite") && strstr(err, "boom rule refused"), "error names db: %s", err);
    CHECK_INT(ar_state_get_cursor(st, &cur, &has, err, sizeof err), AR_OK);
    CHECK_INT(cur, 30);
    CHECK_INT(ar_state_list_jobs(st, -1, &v, &n, err, sizeof err), AR_OK);
    CHECK_INT(n, 4);
    CHECK(find_job(v, n, "ruleC", "study-9", 40) < 0, "first job of failed batch rolled back");
    free(v);
    /* and the state is usable afterwards (no transaction left open) */
    CHECK_INT(ar_state_record_jobs(st, batch, 1, 41, err, sizeof err), AR_OK);
    CHECK_INT(ar_state_get_cursor(st, &cur, &has, err, sizeof err), AR_OK);
    CHECK_INT(cur, 41);

    /* a job without rule is refused */
    batch[0].rule[0] = '\0';
    CHECK(ar_state_record_jobs(st, batch, 1, 50, err, sizeof err) != AR_OK, "empty rule refused");
    ar_state_close(st);
}

/* A child records batches of jobs with the cursor in a loop; it is killed
 * with SIGKILL at some point.  Afterwards every recorded batch is complete
 * and matches the cursor exactly. */
static void test_kill9(void)
{
    enum { PER_BATCH = 5 };
    char dir[256], err[1024] = "";
    ar_state *st = NULL;
    int round;

    path_in(dir, sizeof dir, "kill9");
    CHECK_INT(ar_state_open(dir, &st, err, sizeof err), AR_OK);
    ar_state_close(st);

    for (round = 0; round < 5; round++) {
        pid_t pid;
        int64_t cur = 0, start = 0;
        int has = 0, status;
        double deadline;
        ar_job *v = NULL;
        size_t n = 0, i;
        int bad = 0;

        st = NULL;
        CHECK_INT(ar_state_open(dir, &st, err, sizeof err), AR_OK);
        ar_state_get_cursor(st, &start, &has, err, sizeof err);
        ar_state_close(st);

        pid = fork();
        if (pid == 0) {
            ar_state *cs = NULL;
            char cerr[1024];
            int64_t b;
            if (ar_state_open(dir, &cs, cerr, sizeof cerr))
                _exit(3);
            for (b = start / 10 + 1;; b++) {
                ar_job jb[PER_BATCH];
                int k;
                for (k = 0; k < PER_BATCH; k++) {
                    char res[32];
                    snprintf(res, sizeof res, "s%lld-%d", (long long)b, k);
                    jb[k] = mkjob("kill", res, b * 10);
                }
                if (ar_state_record_jobs(cs, jb, PER_BATCH, b * 10, cerr, sizeof cerr))
                    _exit(4);
            }
        }
        /* wait until the child has made progress, then kill it mid-flight */
        deadline = now_s() + 30;
        st = NULL;
        CHECK_INT(ar_state_open(dir, &st, err, sizeof err), AR_OK);
        do {
            ar_state_get_cursor(st, &cur, &has, err, sizeof err);
        } while (cur < start + 10 * (3 + round * 7) && now_s() < deadline);
        ar_state_close(st);
        kill(pid, SIGKILL);
        waitpid(pid, &status, 0);
        CHECK(WIFSIGNALED(status), "child was killed (status %d)", status);

        st = NULL;
        CHECK_INT(ar_state_open(dir, &st, err, sizeof err), AR_OK);
        CHECK_INT(ar_state_get_cursor(st, &cur, &has, err, sizeof err), AR_OK);
        CHECK(cur > start, "progress was made (%lld > %lld)", (long long)cur, (long long)start);
        CHECK_INT(ar_state_list_jobs(st, -1, &v, &n, err, sizeof err), AR_OK);
        CHECK_INT(n, (size_t)(cur / 10) * PER_BATCH);
        for (i = 0; i < n; i++)
            if (v[i].change_seq > cur || v[i].change_seq % 10 != 0)
                bad++;
        CHECK_INT(bad, 0);
        free(v);
        ar_state_close(st);
    }
}

static void test_claim(void)
{
    static const struct { const char *rel, *owner, *src, *want; } steps[] = {
        { "r/DOE-EX1", "r|study-A", "aaaaaaaa-1111", "r/DOE-EX1" },
        { "r/DOE-EX1", "r|study-A", "aaaaaaaa-1111", "r/DOE-EX1" },               /* again: same */
        { "r/DOE-EX1", "r|study-B", "bbbbbbbb-2222", "r/DOE-EX1~bbbbbbbb" },      /* collision */
        { "r/DOE-EX1", "r|study-C", "bbbbbbbbXYZ", "r/DOE-EX1~bbbbbbbb-2" },      /* same 8 chars */
        { "r/DOE-EX1", "r|study-D", "bbbbbbbb", "r/DOE-EX1~bbbbbbbb-3" },
        { "r/DOE-EX1", "r|study-B", "bbbbbbbb-2222", "r/DOE-EX1~bbbbbbbb" },      /* stable */
        { "r/DOE-EX1", "r|study-C", "bbbbbbbbXYZ", "r/DOE-EX1~bbbbbbbb-2" },
        { "s/DOE-EX1", "s|study-B", "bbbbbbbb-2222", "s/DOE-EX1" },               /* other rule */
        { "r/DOE-EX1~bbbbbbbb", "r|study-E", "eeeeeeee", "r/DOE-EX1~bbbbbbbb~eeeeeeee" },
        { "r/X", "r|study-F", "a/b.c d:e", "r/X" },
        { "r/X", "r|study-G", "a/b.c d:e", "r/X~a_b_c_d_" },                      /* tag made safe */
        { "r/X", "r|study-H", "", "r/X~f33c3859" },           /* FNV-1a of the owner */
        { "r/X", "r|study-H", NULL, "r/X~f33c3859" },
    };
    char dirs[2][256], err[1024] = "", out[4096];
    int pass;
    size_t i;

    path_in(dirs[0], sizeof dirs[0], "claim1");
    path_in(dirs[1], sizeof dirs[1], "claim2");
    for (pass = 0; pass < 2; pass++) {
        ar_state *st = NULL;
        CHECK_INT(ar_state_open(dirs[pass], &st, err, sizeof err), AR_OK);
        if (!st)
            return;
        for (i = 0; i < sizeof steps / sizeof steps[0]; i++) {
            int rc = ar_state_claim_folder(st, steps[i].rel, steps[i].owner, steps[i].src, out,
                                           sizeof out, err, sizeof err);
            CHECK(rc == AR_OK && !strcmp(out, steps[i].want), "pass %d step %zu: got '%s' want '%s' (%s)",
                  pass, i, out, steps[i].want, rc ? err : "");
        }
        /* after reopening, the same answers */
        ar_state_close(st);
        st = NULL;
        CHECK_INT(ar_state_open(dirs[pass], &st, err, sizeof err), AR_OK);
        CHECK_INT(ar_state_claim_folder(st, "r/DOE-EX1", "r|study-D", "bbbbbbbb", out, sizeof out,
                                        err, sizeof err), AR_OK);
        CHECK_STR(out, "r/DOE-EX1~bbbbbbbb-3");
        CHECK_INT(ar_state_claim_folder(st, "r/DOE-EX1", "r|study-A", "aaaaaaaa", out, sizeof out,
                                        err, sizeof err), AR_OK);
        CHECK_STR(out, "r/DOE-EX1");

        /* a long last component is cut on a UTF-8 boundary to leave room
         * for the suffix and ".WORKING" */
        {
            char rel[600], out2[4096];
            size_t k, lastlen;
            const char *last;
            strcpy(rel, "r/");
            for (k = 0; k < 127; k++)
                strcat(rel, "\xc3\xa9");                 /* 254 bytes of é */
            CHECK_INT(ar_state_claim_folder(st, rel, "r|long-1", "11111111", out, sizeof out, err, sizeof err), AR_OK);
            CHECK_STR(out, rel);
            CHECK_INT(ar_state_claim_folder(st, rel, "r|long-2", "22222222", out2, sizeof out2, err, sizeof err), AR_OK);
            last = strrchr(out2, '/') + 1;
            lastlen = strlen(last);
            CHECK(lastlen <= 255 - 8, "suffixed name leaves room for .WORKING (%zu)", lastlen);
            CHECK(lastlen > 200, "not cut more than needed (%zu)", lastlen);
            CHECK(!strcmp(out2 + strlen(out2) - 9, "~22222222"), "suffix kept: %s", out2 + strlen(out2) - 9);
            CHECK((unsigned char)out2[strlen(out2) - 10] == 0xa9, "cut on a character boundary");
        }

        CHECK(ar_state_claim_folder(st, "", "r|x", "x", out, sizeof out, err, sizeof err) != AR_OK, "empty rel");
        CHECK(ar_state_claim_folder(st, "r/y", "", "x", out, sizeof out, err, sizeof err) != AR_OK, "empty owner");
        CHECK(ar_state_claim_folder(st, "r/DOE-EX1", "r|study-Z", "zzzzzzzz", out, 5, err, sizeof err) != AR_OK,
              "out too small");
        /* ... and that failed claim was rolled back: a later claim by study-Y
         * of the same name gets the next free suffix it would have had */
        CHECK_INT(ar_state_claim_folder(st, "r/DOE-EX1", "r|study-Y", "zzzzzzzz", out, sizeof out, err, sizeof err), AR_OK);
        CHECK_STR(out, "r/DOE-EX1~zzzzzzzz");
        ar_state_close(st);
    }
}


/* A schema 1 database (as autorthanc wrote it before lanes) is migrated in
 * place; lanes, in-flight forwards and the claim order. */
static void test_lanes(void)
{
    char dir[256], err[1024] = "";
    ar_state *st = NULL;
    ar_job *v = NULL;
    size_t n = 0;
    path_in(dir, sizeof dir, "lanes");
    CHECK_INT(mkdir(dir, 0700), 0);
    CHECK_INT(side_sql(dir,
        "CREATE TABLE meta(key TEXT PRIMARY KEY NOT NULL, value);"
        "CREATE TABLE jobs(id INTEGER PRIMARY KEY AUTOINCREMENT, rule TEXT NOT NULL, level TEXT NOT NULL,"
        " resource_id TEXT NOT NULL, study_id TEXT NOT NULL, change_seq INTEGER NOT NULL,"
        " action TEXT NOT NULL, status INTEGER NOT NULL DEFAULT 0, attempts INTEGER NOT NULL DEFAULT 0,"
        " next_attempt_at REAL NOT NULL DEFAULT 0, last_error TEXT NOT NULL DEFAULT '',"
        " path TEXT NOT NULL DEFAULT '', bytes INTEGER NOT NULL DEFAULT 0, created_at REAL NOT NULL,"
        " updated_at REAL NOT NULL, UNIQUE(rule, resource_id, change_seq));"
        "CREATE INDEX jobs_by_status ON jobs(status, next_attempt_at);"
        "CREATE TABLE folders(rel TEXT PRIMARY KEY NOT NULL, owner TEXT NOT NULL);"
        "CREATE TABLE watch(resource_id TEXT PRIMARY KEY NOT NULL, level TEXT NOT NULL, seq INTEGER NOT NULL);"
        "INSERT INTO meta VALUES('cursor', 42);"
        "INSERT INTO jobs(rule, level, resource_id, study_id, change_seq, action, created_at, updated_at)"
        " VALUES('dl', 'study', 's1', 's1', 5, 'download', 1, 1), ('fw', 'study', 's1', 's1', 5, 'forward', 1, 1);"
        "PRAGMA user_version = 1;"), 0);
    CHECK_INT(ar_state_open(dir, &st, err, sizeof err), AR_OK);
    if (!st)
        return;
    int64_t cur = 0;
    int has = 0;
    CHECK(ar_state_get_cursor(st, &cur, &has, err, sizeof err) == 0 && cur == 42, "cursor kept");
    CHECK_INT(ar_state_list_jobs(st, -1, &v, &n, err, sizeof err), AR_OK);
    CHECK(n == 2 && !strcmp(v[0].lane, "storage") && !strcmp(v[1].lane, "") &&
              v[0].priority == AR_PRIORITY_NORMAL, "migrated lanes: '%s' '%s'",
          n > 0 ? v[0].lane : "", n > 1 ? v[1].lane : "");
    free(v);
    CHECK_INT(ar_state_fill_lane(st, "fw", "modality:PACS", err, sizeof err), AR_OK);
    CHECK_INT(ar_state_fill_lane(st, NULL, "storage", err, sizeof err), AR_OK);

    char (*lanes)[AR_LANE_LEN] = NULL;
    CHECK_INT(ar_state_pending_lanes(st, &lanes, &n, err, sizeof err), AR_OK);
    CHECK(n == 2 && !strcmp(lanes[0], "modality:PACS") && !strcmp(lanes[1], "storage"),
          "two pending lanes (%zu)", n);
    free(lanes);

    /* claim order: forwards in flight first, then priority, fresh before
     * retries, oldest first; not-yet-due retries wait */
    ar_job b[4];
    b[0] = mkjob("dl", "s2", 6);
    b[1] = mkjob("dl", "s3", 7);
    b[2] = mkjob("dl", "s4", 8);
    b[3] = mkjob("dl", "s5", 9);
    for (int i = 0; i < 4; i++)
        snprintf(b[i].lane, sizeof b[i].lane, "storage");
    b[2].priority = AR_PRIORITY_URGENT;
    b[3].priority = AR_PRIORITY_LOW;
    CHECK_INT(ar_state_record_jobs(st, b, 4, 43, err, sizeof err), AR_OK);
    CHECK_INT(ar_state_list_jobs(st, 0, &v, &n, err, sizeof err), AR_OK);
    int64_t id_dl = v[0].id, id_fw = v[1].id, id_s2 = v[2].id;
    free(v);
    double now = now_s();
    /* s2 failed once and is due again; the first dl job failed and waits */
    CHECK_INT(ar_state_job_failed(st, id_s2, "x", now - 1, err, sizeof err), AR_OK);
    CHECK_INT(ar_state_job_failed(st, id_dl, "y", now + 100, err, sizeof err), AR_OK);
    CHECK_INT(ar_state_claimable(st, "storage", now, now, 10, &v, &n, err, sizeof err), AR_OK);
    CHECK(n == 4 && !strcmp(v[0].resource_id, "s4") && !strcmp(v[1].resource_id, "s3") &&
              !strcmp(v[2].resource_id, "s2") && !strcmp(v[3].resource_id, "s5"),
          "order: urgent, fresh normal, retried normal, low (%zu: %s %s %s %s)", n,
          n > 0 ? v[0].resource_id : "", n > 1 ? v[1].resource_id : "",
          n > 2 ? v[2].resource_id : "", n > 3 ? v[3].resource_id : "");
    free(v);

    /* a forward in flight, looked at later; postponed without an attempt */
    int inflight = -1;
    CHECK_INT(ar_state_job_remote(st, id_fw, "job-1", now, now + 50, err, sizeof err), AR_OK);
    CHECK(ar_state_lane_in_flight(st, "modality:PACS", &inflight, err, sizeof err) == 0 &&
              inflight == 1, "one forward in flight");
    CHECK_INT(ar_state_claimable(st, "modality:PACS", 1e300, now, 10, &v, &n, err, sizeof err),
              AR_OK);
    CHECK(n == 0, "its look is not due yet, even for --once");
    free(v);
    CHECK_INT(ar_state_claimable(st, "modality:PACS", now, now + 60, 10, &v, &n, err, sizeof err),
              AR_OK);
    CHECK(n == 1 && !strcmp(v[0].remote_job, "job-1") && v[0].submitted_at > 0, "due look");
    free(v);
    CHECK_INT(ar_state_job_wait(st, id_s2, "lane down", now + 5, err, sizeof err), AR_OK);
    CHECK_INT(ar_state_list_jobs(st, 0, &v, &n, err, sizeof err), AR_OK);
    for (size_t i = 0; i < n; i++)
        if (v[i].id == id_s2)
            CHECK(v[i].attempts == 1 && !strcmp(v[i].last_error, "lane down"),
                  "a wait is not an attempt (%d)", v[i].attempts);
    free(v);
    CHECK_INT(ar_state_jobs_due_now(st, err, sizeof err), AR_OK);
    CHECK_INT(ar_state_claimable(st, "storage", now, now, 10, &v, &n, err, sizeof err), AR_OK);
    CHECK(n == 5, "--once: every pending job is due (%zu)", n);
    free(v);

    /* a newer job of the same rule and resource supersedes */
    ar_job again = mkjob("dl", "s3", 70);
    snprintf(again.lane, sizeof again.lane, "storage");
    CHECK_INT(ar_state_record_jobs(st, &again, 1, 70, err, sizeof err), AR_OK);
    ar_job old = mkjob("dl", "s3", 7);
    int64_t newer = 0;
    CHECK_INT(ar_state_list_jobs(st, 0, &v, &n, err, sizeof err), AR_OK);
    for (size_t i = 0; i < n; i++)
        if (!strcmp(v[i].resource_id, "s3") && v[i].change_seq == 7)
            old.id = v[i].id;
    free(v);
    CHECK(ar_state_newer_job(st, &old, &newer, err, sizeof err) == 0 && newer > old.id,
          "newer job found");
    ar_state_close(st);
}

int main(void)
{
    snprintf(root, sizeof root, "/tmp/ar-state-XXXXXX");
    if (!mkdtemp(root)) {
        perror("mkdtemp");
        return 2;
    }
    test_open_and_cursor();
    test_open_errors();
    test_jobs();
    test_kill9();
    test_claim();
    test_lanes();
    {
        char cmd[128];
        int rc = tap_done();
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", root);
        if (rc == 0 && system(cmd) != 0)
            fprintf(stderr, "could not remove %s\n", root);
        return rc;
    }
}
