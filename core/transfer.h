/* transfer.h - stream many files from Orthanc to disk in parallel.
 *
 * libcurl multi with a bounded number of keep-alive connections
 * (CURLMOPT_MAX_TOTAL_CONNECTIONS), curl_multi_poll, per-transfer state in
 * CURLOPT_PRIVATE, write callbacks straight to a file descriptor.  Memory use
 * does not depend on file sizes or on the number of files (items are started
 * lazily as slots free up).
 *
 * Each item is written to `<dir_fd-relative path>`; parent folders must exist.
 * Each file's received size is checked against Content-Length and against
 * item->expected_size (if >= 0); a mismatch is AR_ESIZE.  With fsync on,
 * every file is fsync'ed before close.  A transfer slower than the client's
 * low-speed limit for its low-speed time (ar_http_opts) is cut: AR_ENET.  A stop flag (checked at least every
 * 200 ms) aborts all transfers with AR_ESTOP.
 * On failure the files already written are left for the caller to remove
 * (the caller writes into a .WORKING folder and removes it).
 */
#ifndef AR_TRANSFER_H
#define AR_TRANSFER_H

#include <signal.h>
#include <stddef.h>

#include "http.h"

typedef struct ar_transfer_item {
    const char *url_path;     /* "/instances/<id>/file" */
    const char *rel_path;     /* relative to dir_fd, e.g. "SE1-2020-1.2.3/1.2.3.4.dcm" */
    long long expected_size;  /* -1 = unknown */
} ar_transfer_item;

typedef struct ar_transfer_opts {
    int max_connections;      /* parallel transfers, >= 1 */
    int fsync;                /* fsync each file */
    volatile sig_atomic_t *stop; /* may be NULL */
    /* progress: called after each finished file; may be NULL */
    void (*progress)(void *ud, size_t files_done, size_t files_total,
                     long long bytes_done);
    void *progress_ud;
} ar_transfer_opts;

typedef struct ar_transfer_result {
    size_t files;
    long long bytes;
    long requests;
} ar_transfer_result;

int ar_transfer_run(ar_http *h, int dir_fd, const ar_transfer_item *items, size_t n,
                    const ar_transfer_opts *o, ar_transfer_result *res,
                    char *err, size_t errlen);

#endif
