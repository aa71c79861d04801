/* err.h - error codes shared by every autorthanc module.
 *
 * Every fallible function returns one of these and writes a human-readable
 * message into a caller-owned buffer (char *err, size_t errlen).  The message
 * names the file, URL or study involved; it never contains a password.
 * AR_OK is 0 so `if (rc) goto out;` works everywhere.
 */
#ifndef AR_ERR_H
#define AR_ERR_H

#include <stdarg.h>
#include <stddef.h>

enum {
    AR_OK = 0,
    AR_ERR = -1,       /* generic / programming error */
    AR_ENET = -2,      /* network error, timeout, 5xx: worth retrying */
    AR_EHTTP = -3,     /* 4xx other than 404: not worth retrying */
    AR_ENOTFOUND = -4, /* 404: the resource is gone */
    AR_EIO = -5,       /* local filesystem error (message has path + errno) */
    AR_ECONFIG = -6,   /* bad configuration */
    AR_ERULE = -7,     /* a rule failed (error, budget, memory) */
    AR_ESIZE = -8,     /* transfer size / checksum mismatch: retryable */
    AR_ENOMEM = -9,
    AR_ESTOP = -10     /* interrupted by a stop request (signal) */
};

/* Write a formatted message into err (always NUL-terminated, truncated to
 * errlen).  Returns rc so callers can write `return ar_seterr(...)`. */
int ar_seterr(char *err, size_t errlen, int rc, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Short stable name of a code ("network", "not-found", ...). */
const char *ar_strerror(int rc);

/* True when a failure with this code should be retried later. */
int ar_err_retryable(int rc);

#endif
