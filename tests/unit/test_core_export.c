/* test_core_export.c - the folder helpers, the HTTP client, the transfer
 * engine and atomic exports, against a real HTTP server on loopback
 * (tests/unit/netserver.py, started here on a port the kernel picks).
 *
 * Guards: symlinks and dot components are refused; *.WORKING folders are
 * cleaned without following links; files are byte-exact; size mismatches,
 * 5xx, 404 and write errors map to AR_ESIZE / AR_ENET / AR_ENOTFOUND /
 * AR_EIO; a failed export leaves no .WORKING and the old export untouched;
 * a successful one replaces it; the password never shows in a message.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "err.h"
#include "export.h"
#include "http.h"
#include "tap.h"
#include "transfer.h"

#define PASSWORD "s3cr3t-pw"

typedef struct server {
    pid_t pid;
    int stdin_fd;   /* closing it makes the server exit */
    int port;
    char base[64];
} server;

static char g_tmp[256];  /* short, so every path below fits PATH_MAX */

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void script_path(char *out, size_t len)
{
    const char *src = getenv("AR_SOURCE_DIR");
    if (src && *src) {
        snprintf(out, len, "%s/tests/unit/netserver.py", src);
        return;
    }
    /* __FILE__ is this file's path as CMake gave it to the compiler */
    snprintf(out, len, "%s", __FILE__);
    char *slash = strrchr(out, '/');
    if (slash)
        snprintf(slash + 1, len - (size_t)(slash + 1 - out), "netserver.py");
    else
        snprintf(out, len, "netserver.py");
}

/* Start netserver.py with extra args (NULL-terminated); 0 on success. */
static int server_start(server *s, const char *a1, const char *a2)
{
    int in[2], outp[2];
    char script[PATH_MAX];

    memset(s, 0, sizeof(*s));
    script_path(script, sizeof(script));
    /* close-on-exec: a later server must not hold this one's stdin open */
    if (pipe2(in, O_CLOEXEC) != 0 || pipe2(outp, O_CLOEXEC) != 0)
        return -1;
    s->pid = fork();
    if (s->pid < 0)
        return -1;
    if (s->pid == 0) {
        dup2(in[0], 0);
        dup2(outp[1], 1);
        close(in[0]); close(in[1]); close(outp[0]); close(outp[1]);
        if (a1)
            execlp("python3", "python3", script, a1, a2, (char *)NULL);
        else
            execlp("python3", "python3", script, (char *)NULL);
        _exit(127);
    }
    close(in[0]);
    close(outp[1]);
    s->stdin_fd = in[1];

    char line[32];
    size_t got = 0;
    double deadline = now_s() + 20;
    while (got < sizeof(line) - 1 && now_s() < deadline) {
        struct pollfd p = { outp[0], POLLIN, 0 };
        if (poll(&p, 1, 100) <= 0)
            continue;
        ssize_t r = read(outp[0], line + got, 1);
        if (r <= 0)
            break;
        if (line[got] == '\n')
            break;
        got++;
    }
    line[got] = '\0';
    close(outp[0]);
    s->port = atoi(line);
    if (s->port <= 0)
        return -1;
    snprintf(s->base, sizeof(s->base), "http://127.0.0.1:%d", s->port);
    return 0;
}

static void server_stop(server *s)
{
    if (s->pid <= 0)
        return;
    close(s->stdin_fd);
    kill(s->pid, SIGTERM);
    waitpid(s->pid, NULL, 0);
    s->pid = 0;
}

/* ---- file helpers ---------------------------------------------------------- */

static void pathf(char *out, size_t len, const char *fmt, const char *rel)
{
    snprintf(out, len, fmt, g_tmp, rel);
}

static int exists(const char *rel)
{
    char p[PATH_MAX];
    struct stat st;
    pathf(p, sizeof(p), "%s/%s", rel);
    return lstat(p, &st) == 0;
}

static int is_dir(const char *rel)
{
    char p[PATH_MAX];
    struct stat st;
    pathf(p, sizeof(p), "%s/%s", rel);
    return lstat(p, &st) == 0 && S_ISDIR(st.st_mode);
}

static void mkdir_rel(const char *rel)
{
    char p[PATH_MAX];
    pathf(p, sizeof(p), "%s/%s", rel);
    mkdir(p, 0755);
}

static void write_rel(const char *rel, const char *text)
{
    char p[PATH_MAX];
    pathf(p, sizeof(p), "%s/%s", rel);
    FILE *f = fopen(p, "w");
    if (f) {
        fputs(text, f);
        fclose(f);
    }
}

static void symlink_rel(const char *target, const char *rel)
{
    char p[PATH_MAX];
    pathf(p, sizeof(p), "%s/%s", rel);
    if (symlink(target, p) != 0)
        perror("symlink");
}

/* What netserver.py sends for an instance id. */
static unsigned char *expected_content(const char *id, size_t size)
{
    unsigned h = 0;
    for (const char *p = id; *p; p++)
        h += (unsigned char)*p;
    h %= 251;
    unsigned char *b = malloc(size ? size : 1);
    for (size_t i = 0; i < size; i++)
        b[i] = (unsigned char)((i + h) % 251);
    return b;
}

/* 1 when the file under g_tmp holds exactly what the server sends for id. */
static int file_matches(const char *rel, const char *id, size_t size)
{
    char p[PATH_MAX];
    pathf(p, sizeof(p), "%s/%s", rel);
    FILE *f = fopen(p, "rb");
    if (!f)
        return 0;
    unsigned char *want = expected_content(id, size);
    unsigned char *got = malloc(size + 1);
    size_t n = fread(got, 1, size + 1, f);
    fclose(f);
    int ok = n == size && memcmp(want, got, size) == 0;
    free(want);
    free(got);
    return ok;
}

static int count_entries(const char *rel)
{
    char p[PATH_MAX];
    pathf(p, sizeof(p), "%s/%s", rel);
    int fd = open(p, O_RDONLY | O_DIRECTORY);
    if (fd < 0)
        return -1;
    DIR *d = fdopendir(fd);
    int n = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL)
        if (strcmp(de->d_name, ".") && strcmp(de->d_name, ".."))
            n++;
    closedir(d);
    return n;
}

static long stats_field(ar_http *h, const char *field)
{
    ar_buf b;
    char err[256];
    long v = -1;
    if (ar_http_get(h, "/stats", &b, err, sizeof(err)) == AR_OK && b.data) {
        char key[64];
        snprintf(key, sizeof(key), "\"%s\": ", field);
        const char *p = strstr(b.data, key);
        if (p)
            v = atol(p + strlen(key));
    }
    ar_buf_free(&b);
    return v;
}

/* The "conn" number in an /echo answer. */
static long echo_conn(const ar_buf *b)
{
    const char *p = b->data ? strstr(b->data, "\"conn\": ") : NULL;
    return p ? atol(p + 8) : -1;
}

/* ---- folder helpers ---------------------------------------------------------- */

static void test_mkdirs(void)
{
    char err[512], root[PATH_MAX];
    int fd = -1;

    snprintf(root, sizeof(root), "%s/mk", g_tmp);
    mkdir(root, 0755);
    CHECK_INT(ar_mkdirs_at(root, "a/b/c", &fd, err, sizeof(err)), AR_OK);
    CHECK(fd >= 0, "mkdirs returns an fd");
    if (fd >= 0) {
        CHECK(mkdirat(fd, "d", 0755) == 0, "the fd is the last folder");
        close(fd);
    }
    CHECK(is_dir("mk/a/b/c/d"), "a/b/c/d created through the fd");
    CHECK_INT(ar_mkdirs_at(root, "a/b/c", NULL, err, sizeof(err)), AR_OK);  /* exists: fine */

    const char *bad[] = { "", ".", "..", "a/../b", "a/./b", "/abs", "a//b", "a/", "../up" };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        fd = 123;
        int rc = ar_mkdirs_at(root, bad[i], &fd, err, sizeof(err));
        CHECK(rc == AR_EIO, "mkdirs refuses '%s' (rc %d)", bad[i], rc);
        CHECK(fd == -1, "no fd for '%s'", bad[i]);
    }
    CHECK(!exists("b") && !exists("up"), "nothing created outside by refused paths");

    /* a symlink anywhere on the way is refused, its target untouched */
    mkdir_rel("outside");
    symlink_rel("../outside", "mk/link");
    int rc = ar_mkdirs_at(root, "link/x", NULL, err, sizeof(err));
    CHECK_INT(rc, AR_EIO);
    CHECK(strstr(err, "symlink") && strstr(err, "mk/link"), "message names the link: %s", err);
    CHECK(!exists("outside/x"), "nothing created through the symlink");
    rc = ar_mkdirs_at(root, "a/link2/x", NULL, err, sizeof(err));
    CHECK_INT(rc, AR_OK);
    symlink_rel("../../outside", "mk/a/evil");
    CHECK_INT(ar_mkdirs_at(root, "a/evil", NULL, err, sizeof(err)), AR_EIO);
    write_rel("mk/file", "x");
    rc = ar_mkdirs_at(root, "file/x", NULL, err, sizeof(err));
    CHECK_INT(rc, AR_EIO);
    CHECK(strstr(err, "mk/file") != NULL, "message names the file in the way: %s", err);
    rc = ar_mkdirs_at("/nonexistent-ar-root", "a", NULL, err, sizeof(err));
    CHECK_INT(rc, AR_EIO);
    CHECK(strstr(err, "/nonexistent-ar-root") && strstr(err, strerror(ENOENT)),
          "missing root named with errno text: %s", err);
}

static void test_remove_tree(void)
{
    char err[512], root[PATH_MAX];

    snprintf(root, sizeof(root), "%s/rm", g_tmp);
    mkdir(root, 0755);
    mkdir_rel("rm/t");
    mkdir_rel("rm/t/s1");
    mkdir_rel("rm/t/s1/deep");
    mkdir_rel("rm/t/empty");
    write_rel("rm/t/s1/f1", "1");
    write_rel("rm/t/s1/deep/f2", "2");
    write_rel("rm/t/f3", "3");
    mkdir_rel("victim");
    write_rel("victim/keep", "keep");
    symlink_rel("../../victim", "rm/t/link");
    symlink_rel("/nonexistent/dangling", "rm/t/s1/dangling");
    for (int i = 0; i < 300; i++) {  /* a folder bigger than one readdir batch */
        char rel[64];
        snprintf(rel, sizeof(rel), "rm/t/s1/many-%03d", i);
        write_rel(rel, "m");
    }

    CHECK_INT(ar_remove_tree(root, "t", err, sizeof(err)), AR_OK);
    CHECK(!exists("rm/t"), "tree removed");
    CHECK(exists("victim/keep"), "symlink target untouched");
    CHECK_INT(ar_remove_tree(root, "t", err, sizeof(err)), AR_OK);        /* absent */
    CHECK_INT(ar_remove_tree(root, "no/such/path", err, sizeof(err)), AR_OK);
    CHECK_INT(ar_remove_tree(root, "..", err, sizeof(err)), AR_EIO);
    CHECK_INT(ar_remove_tree(root, "", err, sizeof(err)), AR_EIO);
    CHECK(exists("rm"), "root kept");

    /* a symlinked parent is not followed */
    symlink_rel("../victim", "rm/plink");
    CHECK_INT(ar_remove_tree(root, "plink/keep", err, sizeof(err)), AR_EIO);
    CHECK(exists("victim/keep"), "file behind a symlinked parent kept");
    /* a symlink itself is removed as a link */
    CHECK_INT(ar_remove_tree(root, "plink", err, sizeof(err)), AR_OK);
    CHECK(!exists("rm/plink") && exists("victim/keep"), "link removed, target kept");
    write_rel("rm/single", "x");
    CHECK_INT(ar_remove_tree(root, "single", err, sizeof(err)), AR_OK);
    CHECK(!exists("rm/single"), "plain file removed");
}

static void test_clean_working(void)
{
    char err[512], root[PATH_MAX];
    int removed = -1;

    snprintf(root, sizeof(root), "%s/cw", g_tmp);
    mkdir(root, 0755);
    mkdir_rel("cw/r1");
    mkdir_rel("cw/r1/s1.WORKING");
    mkdir_rel("cw/r1/s1.WORKING/SE1");
    write_rel("cw/r1/s1.WORKING/SE1/a.dcm", "a");
    mkdir_rel("cw/r1/s2");
    mkdir_rel("cw/r1/s2/SE1");
    write_rel("cw/r1/s2/SE1/b.dcm", "b");
    mkdir_rel("cw/r2");
    mkdir_rel("cw/r2/2020");
    mkdir_rel("cw/r2/2020/s3.WORKING");
    write_rel("cw/r2/WORKING", "not a suffix match on a file");
    write_rel("cw/r2/f.WORKING", "a file, not a folder");
    mkdir_rel("cw/.WORKING");  /* the bare suffix is not a *.WORKING name */
    mkdir_rel("cwvictim");
    mkdir_rel("cwvictim/x.WORKING");
    symlink_rel("../cwvictim", "cw/r2/link");
    symlink_rel("../cwvictim/x.WORKING", "cw/r2/l.WORKING");

    CHECK_INT(ar_export_clean_working(root, &removed, err, sizeof(err)), AR_OK);
    CHECK_INT(removed, 2);
    CHECK(!exists("cw/r1/s1.WORKING") && !exists("cw/r2/2020/s3.WORKING"), "WORKING removed");
    CHECK(exists("cw/r1/s2/SE1/b.dcm"), "finished export kept");
    CHECK(exists("cw/r2/f.WORKING") && exists("cw/r2/WORKING"), "files kept");
    CHECK(is_dir("cw/.WORKING"), "bare suffix kept");
    CHECK(is_dir("cwvictim/x.WORKING"), "nothing removed through symlinks");
    CHECK(exists("cw/r2/l.WORKING"), "a symlink named *.WORKING is left alone");
    CHECK_INT(ar_export_clean_working(root, &removed, err, sizeof(err)), AR_OK);
    CHECK_INT(removed, 0);
    CHECK(ar_export_clean_working("/nonexistent-ar-root", &removed, err, sizeof(err)) == AR_EIO,
          "missing root is an error");
}

/* ---- HTTP client ------------------------------------------------------------- */

static void test_http(const server *plain, const server *auth)
{
    char err[512], base[128];
    ar_http *h = NULL;
    ar_buf b;
    int rc;

    ar_http_opts o = { .base_url = auth->base, .username = "orthanc", .password = PASSWORD,
                       .timeout_s = 10 };
    CHECK_INT(ar_http_new(&o, &h, err, sizeof(err)), AR_OK);
    if (!h)
        return;
    rc = ar_http_get(h, "/echo", &b, err, sizeof(err));
    CHECK_INT(rc, AR_OK);
    CHECK_INT(b.status, 200);
    CHECK(b.data && strstr(b.data, "\"authorization\": \"Basic "), "basic auth sent");
    CHECK(b.data && !strstr(b.data, "accept-encoding"), "no Accept-Encoding: %s",
          b.data ? b.data : "");
    ar_buf_free(&b);

    rc = ar_http_post(h, "/echo", "{\"a\":1}", 7, NULL, &b, err, sizeof(err));
    CHECK_INT(rc, AR_OK);
    CHECK(b.data && strstr(b.data, "\"method\": \"POST\"") &&
          strstr(b.data, "\"body\": \"{\\\"a\\\":1}\"") &&
          strstr(b.data, "\"content-type\": \"application/json\""), "POST body and type: %s",
          b.data ? b.data : "");
    CHECK(b.data && !strstr(b.data, "\"expect\""), "no Expect header");
    ar_buf_free(&b);
    rc = ar_http_post(h, "/echo", NULL, 0, "text/plain", &b, err, sizeof(err));
    CHECK_INT(rc, AR_OK);
    CHECK(b.data && strstr(b.data, "text/plain") && strstr(b.data, "\"body\": \"\""),
          "empty POST with a content type");
    ar_buf_free(&b);
    rc = ar_http_delete(h, "/echo", &b, err, sizeof(err));
    CHECK_INT(rc, AR_OK);
    CHECK(b.data && strstr(b.data, "\"method\": \"DELETE\""), "DELETE sent");
    ar_buf_free(&b);
    rc = ar_http_get(h, "echo", &b, err, sizeof(err));  /* path without leading '/' */
    CHECK_INT(rc, AR_OK);
    CHECK(b.data && strstr(b.data, "\"method\": \"GET\""), "GET after DELETE is a GET");
    ar_buf_free(&b);

    struct { const char *path; int rc; long status; } cases[] = {
        { "/status/404", AR_ENOTFOUND, 404 }, { "/status/403", AR_EHTTP, 403 },
        { "/status/400", AR_EHTTP, 400 },     { "/status/500", AR_ENET, 500 },
        { "/status/503", AR_ENET, 503 },      { "/status/204", AR_OK, 204 },
        { "/status/201", AR_OK, 201 },
        { "/status/302", AR_EHTTP, 302 },
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        err[0] = '\0';
        rc = ar_http_get(h, cases[i].path, &b, err, sizeof(err));
        CHECK(rc == cases[i].rc, "GET %s -> %d (got %d: %s)", cases[i].path, cases[i].rc, rc,
              err);
        CHECK_INT(b.status, cases[i].status);
        if (cases[i].rc) {
            snprintf(base, sizeof(base), "%s%s", auth->base, cases[i].path);
            CHECK(strstr(err, base) != NULL, "message names the URL: %s", err);
            CHECK(strstr(err, PASSWORD) == NULL, "no password in: %s", err);
        }
        if (cases[i].status == 404)
            CHECK(b.data && strstr(b.data, "404"), "error body kept");
        ar_buf_free(&b);
    }
    ar_http_free(h);
    h = NULL;

    /* wrong password: 401 is AR_EHTTP, the message has no password */
    o.password = "wrong-" PASSWORD;
    CHECK_INT(ar_http_new(&o, &h, err, sizeof(err)), AR_OK);
    rc = ar_http_get(h, "/echo", &b, err, sizeof(err));
    CHECK_INT(rc, AR_EHTTP);
    CHECK_INT(b.status, 401);
    CHECK(!strstr(err, PASSWORD), "no password in: %s", err);
    ar_buf_free(&b);
    ar_http_free(h);
    h = NULL;

    /* credentials given inside the URL are moved out of it */
    snprintf(base, sizeof(base), "http://orthanc:%s@127.0.0.1:%d/", PASSWORD, auth->port);
    ar_http_opts ou = { .base_url = base };
    CHECK_INT(ar_http_new(&ou, &h, err, sizeof(err)), AR_OK);
    if (h) {
        CHECK_STR(ar_http_base(h), auth->base);
        CHECK_STR(ar_http_username(h), "orthanc");
        rc = ar_http_get(h, "/status/500", &b, err, sizeof(err));
        CHECK_INT(rc, AR_ENET);
        CHECK(!strstr(err, PASSWORD) && strstr(err, auth->base), "URL without creds: %s", err);
        ar_buf_free(&b);
        char url[256];
        CHECK_STR(ar_http_url(h, "/changes?since=3", url, sizeof(url)),
                  strcat(strcpy(base, auth->base), "/changes?since=3"));
        ar_http_free(h);
        h = NULL;
    }

    /* bad configuration */
    ar_http_opts obad = { .base_url = "ftp://127.0.0.1:1" };
    CHECK_INT(ar_http_new(&obad, &h, err, sizeof(err)), AR_ECONFIG);
    CHECK(h == NULL, "no client on error");
    ar_http_opts oempty = { .base_url = "" };
    CHECK_INT(ar_http_new(&oempty, &h, err, sizeof(err)), AR_ECONFIG);

    /* nothing listening: AR_ENET naming the URL */
    server dead;
    int port_closed = 0;
    if (server_start(&dead, NULL, NULL) == 0) {
        port_closed = dead.port;
        server_stop(&dead);
    }
    if (port_closed) {
        snprintf(base, sizeof(base), "http://127.0.0.1:%d", port_closed);
        ar_http_opts od = { .base_url = base, .username = "u", .password = PASSWORD,
                            .connect_timeout_s = 2 };
        CHECK_INT(ar_http_new(&od, &h, err, sizeof(err)), AR_OK);
        rc = ar_http_get(h, "/system", &b, err, sizeof(err));
        CHECK_INT(rc, AR_ENET);
        CHECK_INT(b.status, 0);
        CHECK(strstr(err, base) && !strstr(err, PASSWORD), "refused named: %s", err);
        ar_buf_free(&b);
        ar_http_free(h);
        h = NULL;
    }

    /* keep-alive: the server closes idle connections (like Orthanc after
     * 1 s); the next request must reconnect by itself */
    ar_http_opts op = { .base_url = plain->base, .timeout_s = 10 };
    ar_http *h2 = NULL, *watcher = NULL;
    CHECK_INT(ar_http_new(&op, &h2, err, sizeof(err)), AR_OK);
    CHECK_INT(ar_http_new(&op, &watcher, err, sizeof(err)), AR_OK);
    if (h2 && watcher) {
        long first_conn = -1, same = 0;
        for (int i = 0; i < 5; i++) {
            rc = ar_http_get(h2, "/echo", &b, err, sizeof(err));
            CHECK(rc == AR_OK, "burst request %d: %s", i, err);
            long conn = echo_conn(&b);
            if (i == 0)
                first_conn = conn;
            same += conn == first_conn && conn > 0;
            ar_buf_free(&b);
        }
        CHECK(same == 5, "5 requests over one kept-alive connection (%ld)", same);
        long closed0 = stats_field(watcher, "closed");
        /* wait for the server to drop the idle connection (it idles out
         * after 0.3 s; the watcher's own connection stays busy) */
        double deadline = now_s() + 10;
        long closed = closed0;
        while (now_s() < deadline && closed == closed0) {
            struct timespec ts = { 0, 50 * 1000000L };
            nanosleep(&ts, NULL);
            closed = stats_field(watcher, "closed");
        }
        CHECK(closed > closed0, "server closed the idle connection");
        rc = ar_http_get(h2, "/echo", &b, err, sizeof(err));
        CHECK(rc == AR_OK, "request after the server closed the connection: %s", err);
        CHECK(echo_conn(&b) > first_conn, "on a new connection");
        ar_buf_free(&b);
    }
    ar_http_free(h2);
    ar_http_free(watcher);
}

/* ---- exports -------------------------------------------------------------------- */

typedef struct progress_seen {
    size_t calls, last_done, total;
    long long last_bytes;
} progress_seen;

static void on_progress(void *ud, size_t done, size_t total, long long bytes)
{
    progress_seen *p = ud;
    p->calls++;
    p->last_done = done;
    p->total = total;
    p->last_bytes = bytes;
}

#define MAXF 64
typedef struct study {
    char ids[MAXF][64];
    char rels[MAXF][128];
    size_t sizes[MAXF];
    ar_export_file files[MAXF];
    size_t n;
} study;

static void study_add(study *s, const char *id, const char *rel, size_t size, long long expect)
{
    size_t i = s->n++;
    snprintf(s->ids[i], sizeof(s->ids[i]), "%s", id);
    snprintf(s->rels[i], sizeof(s->rels[i]), "%s", rel);
    s->sizes[i] = size;
    s->files[i].instance_id = s->ids[i];
    s->files[i].rel_path = s->rels[i];
    s->files[i].size = expect;
}

/* n files "ok-<size>-<tag><i>" spread over 3 series folders. */
static void study_make(study *s, size_t n, const char *tag, size_t size_base)
{
    memset(s, 0, sizeof(*s));
    for (size_t i = 0; i < n; i++) {
        char id[64], rel[128];
        size_t size = size_base + i * 977;
        snprintf(id, sizeof(id), "ok-%zu-%s%zu", size, tag, i);
        snprintf(rel, sizeof(rel), "SE%zu-20200101-1.2.%zu/1.2.3.%zu.dcm", i % 3 + 1, i % 3,
                 i);
        study_add(s, id, rel, size, (long long)size);
    }
}

static int study_check(const study *s, const char *final_rel)
{
    int ok = 1;
    for (size_t i = 0; i < s->n; i++) {
        char rel[512];
        snprintf(rel, sizeof(rel), "%s/%s", final_rel, s->rels[i]);
        if (!file_matches(rel, s->ids[i], s->sizes[i])) {
            fprintf(stderr, "# mismatch: %s\n", rel);
            ok = 0;
        }
    }
    return ok;
}

static int no_working(const char *parent_rel)
{
    char p[PATH_MAX];
    pathf(p, sizeof(p), "%s/%s", parent_rel);
    DIR *d = opendir(p);
    if (!d)
        return 1;
    int ok = 1;
    struct dirent *de;
    while ((de = readdir(d)) != NULL)
        if (strstr(de->d_name, ".WORKING"))
            ok = 0;
    closedir(d);
    return ok;
}

static volatile sig_atomic_t g_stop;
static void on_alarm(int sig)
{
    (void)sig;
    g_stop = 1;
}

static void test_export(const server *srv, const server *plain)
{
    char err[1024], root[PATH_MAX];
    ar_http *h = NULL, *watcher = NULL;
    ar_export_result res;
    study s, s2, bad;
    progress_seen ps = { 0, 0, 0, 0 };
    int rc;

    snprintf(root, sizeof(root), "%s/storage", g_tmp);
    mkdir(root, 0755);
    ar_http_opts ho = { .base_url = srv->base, .username = "orthanc", .password = PASSWORD,
                        .timeout_s = 10 };
    CHECK_INT(ar_http_new(&ho, &h, err, sizeof(err)), AR_OK);
    ar_http_opts wo = { .base_url = srv->base, .timeout_s = 10 };
    CHECK_INT(ar_http_new(&wo, &watcher, err, sizeof(err)), AR_OK);
    if (!h || !watcher)
        return;

    ar_export_opts eo = { .max_connections = 4, .fsync = 1, .uid = (long)getuid(),
                          .gid = (long)getgid(), .stop = NULL, .progress = on_progress,
                          .progress_ud = &ps };

    /* a fresh export, 40 files in 3 series folders, one empty file */
    study_make(&s, 40, "a", 1000);
    study_add(&s, "ok-0-empty", "SE9-x-1.2.9/empty.dcm", 0, 0);
    long c0 = stats_field(watcher, "connections");
    rc = ar_export_download(h, root, "rule1/P1-DOE-EX1", s.files, s.n, &eo, &res, err,
                            sizeof(err));
    long c1 = stats_field(watcher, "connections");
    CHECK(rc == AR_OK, "export ok: %s", err);
    CHECK_INT(res.files, s.n);
    CHECK_INT(res.requests, s.n);
    CHECK_INT(res.replaced, 0);
    long long total = 0;
    for (size_t i = 0; i < s.n; i++)
        total += (long long)s.sizes[i];
    CHECK_INT(res.bytes, total);
    CHECK(study_check(&s, "storage/rule1/P1-DOE-EX1"), "files byte-exact");
    CHECK(no_working("storage/rule1"), "no .WORKING after success");
    CHECK_INT(count_entries("storage/rule1/P1-DOE-EX1"), 4);
    CHECK(c1 - c0 >= 1 && c1 - c0 <= 4, "at most max_connections connections (%ld)", c1 - c0);
    CHECK_INT(ps.calls, s.n);
    CHECK_INT(ps.last_done, s.n);
    CHECK_INT(ps.total, s.n);
    CHECK_INT(ps.last_bytes, total);

    /* a single connection carries all the files */
    eo.max_connections = 1;
    eo.uid = eo.gid = -1;
    eo.fsync = 0;
    c0 = stats_field(watcher, "connections");
    rc = ar_export_download(h, root, "rule1/P1-DOE-EX1-seq", s.files, s.n, &eo, &res, err,
                            sizeof(err));
    c1 = stats_field(watcher, "connections");
    CHECK(rc == AR_OK, "sequential export ok: %s", err);
    CHECK_INT(c1 - c0, 1);
    CHECK(study_check(&s, "storage/rule1/P1-DOE-EX1-seq"), "sequential files byte-exact");
    eo.max_connections = 4;

    /* a stale .WORKING from a crash is replaced */
    mkdir_rel("storage/rule1/P2.WORKING");
    write_rel("storage/rule1/P2.WORKING/junk", "junk");
    study_make(&s2, 5, "p2", 300);
    rc = ar_export_download(h, root, "rule1/P2", s2.files, s2.n, &eo, &res, err, sizeof(err));
    CHECK(rc == AR_OK, "export over a stale .WORKING: %s", err);
    CHECK(!exists("storage/rule1/P2/junk") && study_check(&s2, "storage/rule1/P2"),
          "stale content gone");
    CHECK(no_working("storage/rule1"), "no .WORKING left");

    /* a new stable state replaces the old export atomically */
    study_make(&s2, 7, "b", 5000);
    rc = ar_export_download(h, root, "rule1/P1-DOE-EX1", s2.files, s2.n, &eo, &res, err,
                            sizeof(err));
    CHECK(rc == AR_OK, "re-export ok: %s", err);
    CHECK_INT(res.replaced, 1);
    CHECK(study_check(&s2, "storage/rule1/P1-DOE-EX1"), "new files in place");
    CHECK(!exists("storage/rule1/P1-DOE-EX1/SE1-20200101-1.2.0/1.2.3.9.dcm"),
          "old-only files gone");
    CHECK(no_working("storage/rule1"), "old tree removed");

    /* failures: the previous export stays, nothing .WORKING stays */
    struct {
        const char *what, *id;
        size_t size;
        long long expect;
        int rc;
        const char *msg1, *msg2;
    } fails[] = {
        { "truncated", "short-4000-x", 4000, 4000, AR_ESIZE, "4000", "4100" },
        { "size mismatch", "ok-3000-y", 3000, 2999, AR_ESIZE, "3000", "2999" },
        { "server error", "err500-z", 0, -1, AR_ENET, "HTTP 500", NULL },
        { "deleted instance", "missing-w", 0, -1, AR_ENOTFOUND, "HTTP 404", NULL },
    };
    for (size_t f = 0; f < sizeof(fails) / sizeof(fails[0]); f++) {
        study_make(&bad, 12, "c", 2000);
        snprintf(bad.ids[6], sizeof(bad.ids[6]), "%s", fails[f].id);
        bad.files[6].size = fails[f].expect;
        err[0] = '\0';
        rc = ar_export_download(h, root, "rule1/P1-DOE-EX1", bad.files, bad.n, &eo, &res, err,
                                sizeof(err));
        CHECK(rc == fails[f].rc, "%s: rc %d want %d (%s)", fails[f].what, rc, fails[f].rc, err);
        char url[256];
        snprintf(url, sizeof(url), "%s/instances/%s/file", srv->base, fails[f].id);
        CHECK(strstr(err, url) != NULL, "%s: message names the URL: %s", fails[f].what, err);
        CHECK(strstr(err, fails[f].msg1) && (!fails[f].msg2 || strstr(err, fails[f].msg2)),
              "%s: message has the details: %s", fails[f].what, err);
        CHECK(!strstr(err, PASSWORD), "%s: no password", fails[f].what);
        CHECK(no_working("storage/rule1"), "%s: no .WORKING left", fails[f].what);
        CHECK(study_check(&s2, "storage/rule1/P1-DOE-EX1"), "%s: old export untouched",
              fails[f].what);
        CHECK_INT(count_entries("storage/rule1/P1-DOE-EX1"), 3);
    }
    /* a failing first export leaves nothing at all */
    rc = ar_export_download(h, root, "rule1/NEW", bad.files, bad.n, &eo, &res, err, sizeof(err));
    CHECK_INT(rc, AR_ENOTFOUND);
    CHECK(!exists("storage/rule1/NEW") && no_working("storage/rule1"), "nothing left");

    /* two files with one name: the second create fails, nothing left */
    study_make(&bad, 4, "d", 100);
    snprintf(bad.rels[3], sizeof(bad.rels[3]), "%s", bad.rels[0]);
    rc = ar_export_download(h, root, "rule1/DUP", bad.files, bad.n, &eo, &res, err, sizeof(err));
    CHECK_INT(rc, AR_EIO);
    CHECK(strstr(err, "DUP.WORKING/") && strstr(err, strerror(EEXIST)), "dup named: %s", err);
    CHECK(!exists("storage/rule1/DUP") && no_working("storage/rule1"), "dup: nothing left");

    /* bad paths and ids are refused before anything is written */
    study_make(&bad, 2, "e", 100);
    snprintf(bad.rels[1], sizeof(bad.rels[1]), "../escape.dcm");
    CHECK_INT(ar_export_download(h, root, "rule1/ESC", bad.files, bad.n, &eo, &res, err,
                                 sizeof(err)), AR_EIO);
    CHECK(!exists("storage/rule1/escape.dcm") && !exists("storage/rule1/ESC"), "no escape");
    CHECK(no_working("storage/rule1"), "no .WORKING after a refused path");
    study_make(&bad, 2, "e", 100);
    CHECK_INT(ar_export_download(h, root, "rule1/../x", bad.files, bad.n, &eo, &res, err,
                                 sizeof(err)), AR_EIO);
    snprintf(bad.ids[0], sizeof(bad.ids[0]), "../../system");
    CHECK(ar_export_download(h, root, "rule1/ID", bad.files, bad.n, &eo, &res, err,
                             sizeof(err)) != AR_OK, "bad instance id refused");
    CHECK(!exists("storage/rule1/ID"), "nothing for a bad id");
    mkdir_rel("elsewhere");
    symlink_rel("../elsewhere", "storage/linked");
    study_make(&bad, 2, "e", 100);
    rc = ar_export_download(h, root, "linked/S", bad.files, bad.n, &eo, &res, err, sizeof(err));
    CHECK_INT(rc, AR_EIO);
    CHECK(strstr(err, "symlink") != NULL, "symlinked rule folder refused: %s", err);
    CHECK_INT(count_entries("elsewhere"), 0);

    /* stop flag: a stalled transfer is abandoned quickly */
    study_make(&bad, 3, "f", 100);
    snprintf(bad.ids[1], sizeof(bad.ids[1]), "slow-100000-g");
    bad.files[1].size = -1;
    g_stop = 0;
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_alarm;
    sigaction(SIGALRM, &sa, NULL);
    struct itimerval it = { { 0, 0 }, { 0, 400 * 1000 } };
    eo.stop = &g_stop;
    double t0 = now_s();
    setitimer(ITIMER_REAL, &it, NULL);
    rc = ar_export_download(h, root, "rule1/STOP", bad.files, bad.n, &eo, &res, err,
                            sizeof(err));
    double dt = now_s() - t0;
    CHECK_INT(rc, AR_ESTOP);
    CHECK(dt < 3.0, "stopped in %.2f s", dt);
    CHECK(!exists("storage/rule1/STOP") && no_working("storage/rule1"), "stop: nothing left");
    eo.stop = NULL;

    /* low-speed timeout on a stalled transfer (transfer level) */
    {
        int dfd = open(root, O_RDONLY | O_DIRECTORY);
        ar_transfer_item items[1] = { { "/instances/slow-5000-h/file", "slow.part", -1 } };
        ar_transfer_opts to = { .max_connections = 2 };
        ar_transfer_result tr;
        ar_http *hs = NULL;
        ar_http_opts so = { .base_url = ar_http_base(h), .username = ar_http_username(h),
                            .password = ar_http_password(h), .low_speed_limit = 100,
                            .low_speed_time = 1 };
        CHECK_INT(ar_http_new(&so, &hs, err, sizeof(err)), AR_OK);
        t0 = now_s();
        rc = ar_transfer_run(hs, dfd, items, 1, &to, &tr, err, sizeof(err));
        dt = now_s() - t0;
        CHECK_INT(rc, AR_ENET);
        CHECK(dt < 5.0, "low-speed timeout after %.2f s", dt);
        CHECK(strstr(err, "/instances/slow-5000-h/file") != NULL, "named: %s", err);
        CHECK_INT(tr.requests, 1);
        CHECK_INT(tr.files, 0);
        unlinkat(dfd, "slow.part", 0);
        /* no items: nothing to do */
        CHECK_INT(ar_transfer_run(hs, dfd, items, 0, &to, &tr, err, sizeof(err)), AR_OK);
        ar_http_free(hs);
        close(dfd);
    }

    /* a server that idles connections out between two exports */
    ar_http *hp = NULL;
    ar_http_opts po = { .base_url = plain->base };
    if (ar_http_new(&po, &hp, err, sizeof(err)) == AR_OK) {
        study_make(&bad, 6, "i", 700);
        rc = ar_export_download(hp, root, "rule2/A", bad.files, bad.n, &eo, &res, err,
                                sizeof(err));
        CHECK(rc == AR_OK, "export on the idling server: %s", err);
        CHECK(study_check(&bad, "storage/rule2/A"), "rule2/A byte-exact");
        ar_http_free(hp);
    }

    ar_http_free(h);
    ar_http_free(watcher);
}

/* ---- transfers with fsync ------------------------------------------------------ */

/* Open descriptors of this process. */
static int count_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    if (!d)
        return -1;
    int n = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL)
        if (de->d_name[0] != '.')
            n++;
    closedir(d);
    return n - 1;  /* the one opendir holds */
}

#define FSYNC_N 300  /* several times the transfer's fsync queue */
typedef struct many {
    char ids[FSYNC_N][48];
    char urls[FSYNC_N][80];
    char rels[FSYNC_N][48];
    size_t sizes[FSYNC_N];
    ar_transfer_item items[FSYNC_N];
} many;

/* FSYNC_N small files "ok-<size>-<tag><i>" in two folders a/ and b/. */
static void many_make(many *m, const char *tag)
{
    for (size_t i = 0; i < FSYNC_N; i++) {
        m->sizes[i] = 1 + (i * 37) % 3000;
        snprintf(m->ids[i], sizeof(m->ids[i]), "ok-%zu-%s%zu", m->sizes[i], tag, i);
        snprintf(m->urls[i], sizeof(m->urls[i]), "/instances/%s/file", m->ids[i]);
        snprintf(m->rels[i], sizeof(m->rels[i]), "%s/%zu.dcm", i % 2 ? "a" : "b", i);
        m->items[i].url_path = m->urls[i];
        m->items[i].rel_path = m->rels[i];
        m->items[i].expected_size = (long long)m->sizes[i];
    }
}

static void stop_at_100(void *ud, size_t done, size_t total, long long bytes)
{
    (void)total;
    (void)bytes;
    if (done == 100)
        *(volatile sig_atomic_t *)ud = 1;
}

/* A fresh folder g_tmp/<rel> with a/ and b/ inside; its fd, or -1. */
static int fresh_dir(const char *rel)
{
    char sub[128];
    mkdir_rel(rel);
    snprintf(sub, sizeof(sub), "%s/a", rel);
    mkdir_rel(sub);
    snprintf(sub, sizeof(sub), "%s/b", rel);
    mkdir_rel(sub);
    char p[PATH_MAX];
    pathf(p, sizeof(p), "%s/%s", rel);
    return open(p, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
}

static void test_transfer_fsync(const server *srv)
{
    char err[1024];
    ar_http *h = NULL;
    ar_transfer_result tr;
    many *m = calloc(1, sizeof(*m));
    ar_http_opts ho = { .base_url = srv->base, .username = "orthanc", .password = PASSWORD,
                        .timeout_s = 10 };
    if (!m || ar_http_new(&ho, &h, err, sizeof(err)) != AR_OK) {
        CHECK(0, "fsync test setup: %s", err);
        free(m);
        return;
    }
    ar_transfer_opts to = { .max_connections = 4, .fsync = 1 };

    /* success, 4 connections and 1: every file complete, nothing left open */
    for (int conns = 4; conns >= 1; conns -= 3) {
        char rel[32];
        snprintf(rel, sizeof(rel), "fs-ok%d", conns);
        many_make(m, conns == 4 ? "f" : "g");
        to.max_connections = conns;
        int dfd = fresh_dir(rel);
        int fds0 = count_fds();
        int rc = ar_transfer_run(h, dfd, m->items, FSYNC_N, &to, &tr, err, sizeof(err));
        int fds1 = count_fds();
        CHECK(rc == AR_OK, "fsync run, %d connection(s): %s", conns, err);
        CHECK_INT(tr.files, FSYNC_N);
        CHECK_INT(fds1, fds0);
        int exact = 1;
        for (size_t i = 0; i < FSYNC_N; i++) {
            char path[128];
            snprintf(path, sizeof(path), "%s/%s", rel, m->rels[i]);
            if (!file_matches(path, m->ids[i], m->sizes[i])) {
                fprintf(stderr, "# mismatch: %s\n", path);
                exact = 0;
            }
        }
        CHECK(exact, "fsync run, %d connection(s): every file byte-exact", conns);
        close(dfd);
    }
    to.max_connections = 4;

    /* a failure late in the run: the error is the failed file's, and the
     * files queued for fsync are closed too */
    many_make(m, "h");
    snprintf(m->urls[250], sizeof(m->urls[250]), "/instances/missing-x/file");
    int dfd = fresh_dir("fs-fail");
    int fds0 = count_fds();
    int rc = ar_transfer_run(h, dfd, m->items, FSYNC_N, &to, &tr, err, sizeof(err));
    CHECK_INT(rc, AR_ENOTFOUND);
    CHECK(strstr(err, "/instances/missing-x/file") != NULL, "fsync run failure named: %s", err);
    CHECK_INT(count_fds(), fds0);
    close(dfd);

    /* stopped with files in the queue: all closed */
    volatile sig_atomic_t stop = 0;
    many_make(m, "i");
    to.stop = &stop;
    to.progress = stop_at_100;
    to.progress_ud = (void *)&stop;
    dfd = fresh_dir("fs-stop");
    fds0 = count_fds();
    rc = ar_transfer_run(h, dfd, m->items, FSYNC_N, &to, &tr, err, sizeof(err));
    CHECK_INT(rc, AR_ESTOP);
    CHECK(tr.files >= 100 && tr.files < FSYNC_N, "stopped after %zu files", tr.files);
    CHECK_INT(count_fds(), fds0);
    close(dfd);

    ar_http_free(h);
    free(m);
}

/* Write errors: a file size limit (works for root too) and, when not root,
 * a read-only storage folder.  The export runs in a child so the limit does
 * not hit the test process. */
static void test_export_write_errors(const server *srv)
{
    char root[PATH_MAX];
    snprintf(root, sizeof(root), "%s/limited", g_tmp);
    mkdir(root, 0755);

    int pfd[2];
    if (pipe(pfd) != 0)
        return;
    pid_t pid = fork();
    if (pid == 0) {
        close(pfd[0]);
        signal(SIGXFSZ, SIG_IGN);
        struct rlimit rl = { 4096, 4096 };
        setrlimit(RLIMIT_FSIZE, &rl);
        char err[1024] = "";
        ar_http *h = NULL;
        ar_http_opts ho = { .base_url = srv->base, .username = "orthanc",
                            .password = PASSWORD };
        int rc = ar_http_new(&ho, &h, err, sizeof(err));
        if (rc == AR_OK) {
            study s;
            study_make(&s, 4, "big", 100);  /* all under the limit */
            study_add(&s, "ok-20000-huge", "SE1-x-1/huge.dcm", 20000, 20000);
            ar_export_opts eo = { .max_connections = 2, .uid = -1, .gid = -1 };
            ar_export_result res;
            rc = ar_export_download(h, root, "r/S", s.files, s.n, &eo, &res, err, sizeof(err));
            ar_http_free(h);
        }
        char msg[1100];
        int len = snprintf(msg, sizeof(msg), "%d %s", rc, err);
        if (write(pfd[1], msg, (size_t)len) < 0)
            _exit(2);
        _exit(0);
    }
    close(pfd[1]);
    char buf[1200];
    size_t got = 0;
    ssize_t r;
    while ((r = read(pfd[0], buf + got, sizeof(buf) - 1 - got)) > 0)
        got += (size_t)r;
    buf[got] = '\0';
    close(pfd[0]);
    waitpid(pid, NULL, 0);
    int rc = atoi(buf);
    CHECK(rc == AR_EIO, "file size limit -> AR_EIO: %s", buf);
    CHECK(strstr(buf, "limited/r/S.WORKING/SE1-x-1/huge.dcm") != NULL, "path named: %s", buf);
    CHECK(strstr(buf, strerror(EFBIG)) != NULL, "errno text: %s", buf);
    CHECK(!exists("limited/r/S") && no_working("limited/r"), "size limit: nothing left");

    if (geteuid() == 0) {
        printf("# skip read-only storage check: root ignores permissions\n");
        return;
    }
    char err[1024];
    ar_http *h = NULL;
    ar_http_opts ho = { .base_url = srv->base, .username = "orthanc", .password = PASSWORD };
    if (ar_http_new(&ho, &h, err, sizeof(err)) != AR_OK)
        return;
    mkdir_rel("ro");
    mkdir_rel("ro/r");
    char rop[PATH_MAX];
    snprintf(rop, sizeof(rop), "%s/ro/r", g_tmp);
    chmod(rop, 0555);
    snprintf(root, sizeof(root), "%s/ro", g_tmp);
    study s;
    study_make(&s, 3, "ro", 100);
    ar_export_opts eo = { .max_connections = 2, .uid = -1, .gid = -1 };
    ar_export_result res;
    rc = ar_export_download(h, root, "r/S", s.files, s.n, &eo, &res, err, sizeof(err));
    CHECK_INT(rc, AR_EIO);
    CHECK(strstr(err, "ro/r/S.WORKING") && strstr(err, strerror(EACCES)),
          "read-only named: %s", err);
    chmod(rop, 0755);
    ar_http_free(h);
}

static int rm_rf_tmp(void)
{
    char err[512];
    char parent[PATH_MAX];
    snprintf(parent, sizeof(parent), "%s", g_tmp);
    char *slash = strrchr(parent, '/');
    if (!slash)
        return -1;
    *slash = '\0';
    return ar_remove_tree(parent, slash + 1, err, sizeof(err));
}

int main(void)
{
    const char *tmpdir = getenv("TMPDIR");
    snprintf(g_tmp, sizeof(g_tmp), "%s/ar-export-XXXXXX", tmpdir && *tmpdir ? tmpdir : "/tmp");
    if (!mkdtemp(g_tmp)) {
        perror("mkdtemp");
        return 1;
    }
    signal(SIGPIPE, SIG_IGN);

    test_mkdirs();
    test_remove_tree();
    test_clean_working();

    server auth, plain;
    int ok_auth = server_start(&auth, "--auth", "orthanc:" PASSWORD) == 0;
    int ok_plain = server_start(&plain, "--idle", "0.3") == 0;
    CHECK(ok_auth && ok_plain, "test HTTP servers started");
    if (ok_auth && ok_plain) {
        test_http(&plain, &auth);
        test_export(&auth, &plain);
        test_transfer_fsync(&auth);
        test_export_write_errors(&auth);
    }
    server_stop(&auth);
    server_stop(&plain);

    CHECK_INT(rm_rf_tmp(), AR_OK);
    return tap_done();
}
