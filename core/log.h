/* log.h - one log line per event on stderr, text or JSON.
 *
 * Text:  2026-11-28T15:00:00Z INFO  export.done study=... rule=... path=... bytes=... ms=...
 * JSON:  {"time":"...","level":"info","event":"export.done","study":"...",...,"msg":"..."}
 * JSON is written by hand-escaping strings (this is output, not parsing).
 * Fields are optional (NULL / -1 = omitted).  Never pass a password here.
 */
#ifndef AR_LOG_H
#define AR_LOG_H

enum { AR_LOG_DEBUG = 0, AR_LOG_INFO = 1, AR_LOG_WARN = 2, AR_LOG_ERROR = 3 };

typedef struct ar_log_fields {
    const char *study;
    const char *rule;
    const char *path;
    long long bytes;   /* -1 = omit */
    double seconds;    /* < 0 = omit */
} ar_log_fields;

void ar_log_setup(int min_level, int json);

/* ev: dotted event name ("poll.error"); f may be NULL. */
void ar_log(int level, const char *event, const ar_log_fields *f,
            const char *fmt, ...) __attribute__((format(printf, 4, 5)));

#endif
