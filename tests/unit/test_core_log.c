/* test_core_log.c - guards core/log.c: text and JSON lines on stderr, escaping,
 * level filter, UTC millisecond timestamps, long lines cut but well-formed,
 * and lines from concurrent processes never interleaved. */
#include "log.h"
#include "tap.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static char tmpl[] = "/tmp/ar-log-XXXXXX";
static int saved_stderr = -1;

/* Point stderr at a fresh temp file. */
static void capture_begin(void)
{
    int fd;
    strcpy(tmpl, "/tmp/ar-log-XXXXXX");
    fd = mkstemp(tmpl);
    if (fd < 0) {
        perror("mkstemp");
        exit(2);
    }
    if (saved_stderr < 0)
        saved_stderr = dup(STDERR_FILENO);
    fcntl(fd, F_SETFL, O_APPEND);
    dup2(fd, STDERR_FILENO);
    close(fd);
}

/* Restore stderr and return the captured text (malloc'ed). */
static char *capture_end(size_t *len)
{
    FILE *f;
    char *buf;
    long n;
    dup2(saved_stderr, STDERR_FILENO);
    f = fopen(tmpl, "rb");
    fseek(f, 0, SEEK_END);
    n = ftell(f);
    fseek(f, 0, SEEK_SET);
    buf = malloc((size_t)n + 1);
    if (!buf)
        abort();
    if (fread(buf, 1, (size_t)n, f) != (size_t)n)
        n = 0;
    buf[n] = '\0';
    fclose(f);
    unlink(tmpl);
    if (len)
        *len = (size_t)n;
    return buf;
}

static int count_lines(const char *s)
{
    int n = 0;
    for (; *s; s++)
        n += *s == '\n';
    return n;
}

/* Minimal check that a JSON string literal starting at *p is well formed. */
static int json_string_ok(const char **p)
{
    const char *s = *p;
    if (*s++ != '"')
        return 0;
    while (*s && *s != '"') {
        if ((unsigned char)*s < 0x20)
            return 0;
        if (*s == '\\') {
            s++;
            if (*s == 'u') {
                int i;
                for (i = 1; i <= 4; i++)
                    if (!strchr("0123456789abcdefABCDEF", s[i]) || !s[i])
                        return 0;
                s += 5;
                continue;
            }
            if (!*s || !strchr("\"\\/bfnrt", *s))
                return 0;
        }
        s++;
    }
    if (*s != '"')
        return 0;
    *p = s + 1;
    return 1;
}

/* Flat object of string / number / true values, as ar_log writes it. */
static int json_line_ok(const char *s)
{
    if (*s++ != '{')
        return 0;
    for (;;) {
        if (!json_string_ok(&s) || *s++ != ':')
            return 0;
        if (*s == '"') {
            if (!json_string_ok(&s))
                return 0;
        } else if (!strncmp(s, "true", 4)) {
            s += 4;
        } else {
            char *end;
            strtod(s, &end);
            if (end == s)
                return 0;
            s = end;
        }
        if (*s == ',') {
            s++;
            continue;
        }
        return s[0] == '}' && s[1] == '\n' && s[2] == '\0';
    }
}

static void test_text(void)
{
    ar_log_fields f = { "abc123", "my rule", "r/x y", 42, 1.5 };
    char *out;
    int ok;
    capture_begin();
    ar_log_setup(AR_LOG_INFO, 0);
    ar_log(AR_LOG_DEBUG, "hidden.event", NULL, "not shown");
    ar_log(AR_LOG_INFO, "export.done", &f, "exported %d files", 3);
    ar_log(AR_LOG_ERROR, "poll.error", NULL, "line1\nline2\t\"q\"");
    errno = EACCES;
    ar_log(AR_LOG_WARN, "w", NULL, "x");
    CHECK_INT(errno, EACCES);
    out = capture_end(NULL);
    CHECK(strstr(out, "hidden") == NULL, "debug filtered at info");
    CHECK_INT(count_lines(out), 3);
    ok = strstr(out, " INFO  export.done study=abc123 rule=\"my rule\" path=\"r/x y\" bytes=42 ms=1500 exported 3 files\n") != NULL;
    CHECK(ok, "text line with fields: %s", out);
    ok = strstr(out, " ERROR poll.error line1\\nline2\\t\"q\"\n") != NULL;
    CHECK(ok, "controls escaped: %s", out);
    /* 2026-11-28T15:00:00.123Z */
    CHECK(strlen(out) > 24 && out[4] == '-' && out[10] == 'T' && out[19] == '.' && out[23] == 'Z' && out[24] == ' ',
          "UTC millisecond time stamp: %.30s", out);
    free(out);
}

static void test_json(void)
{
    ar_log_fields f = { "st\"udy", "r\\ule", "p\x01\x1f/\xc3\xa9", -1, -1 };
    ar_log_fields g = { NULL, NULL, NULL, 7, 0.25 };
    char *out, *line2;
    int ok;
    capture_begin();
    ar_log_setup(AR_LOG_DEBUG, 1);
    ar_log(AR_LOG_DEBUG, "a.b", &f, "m\"s\\g\n");
    ar_log(AR_LOG_WARN, "c", &g, NULL);
    out = capture_end(NULL);
    CHECK_INT(count_lines(out), 2);
    CHECK(!strncmp(out, "{\"time\":\"", 9), "json starts with time");
    ok = strstr(out, "\"level\":\"debug\",\"event\":\"a.b\",\"study\":\"st\\\"udy\",\"rule\":\"r\\\\ule\","
                      "\"path\":\"p\\u0001\\u001f/\xc3\xa9\",\"msg\":\"m\\\"s\\\\g\\n\"}\n") != NULL;
    CHECK(ok, "json escaping: %s", out);
    line2 = strchr(out, '\n') + 1;
    CHECK(strstr(line2, "\"level\":\"warn\",\"event\":\"c\",\"bytes\":7,\"duration\":0.250}\n") != NULL,
          "json numbers, no msg: %s", line2);
    {
        char *nl = strchr(out, '\n');
        char first[4096];
        size_t n = (size_t)(nl - out) + 1;
        memcpy(first, out, n);
        first[n] = '\0';
        CHECK(json_line_ok(first), "first line is a JSON object");
        CHECK(json_line_ok(line2), "second line is a JSON object");
    }
    free(out);
}

static void test_long(void)
{
    static char big[100000];
    ar_log_fields f = { NULL, NULL, big, -1, -1 };
    size_t len;
    char *out;
    int json;
    memset(big, '\x02', sizeof big - 1);      /* each byte escapes to 6 */
    for (json = 0; json <= 1; json++) {
        capture_begin();
        ar_log_setup(AR_LOG_INFO, json);
        ar_log(AR_LOG_INFO, "long", &f, "%s", "tail message");
        ar_log(AR_LOG_INFO, "long", NULL, "%s", big);
        out = capture_end(&len);
        CHECK_INT(count_lines(out), 2);
        CHECK(len <= 2 * 16384, "long lines are bounded (%zu)", len);
        if (json) {
            char *nl = strchr(out, '\n');
            *nl = '\0';
            {
                char l1[20000];
                snprintf(l1, sizeof l1, "%s\n", out);
                CHECK(json_line_ok(l1), "cut JSON line 1 still well formed");
            }
            CHECK(json_line_ok(nl + 1), "cut JSON line 2 still well formed");
            CHECK(strstr(nl + 1, "\"truncated\":true") != NULL, "cut is marked");
        }
        free(out);
    }
}

static void test_concurrent(void)
{
    enum { PROCS = 4, LINES = 300 };
    int p, i, ok = 1;
    char *out, *s;
    static char payload[3000];
    memset(payload, 'x', sizeof payload - 1);
    capture_begin();
    ar_log_setup(AR_LOG_INFO, 1);
    for (p = 0; p < PROCS; p++) {
        pid_t pid = fork();
        if (pid == 0) {
            for (i = 0; i < LINES; i++)
                ar_log(AR_LOG_INFO, "conc", NULL, "p%d i%d %s", p, i, payload);
            _exit(0);
        }
    }
    for (p = 0; p < PROCS; p++)
        wait(NULL);
    out = capture_end(NULL);
    CHECK_INT(count_lines(out), PROCS * LINES);
    for (s = out; *s;) {
        char *nl = strchr(s, '\n');
        char save = nl[1];
        nl[1] = '\0';
        if (!json_line_ok(s))
            ok = 0;
        nl[1] = save;
        s = nl + 1;
    }
    CHECK(ok, "every concurrent line intact");
    free(out);
}

int main(void)
{
    test_text();
    test_json();
    test_long();
    test_concurrent();
    return tap_done();
}
