/* err.c - see err.h */
#include "err.h"

#include <stdio.h>

int ar_seterr(char *err, size_t errlen, int rc, const char *fmt, ...)
{
    if (err && errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return rc;
}

const char *ar_strerror(int rc)
{
    switch (rc) {
    case AR_OK: return "ok";
    case AR_ENET: return "network";
    case AR_EHTTP: return "http";
    case AR_ENOTFOUND: return "not-found";
    case AR_EIO: return "io";
    case AR_ECONFIG: return "config";
    case AR_ERULE: return "rule";
    case AR_ESIZE: return "size-mismatch";
    case AR_ENOMEM: return "out-of-memory";
    case AR_ESTOP: return "stopped";
    default: return "error";
    }
}

int ar_err_retryable(int rc)
{
    return rc == AR_ENET || rc == AR_ESIZE || rc == AR_EIO;
}
