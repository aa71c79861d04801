/* clock.h - the two clocks autorthanc reads, in seconds as doubles.
 *
 * ar_wall_now: unix time (CLOCK_REALTIME) - what the ledger stores (when a
 * job is due, when a study was first seen) and what other processes and
 * restarts compare against.  ar_mono_now: CLOCK_MONOTONIC - durations within
 * one process (transfer times, progress), immune to clock steps.
 */
#ifndef AR_CLOCK_H
#define AR_CLOCK_H

double ar_wall_now(void);
double ar_mono_now(void);

#endif
