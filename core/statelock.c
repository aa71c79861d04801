/* statelock.c - see statelock.h. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>

#include "err.h"
#include "statelock.h"

#define LOCK_NAME "autorthanc.lock"

static int lock_path(const char *state_dir, char *out, size_t outlen)
{
    return (size_t)snprintf(out, outlen, "%s/" LOCK_NAME, state_dir) < outlen ? 0 : -1;
}

/* The pid written in the lock file at fd, 0 if none. */
static long read_pid(int fd)
{
    char buf[32];
    ssize_t n = pread(fd, buf, sizeof buf - 1, 0);
    if (n <= 0)
        return 0;
    buf[n] = '\0';
    return strtol(buf, NULL, 10);
}

int ar_statelock_take(const char *state_dir, int *fd, char *err, size_t errlen)
{
    char path[4200], pid[32];
    int f, n;

    *fd = -1;
    if (lock_path(state_dir, path, sizeof path))
        return ar_seterr(err, errlen, AR_ECONFIG, "state folder %.100s...: path too long", state_dir);
    f = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (f < 0)
        return ar_seterr(err, errlen, AR_EIO, "open %s: %s", path, strerror(errno));
    if (flock(f, LOCK_EX | LOCK_NB) != 0) {
        int e = errno;
        long holder = read_pid(f);
        close(f);
        if (e == EWOULDBLOCK)
            return ar_seterr(err, errlen, AR_ECONFIG,
                             "another autorthanc (pid %ld) runs on state folder %s: one daemon "
                             "per state folder (stop it, or give this one its own state_dir)",
                             holder, state_dir);
        return ar_seterr(err, errlen, AR_EIO, "lock %s: %s", path, strerror(e));
    }
    n = snprintf(pid, sizeof pid, "%ld\n", (long)getpid());
    if (ftruncate(f, 0) != 0 || pwrite(f, pid, (size_t)n, 0) != n) {
        int e = errno;
        close(f);
        return ar_seterr(err, errlen, AR_EIO, "write %s: %s", path, strerror(e));
    }
    *fd = f;
    return AR_OK;
}

void ar_statelock_release(int fd)
{
    if (fd >= 0)
        close(fd); /* drops the lock; the file stays for the next one */
}

long ar_statelock_holder(const char *state_dir)
{
    char path[4200];
    long holder = 0;
    int f;

    if (lock_path(state_dir, path, sizeof path))
        return 0;
    f = open(path, O_RDONLY | O_CLOEXEC);
    if (f < 0)
        return 0;
    if (flock(f, LOCK_SH | LOCK_NB) != 0) {
        holder = read_pid(f);
        if (holder <= 0)
            holder = -1; /* held, but the pid is not written yet */
    } else {
        flock(f, LOCK_UN);
    }
    close(f);
    return holder;
}
