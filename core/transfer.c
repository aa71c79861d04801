/* transfer.c - stream many files from Orthanc to disk in parallel.  See transfer.h.
 *
 * A pool of max_connections easy handles lives in one curl multi handle.
 * Each handle is a "slot": it carries one item at a time, and when that item
 * is done it is removed from the multi, pointed at the next item's URL and
 * added again, so handles, connections and the DNS cache are reused for the
 * whole run.  Items are started only when a slot is free, so memory does not
 * grow with the number of items; bodies go straight from libcurl's receive
 * buffer to the file descriptor.
 *
 * With fsync on, the loop starts the writeback of a finished file
 * (sync_file_range SYNC_FILE_RANGE_WRITE) and hands its still-open descriptor
 * to a second thread, the syncer, through a queue of at most
 * AR_XFER_SYNC_QUEUE files; the syncer fsyncs and closes them in order while
 * the transfers go on.  An fsync waits for a journal commit, and one commit
 * carries every file changed before it, so the files that finish while the
 * syncer waits pile up and then find little left to do: the commits batch
 * themselves, and the loop waits for the disk only when the queue is full.
 * The fsync is made on the descriptor that wrote the file, open since before the
 * first write, so it reports any writeback error (EIO, ENOSPC) met since; a
 * file reopened for its fsync could miss one if its inode left the cache in
 * between.  The first failure fails the run with the file's path.  Every
 * file is fsync'ed before the run returns AR_OK; open descriptors stay
 * bounded (slots + queue) whatever the number of files.  If the thread cannot
 * be started, each file is fsync'ed in the loop instead.
 *
 * The first failure stops the run: every transfer still going is dropped,
 * every open file closed (queued ones without their fsync), and the first
 * error is returned.
 */
#include "transfer.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <curl/curl.h>

#include "err.h"

/* libcurl's receive buffer per handle: fewer, larger write(2) calls. */
#define AR_XFER_BUFSIZE (256L * 1024)
/* Longest wait in curl_multi_poll, so the stop flag is seen in time. */
#define AR_XFER_POLL_MS 200
/* With fsync on, at most this many finished files wait (open, writeback
 * started) for the syncer thread; the loop blocks only when it is full. */
#define AR_XFER_SYNC_QUEUE 64

typedef struct xfer xfer;

/* Finished files on their way to fsync + close (fsync on only).  Everything
 * but `thread` and `started` is guarded by mu. */
typedef struct syncer {
    pthread_t thread;
    int started;          /* the thread runs; 0 = fsync in the loop */
    pthread_mutex_t mu;
    pthread_cond_t more;  /* a file was queued, or closing was set */
    pthread_cond_t room;  /* a file left the queue */
    int fd[AR_XFER_SYNC_QUEUE];
    size_t idx[AR_XFER_SYNC_QUEUE];
    size_t head, len;
    int closing;          /* no more files: drain the queue and end */
    int abandon;          /* failed run: close what is left without fsync */
    int rc;               /* first fsync/close failure */
    char err[PATH_MAX + 512];
} syncer;

typedef struct slot {
    xfer *x;
    CURL *easy;
    size_t idx;           /* item being transferred; SIZE_MAX when idle */
    int fd;               /* -1 when no file open */
    int in_multi;
    int status_known;     /* first body byte seen, status looked up */
    int status_ok;        /* 2xx: body goes to the file, otherwise dropped */
    int write_errno;      /* errno of a failed write(2), 0 if none */
    long long received;   /* body bytes of a 2xx answer */
    char curl_err[CURL_ERROR_SIZE];
} slot;

struct xfer {
    ar_http *h;
    int dir_fd;
    const ar_transfer_item *items;
    size_t n;
    const ar_transfer_opts *o;
    CURLM *multi;
    slot *slots;
    size_t nslots;
    size_t next;          /* next item to start */
    size_t active;        /* slots with a transfer in the multi */
    size_t done;
    long long bytes;
    long requests;
    syncer sync;          /* fsync on only */
};

/* Folder path of dir_fd for messages ("/storage/rule/x.WORKING"), or "". */
static const char *dir_name(const xfer *x, char *buf, size_t len)
{
    char proc[64];
    snprintf(proc, sizeof(proc), "/proc/self/fd/%d", x->dir_fd);
    ssize_t r = readlink(proc, buf, len - 1);
    if (r <= 0) {
        buf[0] = '\0';
        return buf;
    }
    buf[r] = '\0';
    return buf;
}

/* "<dir>/<rel>" for messages. */
static const char *file_name(const xfer *x, const char *rel, char *buf, size_t len)
{
    char dir[PATH_MAX];
    dir_name(x, dir, sizeof(dir));
    if (dir[0])
        snprintf(buf, len, "%s/%s", dir, rel);
    else
        snprintf(buf, len, "%s", rel);
    return buf;
}

static size_t slot_write(char *ptr, size_t size, size_t nmemb, void *ud)
{
    slot *s = ud;
    size_t n = size * nmemb;

    if (!s->status_known) {
        long status = 0;
        curl_easy_getinfo(s->easy, CURLINFO_RESPONSE_CODE, &status);
        s->status_ok = status >= 200 && status < 300;
        s->status_known = 1;
    }
    if (!s->status_ok)
        return n;  /* error page: not written to the file */

    size_t off = 0;
    while (off < n) {
        ssize_t w = write(s->fd, ptr + off, n - off);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            s->write_errno = errno;
            return 0;  /* curl fails the transfer with CURLE_WRITE_ERROR */
        }
        if (w == 0) {
            s->write_errno = EIO;
            return 0;
        }
        off += (size_t)w;
    }
    s->received += (long long)n;
    return n;
}

static void slot_close_file(slot *s)
{
    if (s->fd >= 0)
        close(s->fd);
    s->fd = -1;
}

/* A relative path that cannot leave dir_fd: no leading '/', no "." / ".." /
 * empty component. */
static int rel_path_ok(const char *p)
{
    if (!p || !*p || *p == '/')
        return 0;
    while (*p) {
        size_t len = strcspn(p, "/");
        if (len == 0 || (len == 1 && p[0] == '.') || (len == 2 && p[0] == '.' && p[1] == '.'))
            return 0;
        p += len;
        if (*p == '/')
            p++;
        if (!*p && p[-1] == '/')
            return 0;  /* trailing slash */
    }
    return 1;
}

/* Open the next item's file and hand the slot to the multi. */
static int slot_start(xfer *x, slot *s, char *err, size_t errlen)
{
    const ar_transfer_item *it = &x->items[x->next];
    char url[4096];

    if (!it->url_path || !rel_path_ok(it->rel_path))
        return ar_seterr(err, errlen, AR_ERR, "transfer item %zu: bad path '%s'", x->next,
                         it->rel_path ? it->rel_path : "(null)");
    s->fd = openat(x->dir_fd, it->rel_path,
                   O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0644);
    if (s->fd < 0) {
        int e = errno;
        char path[PATH_MAX + 256];
        return ar_seterr(err, errlen, AR_EIO, "create %s: %s",
                         file_name(x, it->rel_path, path, sizeof(path)), strerror(e));
    }
    s->idx = x->next++;
    s->status_known = 0;
    s->status_ok = 0;
    s->write_errno = 0;
    s->received = 0;
    s->curl_err[0] = '\0';
    ar_http_url(x->h, it->url_path, url, sizeof(url));
    curl_easy_setopt(s->easy, CURLOPT_URL, url);
    CURLMcode mc = curl_multi_add_handle(x->multi, s->easy);
    if (mc != CURLM_OK) {
        slot_close_file(s);
        s->idx = SIZE_MAX;
        return ar_seterr(err, errlen, AR_ERR, "curl_multi_add_handle: %s",
                         curl_multi_strerror(mc));
    }
    s->in_multi = 1;
    x->active++;
    x->requests++;
    return AR_OK;
}

/* fsync and close a finished file. */
static int sync_close(xfer *x, int fd, size_t idx, char *err, size_t errlen)
{
    char path[PATH_MAX + 256];
    int rc = AR_OK;

    if (x->o->fsync && fsync(fd) != 0) {
        int e = errno;
        rc = ar_seterr(err, errlen, AR_EIO, "fsync %s: %s",
                       file_name(x, x->items[idx].rel_path, path, sizeof(path)), strerror(e));
    }
    if (close(fd) != 0 && errno != EINTR && !rc) {
        int e = errno;
        rc = ar_seterr(err, errlen, AR_EIO, "close %s: %s",
                       file_name(x, x->items[idx].rel_path, path, sizeof(path)), strerror(e));
    }
    return rc;
}

/* The syncer thread: fsync and close queued files in order until closing
 * is set and the queue is empty.  After a failure (its own, or the run's:
 * abandon) it only closes. */
static void *syncer_main(void *ud)
{
    xfer *x = ud;
    syncer *q = &x->sync;
    char err[sizeof(q->err)];

    pthread_mutex_lock(&q->mu);
    for (;;) {
        while (q->len == 0 && !q->closing)
            pthread_cond_wait(&q->more, &q->mu);
        if (q->len == 0)
            break;
        int fd = q->fd[q->head];
        size_t idx = q->idx[q->head];
        q->head = (q->head + 1) % AR_XFER_SYNC_QUEUE;
        q->len--;
        int skip = q->abandon || q->rc;
        pthread_cond_signal(&q->room);
        pthread_mutex_unlock(&q->mu);

        int rc = AR_OK;
        if (skip)
            close(fd);
        else
            rc = sync_close(x, fd, idx, err, sizeof(err));

        pthread_mutex_lock(&q->mu);
        if (rc && !q->rc) {
            q->rc = rc;
            snprintf(q->err, sizeof(q->err), "%s", err);
        }
    }
    pthread_mutex_unlock(&q->mu);
    return NULL;
}

/* Start the syncer (fsync on).  If the thread cannot be started the run
 * goes on with q->started = 0: files are fsync'ed in the loop. */
static int syncer_start(xfer *x, char *err, size_t errlen)
{
    syncer *q = &x->sync;
    sigset_t all, old;

    if (pthread_mutex_init(&q->mu, NULL) != 0)
        return ar_seterr(err, errlen, AR_ENOMEM, "transfer: cannot create a mutex");
    if (pthread_cond_init(&q->more, NULL) != 0) {
        pthread_mutex_destroy(&q->mu);
        return ar_seterr(err, errlen, AR_ENOMEM, "transfer: cannot create a condition");
    }
    if (pthread_cond_init(&q->room, NULL) != 0) {
        pthread_cond_destroy(&q->more);
        pthread_mutex_destroy(&q->mu);
        return ar_seterr(err, errlen, AR_ENOMEM, "transfer: cannot create a condition");
    }
    /* signals stay with the threads that were there before */
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    q->started = pthread_create(&q->thread, NULL, syncer_main, x) == 0;
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    return AR_OK;
}

/* Hand a finished file to the syncer (it owns fd from now on); waits while
 * the queue is full.  Returns the syncer's first failure, if any. */
static int syncer_push(xfer *x, int fd, size_t idx, char *err, size_t errlen)
{
    syncer *q = &x->sync;

    /* start the writeback now; the fsync then has little left to do */
    (void)sync_file_range(fd, 0, 0, SYNC_FILE_RANGE_WRITE);
    if (!q->started)
        return sync_close(x, fd, idx, err, errlen);
    pthread_mutex_lock(&q->mu);
    while (q->len == AR_XFER_SYNC_QUEUE)
        pthread_cond_wait(&q->room, &q->mu);
    size_t at = (q->head + q->len) % AR_XFER_SYNC_QUEUE;
    q->fd[at] = fd;
    q->idx[at] = idx;
    q->len++;
    pthread_cond_signal(&q->more);
    int rc = q->rc;
    if (rc)
        ar_seterr(err, errlen, rc, "%s", q->err);
    pthread_mutex_unlock(&q->mu);
    return rc;
}

/* Stop the syncer: after a good run, wait until every queued file is
 * fsync'ed and closed and return the first failure; after a failed run
 * (abandon), close the queued files without fsync and return AR_OK. */
static int syncer_stop(xfer *x, int abandon, char *err, size_t errlen)
{
    syncer *q = &x->sync;
    int rc;

    if (!q->started)
        return AR_OK;
    pthread_mutex_lock(&q->mu);
    q->closing = 1;
    if (abandon)
        q->abandon = 1;
    pthread_cond_signal(&q->more);
    pthread_mutex_unlock(&q->mu);
    pthread_join(q->thread, NULL);
    q->started = 0;
    rc = abandon ? AR_OK : q->rc;
    if (rc)
        ar_seterr(err, errlen, rc, "%s", q->err);
    return rc;
}

/* A transfer ended: check it, finish its file.  The slot leaves the multi. */
static int slot_finish(xfer *x, slot *s, CURLcode cc, char *err, size_t errlen)
{
    const ar_transfer_item *it = &x->items[s->idx];
    char url[4096];
    char path[PATH_MAX + 256];
    long status = 0;
    curl_off_t clen = -1;
    int rc = AR_OK;

    curl_easy_getinfo(s->easy, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_getinfo(s->easy, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T, &clen);
    curl_multi_remove_handle(x->multi, s->easy);
    s->in_multi = 0;
    x->active--;
    ar_http_url(x->h, it->url_path, url, sizeof(url));

    if (cc != CURLE_OK) {
        if (cc == CURLE_WRITE_ERROR && s->write_errno) {
            rc = ar_seterr(err, errlen, AR_EIO, "write %s: %s",
                           file_name(x, it->rel_path, path, sizeof(path)),
                           strerror(s->write_errno));
        } else if (cc == CURLE_PARTIAL_FILE) {
            rc = ar_seterr(err, errlen, AR_ESIZE,
                           "GET %s: truncated answer, received %lld bytes, Content-Length %lld",
                           url, s->received, (long long)clen);
        } else {
            rc = ar_seterr(err, errlen, AR_ENET, "GET %s: %s", url,
                           s->curl_err[0] ? s->curl_err : curl_easy_strerror(cc));
        }
        goto out;
    }
    rc = ar_http_status_rc(status);
    if (rc) {
        rc = ar_seterr(err, errlen, rc, "GET %s: HTTP %ld", url, status);
        goto out;
    }
    if (clen >= 0 && s->received != (long long)clen) {
        rc = ar_seterr(err, errlen, AR_ESIZE,
                       "GET %s: received %lld bytes, Content-Length %lld",
                       url, s->received, (long long)clen);
        goto out;
    }
    if (it->expected_size >= 0 && s->received != it->expected_size) {
        rc = ar_seterr(err, errlen, AR_ESIZE,
                       "GET %s: received %lld bytes, expected %lld", url, s->received,
                       it->expected_size);
        goto out;
    }
    int fd = s->fd;
    s->fd = -1;
    if (x->o->fsync)
        rc = syncer_push(x, fd, s->idx, err, errlen);
    else
        rc = sync_close(x, fd, s->idx, err, errlen);
    if (rc)
        goto out;
    x->done++;
    x->bytes += s->received;
    if (x->o->progress)
        x->o->progress(x->o->progress_ud, x->done, x->n, x->bytes);
out:
    slot_close_file(s);
    s->idx = SIZE_MAX;
    return rc;
}

static int setup_slot(xfer *x, slot *s, char *err, size_t errlen)
{
    const char *user = ar_http_username(x->h);

    s->x = x;
    s->fd = -1;
    s->idx = SIZE_MAX;
    s->easy = curl_easy_init();
    if (!s->easy)
        return ar_seterr(err, errlen, AR_ERR, "curl_easy_init failed");
    CURL *e = s->easy;
    curl_easy_setopt(e, CURLOPT_PRIVATE, s);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_TCP_NODELAY, 1L);
    curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(e, CURLOPT_HTTPGET, 1L);
    curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT, ar_http_connect_timeout(x->h));
    curl_easy_setopt(e, CURLOPT_LOW_SPEED_LIMIT, ar_http_low_speed_limit(x->h));
    curl_easy_setopt(e, CURLOPT_LOW_SPEED_TIME, ar_http_low_speed_time(x->h));
    curl_easy_setopt(e, CURLOPT_BUFFERSIZE, AR_XFER_BUFSIZE);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, slot_write);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, s);
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, s->curl_err);
    if (user) {
        curl_easy_setopt(e, CURLOPT_HTTPAUTH, (long)CURLAUTH_BASIC);
        curl_easy_setopt(e, CURLOPT_USERNAME, user);
        curl_easy_setopt(e, CURLOPT_PASSWORD, ar_http_password(x->h));
    }
    return AR_OK;
}

int ar_transfer_run(ar_http *h, int dir_fd, const ar_transfer_item *items, size_t n,
                    const ar_transfer_opts *o, ar_transfer_result *res,
                    char *err, size_t errlen)
{
    xfer x;
    int rc = AR_ERR;
    int sync_init = 0;

    memset(&x, 0, sizeof(x));
    if (res)
        memset(res, 0, sizeof(*res));
    if (!h || !o || (n && !items) || o->max_connections < 1 || dir_fd < 0)
        return ar_seterr(err, errlen, AR_ERR, "ar_transfer_run: bad arguments");
    if (n == 0)
        return AR_OK;
    rc = ar_curl_global_init(err, errlen);
    if (rc)
        return rc;

    x.h = h;
    x.dir_fd = dir_fd;
    x.items = items;
    x.n = n;
    x.o = o;
    x.nslots = (size_t)o->max_connections < n ? (size_t)o->max_connections : n;

    x.multi = curl_multi_init();
    x.slots = calloc(x.nslots, sizeof(*x.slots));
    if (!x.multi || !x.slots) {
        rc = ar_seterr(err, errlen, AR_ENOMEM, "out of memory starting a transfer");
        goto out;
    }
    curl_multi_setopt(x.multi, CURLMOPT_MAX_TOTAL_CONNECTIONS, (long)o->max_connections);
    curl_multi_setopt(x.multi, CURLMOPT_MAX_HOST_CONNECTIONS, (long)o->max_connections);
    curl_multi_setopt(x.multi, CURLMOPT_MAXCONNECTS, (long)o->max_connections);
    for (size_t i = 0; i < x.nslots; i++) {
        x.slots[i].fd = -1;
        x.slots[i].idx = SIZE_MAX;
    }
    for (size_t i = 0; i < x.nslots; i++) {
        rc = setup_slot(&x, &x.slots[i], err, errlen);
        if (rc)
            goto out;
    }
    if (o->fsync) {
        rc = syncer_start(&x, err, errlen);
        if (rc)
            goto out;
        sync_init = 1;
    }
    for (size_t i = 0; i < x.nslots && x.next < n; i++) {
        rc = slot_start(&x, &x.slots[i], err, errlen);
        if (rc)
            goto out;
    }

    for (;;) {
        int running = 0, queued = 0;
        CURLMsg *msg;

        if (o->stop && *o->stop) {
            rc = ar_seterr(err, errlen, AR_ESTOP, "transfer stopped after %zu of %zu files",
                           x.done, n);
            goto out;
        }
        CURLMcode mc = curl_multi_perform(x.multi, &running);
        if (mc != CURLM_OK) {
            rc = ar_seterr(err, errlen, AR_ERR, "curl_multi_perform: %s",
                           curl_multi_strerror(mc));
            goto out;
        }
        while ((msg = curl_multi_info_read(x.multi, &queued)) != NULL) {
            if (msg->msg != CURLMSG_DONE)
                continue;
            char *priv = NULL;
            CURLcode cc = msg->data.result;
            curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, &priv);
            slot *s = (slot *)(void *)priv;
            rc = slot_finish(&x, s, cc, err, errlen);
            if (rc)
                goto out;
            if (x.next < n) {
                rc = slot_start(&x, s, err, errlen);
                if (rc)
                    goto out;
            }
        }
        if (x.active == 0 && x.next >= n) {
            rc = syncer_stop(&x, 0, err, errlen);
            if (rc)
                goto out;
            break;
        }
        mc = curl_multi_poll(x.multi, NULL, 0, AR_XFER_POLL_MS, NULL);
        if (mc != CURLM_OK) {
            rc = ar_seterr(err, errlen, AR_ERR, "curl_multi_poll: %s", curl_multi_strerror(mc));
            goto out;
        }
    }
    rc = AR_OK;
out:
    if (x.slots) {
        for (size_t i = 0; i < x.nslots; i++) {
            slot *s = &x.slots[i];
            if (s->in_multi)
                curl_multi_remove_handle(x.multi, s->easy);
            slot_close_file(s);
            if (s->easy)
                curl_easy_cleanup(s->easy);
        }
        free(x.slots);
    }
    if (sync_init) {
        syncer_stop(&x, 1, NULL, 0);  /* failed run: just close */
        pthread_cond_destroy(&x.sync.room);
        pthread_cond_destroy(&x.sync.more);
        pthread_mutex_destroy(&x.sync.mu);
    }
    if (x.multi)
        curl_multi_cleanup(x.multi);
    if (res) {
        res->files = x.done;
        res->bytes = x.bytes;
        res->requests = x.requests;
    }
    return rc;
}
