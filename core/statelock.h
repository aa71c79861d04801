/* statelock.h - one daemon per state folder.
 *
 * The daemon holds an exclusive flock(2) on <state_dir>/autorthanc.lock
 * for as long as it runs, with its pid written inside; the kernel drops
 * the lock when the process ends in any way (kill -9 included), so a stale
 * lock file never blocks a restart.  A second daemon on the same folder is
 * refused naming the holder; commands that act on the ledger (`fire`) ask
 * whether a daemon holds it and hand their work to it instead of running
 * beside it.
 */
#ifndef AR_STATELOCK_H
#define AR_STATELOCK_H

#include <stddef.h>

/* Take the lock (state_dir must exist).  *fd is kept open (close-on-exec)
 * until ar_statelock_release.  AR_ECONFIG "another autorthanc (pid N)
 * runs on state folder X" when it is held. */
int ar_statelock_take(const char *state_dir, int *fd, char *err, size_t errlen);
void ar_statelock_release(int fd);

/* The pid of the daemon holding the lock of state_dir, 0 when none does
 * (-1: held, pid not written yet). */
long ar_statelock_holder(const char *state_dir);

#endif
