/* log.c - see log.h.
 *
 * Each line is built in a fixed buffer and written with one write() call, so
 * lines from several threads or processes sharing stderr do not interleave.
 * A line longer than the buffer is cut (on a character boundary, with the
 * message marked "...") and stays well-formed JSON.
 * Text lines escape control characters (\n, \t, \xNN) so one event is always
 * one line; values with spaces, quotes or '=' are written in double quotes.
 * errno is preserved across ar_log() so callers may log before using it.
 * A password in a URL ("scheme://user:secret@") never reaches a line: the
 * message and the path field are redacted to "scheme://user:***@" (the
 * configuration strips credentials from orthanc_url already; this catches
 * any URL that carries them anyway).
 */
#include "log.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define LINE_MAX_BYTES 16384
#define TAIL_RESERVE 32     /* room kept for closing a cut line */

static int g_min_level = AR_LOG_INFO;
static int g_json = 0;

void ar_log_setup(int min_level, int json)
{
    if (min_level < AR_LOG_DEBUG)
        min_level = AR_LOG_DEBUG;
    if (min_level > AR_LOG_ERROR)
        min_level = AR_LOG_ERROR;
    g_min_level = min_level;
    g_json = json ? 1 : 0;
}

typedef struct line {
    char buf[LINE_MAX_BYTES];
    size_t len;
    size_t limit;           /* LINE_MAX_BYTES - TAIL_RESERVE */
    int cut;                /* something did not fit: the rest is dropped */
    int in_str;             /* JSON: inside a string value */
} line;

static void put_raw(line *l, const char *s, size_t n)
{
    if (l->cut)
        return;
    if (l->len + n > l->limit) {
        l->cut = 1;
        return;
    }
    memcpy(l->buf + l->len, s, n);
    l->len += n;
}

static void put_str(line *l, const char *s)
{
    put_raw(l, s, strlen(s));
}

/* Length of the UTF-8 unit starting at s (by its lead byte; malformed input
 * is passed through byte by byte, only kept whole where it looks whole). */
static size_t unit_len(const unsigned char *s)
{
    size_t n = 1, want;
    if (s[0] < 0xC0)
        return 1;
    want = s[0] >= 0xF0 ? 4 : s[0] >= 0xE0 ? 3 : 2;
    while (n < want && s[n] >= 0x80 && s[n] < 0xC0)
        n++;
    return n;
}

enum { ESC_TEXT = 0, ESC_JSON = 1, ESC_QUOTED = 2 };

/* Append s escaped.  ESC_JSON: JSON string body.  ESC_TEXT: controls as
 * \n, \t, \xNN.  ESC_QUOTED: like ESC_TEXT plus \" and \\ (inside "..."). */
static void put_escaped(line *l, const char *str, int mode)
{
    int json = mode == ESC_JSON;
    const unsigned char *s = (const unsigned char *)str;
    while (*s && !l->cut) {
        char esc[8];
        size_t n = 0;
        switch (*s) {
        case '"':
            if (mode != ESC_TEXT) { memcpy(esc, "\\\"", 2); n = 2; }
            break;
        case '\\':
            if (mode != ESC_TEXT) { memcpy(esc, "\\\\", 2); n = 2; }
            break;
        case '\n': memcpy(esc, "\\n", 2); n = 2; break;
        case '\r': memcpy(esc, "\\r", 2); n = 2; break;
        case '\t': memcpy(esc, "\\t", 2); n = 2; break;
        default:
            if (*s < 0x20 || *s == 0x7f) {
                n = (size_t)snprintf(esc, sizeof esc, json ? "\\u%04x" : "\\x%02x", *s);
            }
            break;
        }
        if (n) {
            put_raw(l, esc, n);
            s++;
        } else {
            size_t u = unit_len(s);
            put_raw(l, (const char *)s, u);
            s += u;
        }
    }
}

static int text_needs_quotes(const char *s)
{
    if (!*s)
        return 1;
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c <= ' ' || c == '"' || c == '=' || c == '\\' || c == 0x7f)
            return 1;
    }
    return 0;
}

/* JSON: `,"key":"` as one piece, so a cut never leaves half an opener. */
static void open_json_str(line *l, const char *key)
{
    char opener[48];
    int n = snprintf(opener, sizeof opener, ",\"%s\":\"", key);
    size_t before = l->len;
    if (n <= 0 || (size_t)n >= sizeof opener)
        return;
    put_raw(l, opener, (size_t)n);
    if (l->len != before)
        l->in_str = 1;
}

static void close_json_str(line *l)
{
    size_t before = l->len;
    if (!l->in_str)
        return;
    put_raw(l, "\"", 1);
    if (l->len != before)
        l->in_str = 0;
}

static void put_field_str(line *l, const char *key, const char *val)
{
    if (!val)
        return;
    if (g_json) {
        open_json_str(l, key);
        put_escaped(l, val, ESC_JSON);
        close_json_str(l);
    } else {
        put_str(l, " ");
        put_str(l, key);
        put_str(l, "=");
        if (text_needs_quotes(val)) {
            put_str(l, "\"");
            put_escaped(l, val, ESC_QUOTED);
            put_str(l, "\"");
        } else {
            put_escaped(l, val, ESC_TEXT);
        }
    }
}

static void put_fmt(line *l, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void put_fmt(line *l, const char *fmt, ...)
{
    char tmp[64];
    va_list ap;
    int n;
    va_start(ap, fmt);
    n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n > 0)
        put_raw(l, tmp, (size_t)n < sizeof tmp ? (size_t)n : sizeof tmp - 1);
}

static const char *level_name(int level, int json)
{
    static const char *const text[] = { "DEBUG", "INFO ", "WARN ", "ERROR" };
    static const char *const lower[] = { "debug", "info", "warn", "error" };
    if (level < AR_LOG_DEBUG)
        level = AR_LOG_DEBUG;
    if (level > AR_LOG_ERROR)
        level = AR_LOG_ERROR;
    return json ? lower[level] : text[level];
}

static void write_all(const char *buf, size_t len)
{
    while (len > 0) {
        ssize_t w = write(STDERR_FILENO, buf, len);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return;             /* nowhere left to report it */
        }
        buf += w;
        len -= (size_t)w;
    }
}

/* Replace the password of every "://user:password@" in s (in place; s
 * holds cap bytes). */
static void redact_userinfo(char *s, size_t cap)
{
    char *p = s;
    while ((p = strstr(p, "://")) != NULL) {
        char *host = p + 3, *end = host + strcspn(host, "/?# \"'\t\n"), *at = NULL, *q, *colon;
        for (q = host; q < end; q++)
            if (*q == '@')
                at = q;
        colon = at ? memchr(host, ':', (size_t)(at - host)) : NULL;
        if (colon && !(at - colon - 1 == 3 && !strncmp(colon + 1, "***", 3))) {
            size_t tail = strlen(at) + 1;
            if ((size_t)(colon + 4 - s) + tail > cap)
                tail = cap - (size_t)(colon + 4 - s); /* a cut line: keep it terminated */
            memmove(colon + 4, at, tail);
            memcpy(colon + 1, "***", 3);
            s[cap - 1] = '\0';
            end = colon + 4;
        }
        p = end;
    }
}

void ar_log(int level, const char *event, const ar_log_fields *f, const char *fmt, ...)
{
    int saved_errno = errno;
    line l;
    char ts[96], msg[LINE_MAX_BYTES];
    struct timespec now;
    struct tm tm;
    va_list ap;

    if (level < g_min_level)
        return;

    l.len = 0;
    l.cut = 0;
    l.in_str = 0;
    l.limit = LINE_MAX_BYTES - TAIL_RESERVE;

    clock_gettime(CLOCK_REALTIME, &now);
    gmtime_r(&now.tv_sec, &tm);
    snprintf(ts, sizeof ts, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ",
             tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
             tm.tm_sec, (int)((now.tv_nsec / 1000000L) % 1000));

    msg[0] = '\0';
    if (fmt) {
        va_start(ap, fmt);
        vsnprintf(msg, sizeof msg, fmt, ap);
        va_end(ap);
        redact_userinfo(msg, sizeof msg);
    }
    if (!event || !*event)
        event = "log";

    if (g_json) {
        put_str(&l, "{\"time\":\"");
        put_str(&l, ts);
        put_str(&l, "\",\"level\":\"");
        put_str(&l, level_name(level, 1));
        put_str(&l, "\"");
        put_field_str(&l, "event", event);
    } else {
        put_str(&l, ts);
        put_str(&l, " ");
        put_str(&l, level_name(level, 0));
        put_str(&l, " ");
        put_escaped(&l, event, ESC_TEXT);
    }
    if (f) {
        put_field_str(&l, "study", f->study);
        put_field_str(&l, "rule", f->rule);
        put_field_str(&l, "path", f->path);
        if (f->bytes >= 0)
            put_fmt(&l, g_json ? ",\"bytes\":%lld" : " bytes=%lld", f->bytes);
        if (f->seconds >= 0) {
            if (g_json)
                put_fmt(&l, ",\"duration\":%.3f", f->seconds);
            else
                put_fmt(&l, " ms=%.0f", f->seconds * 1000.0);
        }
    }
    if (msg[0]) {
        if (g_json) {
            put_field_str(&l, "msg", msg);
        } else {
            put_str(&l, " ");
            put_escaped(&l, msg, ESC_TEXT);
        }
    }

    /* Close the line in the reserved tail; a cut line says so. */
    l.limit = LINE_MAX_BYTES;
    if (l.cut) {
        l.cut = 0;
        if (!g_json) {
            put_str(&l, " ...");
        } else {
            if (l.in_str) {
                put_str(&l, "...");
                close_json_str(&l);
            }
            put_str(&l, ",\"truncated\":true");
        }
    }
    put_str(&l, g_json ? "}\n" : "\n");

    write_all(l.buf, l.len);
    errno = saved_errno;
}
