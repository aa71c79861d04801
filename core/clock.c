/* clock.c - see clock.h. */
#include <time.h>

#include "clock.h"

static double seconds(clockid_t id)
{
    struct timespec ts;
    clock_gettime(id, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

double ar_wall_now(void)
{
    return seconds(CLOCK_REALTIME);
}

double ar_mono_now(void)
{
    return seconds(CLOCK_MONOTONIC);
}
