/* http.c - the Orthanc HTTP client (libcurl easy, keep-alive).  See http.h.
 *
 * One easy handle per ar_http, reused for every request so the TCP
 * connection stays open between calls.  Orthanc closes idle connections
 * after about a second; libcurl notices a dead cached connection before
 * reusing it (and retries once on a fresh connection when the server closes
 * it under a request), so callers never see those closes.
 *
 * Credentials are handed to libcurl with CURLOPT_USERNAME/PASSWORD, never
 * put into a URL, so no URL we build or print carries them.  A base URL
 * given with "user:pass@" has that part moved out the same way.
 */
#include "http.h"

#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>

#include "err.h"

/* Largest body kept in memory for a small request (changes, tags, find). */
#define AR_HTTP_MAX_BODY ((size_t)512 * 1024 * 1024)

struct ar_http {
    CURL *easy;
    char *base;        /* no trailing '/', no credentials */
    char *username;    /* NULL = no auth */
    char *password;
    long timeout_s;
    long connect_timeout_s;
    long low_speed_limit, low_speed_time;
    char curl_err[CURL_ERROR_SIZE];
};

/* ---- process-wide libcurl initialisation ---------------------------------- */

static pthread_once_t g_curl_once = PTHREAD_ONCE_INIT;
static CURLcode g_curl_init_rc = CURLE_FAILED_INIT;

static void curl_init_once(void)
{
    g_curl_init_rc = curl_global_init(CURL_GLOBAL_DEFAULT);
}

int ar_curl_global_init(char *err, size_t errlen)
{
    pthread_once(&g_curl_once, curl_init_once);
    if (g_curl_init_rc != CURLE_OK)
        return ar_seterr(err, errlen, AR_ERR, "curl_global_init failed: %s",
                         curl_easy_strerror(g_curl_init_rc));
    return AR_OK;
}

/* ---- small helpers ---------------------------------------------------------- */

void ar_buf_free(ar_buf *b)
{
    if (!b)
        return;
    free(b->data);
    b->data = NULL;
    b->len = 0;
}

typedef struct body_sink {
    ar_buf *out;
    size_t cap;
    int too_big;
} body_sink;

static size_t body_write(char *ptr, size_t size, size_t nmemb, void *ud)
{
    body_sink *s = ud;
    size_t n = size * nmemb;
    ar_buf *b = s->out;

    if (n == 0)
        return 0;
    if (b->len + n + 1 > s->cap) {
        size_t want = s->cap ? s->cap : 4096;
        while (want < b->len + n + 1)
            want *= 2;
        if (want > AR_HTTP_MAX_BODY) {
            s->too_big = 1;
            return 0;  /* makes curl fail with CURLE_WRITE_ERROR */
        }
        char *p = realloc(b->data, want);
        if (!p)
            return 0;
        b->data = p;
        s->cap = want;
    }
    memcpy(b->data + b->len, ptr, n);
    b->len += n;
    b->data[b->len] = '\0';
    return n;
}

/* Strip "user:pass@" out of url (in place).  If present and no explicit
 * username was configured, hand them back (malloc'ed) in *user / *pass. */
static int split_userinfo(char *url, char **user, char **pass)
{
    char *scheme = strstr(url, "://");
    char *host = scheme ? scheme + 3 : url;
    size_t hostlen = strcspn(host, "/?#");
    char *at = NULL;

    for (size_t i = 0; i < hostlen; i++)
        if (host[i] == '@')
            at = host + i;    /* last '@' of the authority */
    if (!at)
        return 0;
    char *colon = memchr(host, ':', (size_t)(at - host));
    size_t ulen = colon ? (size_t)(colon - host) : (size_t)(at - host);
    *user = strndup(host, ulen);
    *pass = colon ? strndup(colon + 1, (size_t)(at - colon - 1)) : strdup("");
    memmove(host, at + 1, strlen(at + 1) + 1);
    if (!*user || !*pass)
        return -1;
    return 1;
}

int ar_http_new(const ar_http_opts *o, ar_http **out, char *err, size_t errlen)
{
    int rc = AR_ERR;
    ar_http *h = NULL;
    char *url_user = NULL, *url_pass = NULL;

    *out = NULL;
    if (!o || !o->base_url || !*o->base_url) {
        rc = ar_seterr(err, errlen, AR_ECONFIG, "Orthanc URL is empty");
        goto out;
    }
    rc = ar_curl_global_init(err, errlen);
    if (rc)
        goto out;

    rc = AR_ENOMEM;
    h = calloc(1, sizeof(*h));
    if (!h)
        goto nomem;
    h->base = strdup(o->base_url);
    if (!h->base)
        goto nomem;
    int split = split_userinfo(h->base, &url_user, &url_pass);
    if (split < 0)
        goto nomem;
    size_t bl = strlen(h->base);
    while (bl > 0 && h->base[bl - 1] == '/')
        h->base[--bl] = '\0';
    if (strncmp(h->base, "http://", 7) != 0 && strncmp(h->base, "https://", 8) != 0) {
        rc = ar_seterr(err, errlen, AR_ECONFIG,
                       "Orthanc URL '%s' must start with http:// or https://", h->base);
        goto out;
    }

    if (o->username && *o->username) {
        h->username = strdup(o->username);
        h->password = strdup(o->password ? o->password : "");
        if (!h->username || !h->password)
            goto nomem;
    } else if (url_user && *url_user) {
        h->username = url_user;
        h->password = url_pass;
        url_user = url_pass = NULL;
    }
    h->timeout_s = o->timeout_s > 0 ? o->timeout_s : 0;
    h->connect_timeout_s = o->connect_timeout_s > 0 ? o->connect_timeout_s : 10;
    h->low_speed_limit = o->low_speed_limit > 0 ? o->low_speed_limit : 1;
    h->low_speed_time = o->low_speed_time > 0 ? o->low_speed_time : 60;

    h->easy = curl_easy_init();
    if (!h->easy) {
        rc = ar_seterr(err, errlen, AR_ERR, "curl_easy_init failed");
        goto out;
    }
    CURL *e = h->easy;
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_TCP_NODELAY, 1L);
    curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT, h->connect_timeout_s);
    curl_easy_setopt(e, CURLOPT_TIMEOUT, h->timeout_s);
    curl_easy_setopt(e, CURLOPT_LOW_SPEED_LIMIT, h->low_speed_limit);
    curl_easy_setopt(e, CURLOPT_LOW_SPEED_TIME, h->low_speed_time);
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, h->curl_err);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, body_write);
    curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L);
    /* No CURLOPT_ACCEPT_ENCODING: libcurl then sends no Accept-Encoding and
     * Orthanc answers uncompressed. */
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
    if (h->username) {
        curl_easy_setopt(e, CURLOPT_HTTPAUTH, (long)CURLAUTH_BASIC);
        curl_easy_setopt(e, CURLOPT_USERNAME, h->username);
        curl_easy_setopt(e, CURLOPT_PASSWORD, h->password);
    }

    *out = h;
    h = NULL;
    rc = AR_OK;
    goto out;
nomem:
    rc = ar_seterr(err, errlen, AR_ENOMEM, "out of memory creating the HTTP client");
out:
    free(url_user);
    free(url_pass);
    ar_http_free(h);
    return rc;
}

void ar_http_free(ar_http *h)
{
    if (!h)
        return;
    if (h->easy)
        curl_easy_cleanup(h->easy);
    free(h->base);
    free(h->username);
    if (h->password) {
        /* do not leave the password lying in freed memory */
        volatile char *p = h->password;
        while (*p)
            *p++ = '\0';
        free(h->password);
    }
    free(h);
}

const char *ar_http_url(const ar_http *h, const char *path, char *out, size_t outlen)
{
    if (!outlen)
        return out;
    if (!path)
        path = "";
    snprintf(out, outlen, "%s%s%s", h->base, (path[0] == '/' || path[0] == '\0') ? "" : "/",
             path);
    return out;
}

const char *ar_http_base(const ar_http *h) { return h->base; }
const char *ar_http_username(const ar_http *h) { return h->username; }
const char *ar_http_password(const ar_http *h) { return h->password; }
long ar_http_connect_timeout(const ar_http *h) { return h->connect_timeout_s; }
long ar_http_low_speed_limit(const ar_http *h) { return h->low_speed_limit; }
long ar_http_low_speed_time(const ar_http *h) { return h->low_speed_time; }

int ar_http_status_rc(long status)
{
    if (status >= 200 && status < 300)
        return AR_OK;
    if (status == 404)
        return AR_ENOTFOUND;
    /* 408 Request Timeout and 429 Too Many Requests are the server's "later" */
    if (status >= 500 || status == 0 || status == 408 || status == 429)
        return AR_ENET;
    return AR_EHTTP;  /* 1xx/3xx (we never follow redirects) and 4xx */
}

static int perform(ar_http *h, const char *method, const char *path, ar_buf *out,
                   char *err, size_t errlen)
{
    char url[4096];
    body_sink sink = { out, 0, 0 };
    int rc;

    ar_http_url(h, path, url, sizeof(url));
    h->curl_err[0] = '\0';
    curl_easy_setopt(h->easy, CURLOPT_URL, url);
    curl_easy_setopt(h->easy, CURLOPT_WRITEDATA, &sink);

    CURLcode cc = curl_easy_perform(h->easy);
    long status = 0;
    curl_easy_getinfo(h->easy, CURLINFO_RESPONSE_CODE, &status);
    out->status = status;

    if (cc != CURLE_OK) {
        if (sink.too_big)
            return ar_seterr(err, errlen, AR_ENET, "%s %s: answer larger than %zu bytes",
                             method, url, AR_HTTP_MAX_BODY);
        if (cc == CURLE_WRITE_ERROR)
            return ar_seterr(err, errlen, AR_ENOMEM, "%s %s: out of memory for the answer",
                             method, url);
        int code = AR_ENET;
        if (cc == CURLE_URL_MALFORMAT || cc == CURLE_UNSUPPORTED_PROTOCOL)
            code = AR_ECONFIG;
        return ar_seterr(err, errlen, code, "%s %s: %s", method, url,
                         h->curl_err[0] ? h->curl_err : curl_easy_strerror(cc));
    }
    rc = ar_http_status_rc(status);
    if (rc)
        return ar_seterr(err, errlen, rc, "%s %s: HTTP %ld", method, url, status);
    return AR_OK;
}

static void reset_out(ar_buf *out)
{
    out->data = NULL;
    out->len = 0;
    out->status = 0;
}

int ar_http_get(ar_http *h, const char *path, ar_buf *out, char *err, size_t errlen)
{
    reset_out(out);
    curl_easy_setopt(h->easy, CURLOPT_CUSTOMREQUEST, NULL);
    curl_easy_setopt(h->easy, CURLOPT_HTTPHEADER, NULL);
    curl_easy_setopt(h->easy, CURLOPT_HTTPGET, 1L);
    return perform(h, "GET", path, out, err, errlen);
}

int ar_http_post(ar_http *h, const char *path, const char *body, size_t len,
                 const char *content_type, ar_buf *out, char *err, size_t errlen)
{
    char ct[256];
    struct curl_slist *hdrs = NULL, *tmp;
    int rc;

    reset_out(out);
    snprintf(ct, sizeof(ct), "Content-Type: %s",
             content_type ? content_type : "application/json");
    tmp = curl_slist_append(NULL, "Expect:");
    if (!tmp)
        return ar_seterr(err, errlen, AR_ENOMEM, "out of memory");
    hdrs = tmp;
    tmp = curl_slist_append(hdrs, ct);
    if (!tmp) {
        curl_slist_free_all(hdrs);
        return ar_seterr(err, errlen, AR_ENOMEM, "out of memory");
    }
    hdrs = tmp;

    curl_easy_setopt(h->easy, CURLOPT_CUSTOMREQUEST, NULL);
    curl_easy_setopt(h->easy, CURLOPT_HTTPHEADER, hdrs);
    curl_easy_setopt(h->easy, CURLOPT_POST, 1L);
    curl_easy_setopt(h->easy, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)(body ? len : 0));
    curl_easy_setopt(h->easy, CURLOPT_POSTFIELDS, body ? body : "");
    rc = perform(h, "POST", path, out, err, errlen);
    curl_easy_setopt(h->easy, CURLOPT_HTTPHEADER, NULL);
    curl_easy_setopt(h->easy, CURLOPT_POSTFIELDS, NULL);
    curl_slist_free_all(hdrs);
    return rc;
}

int ar_http_delete(ar_http *h, const char *path, ar_buf *out, char *err, size_t errlen)
{
    int rc;

    reset_out(out);
    curl_easy_setopt(h->easy, CURLOPT_HTTPHEADER, NULL);
    curl_easy_setopt(h->easy, CURLOPT_HTTPGET, 1L);
    curl_easy_setopt(h->easy, CURLOPT_CUSTOMREQUEST, "DELETE");
    rc = perform(h, "DELETE", path, out, err, errlen);
    curl_easy_setopt(h->easy, CURLOPT_CUSTOMREQUEST, NULL);
    return rc;
}
