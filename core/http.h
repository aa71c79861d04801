/* http.h - the Orthanc HTTP client (libcurl).
 *
 * One ar_http per thread holds a keep-alive easy handle for small requests and
 * the base URL + credentials.  Paths are relative to the base URL ("/changes?
 * since=3").  Never sends Accept-Encoding (Orthanc would gzip on the fly).
 * Error messages name the URL (without credentials) and the status or curl
 * error; they never contain the password.
 *
 * Return codes: AR_OK for 2xx; AR_ENOTFOUND for 404; AR_EHTTP for other 4xx;
 * AR_ENET for connection errors, timeouts, 408, 429 and 5xx (worth retrying).  out->status always holds
 * the HTTP status (0 if none).  Bodies of error answers are kept in out too.
 */
#ifndef AR_HTTP_H
#define AR_HTTP_H

#include <stddef.h>

typedef struct ar_http ar_http;

typedef struct ar_buf {
    char *data;     /* malloc'ed, NUL-terminated, may be NULL when len == 0 */
    size_t len;
    long status;
} ar_buf;

void ar_buf_free(ar_buf *b);

typedef struct ar_http_opts {
    const char *base_url;   /* "http://host:port[/prefix]" (trailing / ok) */
    const char *username;   /* NULL/"" = no auth */
    const char *password;
    long timeout_s;         /* whole-request timeout for small requests, 0 = none */
    long connect_timeout_s; /* default 10 */
    long low_speed_limit;   /* bytes/s; an answer slower than this for      */
    long low_speed_time;    /* low_speed_time s is cut (a stalled server):
                               defaults 1 B/s, 60 s; transfers use them too */
} ar_http_opts;

int ar_http_new(const ar_http_opts *o, ar_http **out, char *err, size_t errlen);
void ar_http_free(ar_http *h);

/* Full URL for a path (no credentials in it).  Returns out. */
const char *ar_http_url(const ar_http *h, const char *path, char *out, size_t outlen);

int ar_http_get(ar_http *h, const char *path, ar_buf *out, char *err, size_t errlen);
/* body may be NULL (empty).  content_type NULL = application/json. */
int ar_http_post(ar_http *h, const char *path, const char *body, size_t len,
                 const char *content_type, ar_buf *out, char *err, size_t errlen);
int ar_http_delete(ar_http *h, const char *path, ar_buf *out, char *err, size_t errlen);

/* Accessors used by the transfer module to configure its own handles. */
const char *ar_http_base(const ar_http *h);
const char *ar_http_username(const ar_http *h);
const char *ar_http_password(const ar_http *h);
long ar_http_connect_timeout(const ar_http *h);
long ar_http_low_speed_limit(const ar_http *h);
long ar_http_low_speed_time(const ar_http *h);

/* Shared with the transfer module: initialise libcurl once per process
 * (thread-safe), and map an HTTP status to a return code as above. */
int ar_curl_global_init(char *err, size_t errlen);
int ar_http_status_rc(long status);

#endif
