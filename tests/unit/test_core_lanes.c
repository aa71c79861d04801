/* test_core_lanes.c - the lane table (core/lanes.h): concurrency per lane,
 * a destination failure opens the breaker, one probe at a time after the
 * backoff, success closes it, the job's own failures leave the lane alone,
 * forwards in flight count against concurrency, polls always go. */
#include <string.h>

#include "err.h"
#include "lanes.h"
#include "tap.h"

int main(void)
{
    ar_lanes *l = NULL;
    char err[256];
    int probe = 0;
    CHECK_INT(ar_lanes_new(2, 8, &l, err, sizeof err), AR_OK);
    if (!l)
        return tap_done();

    /* concurrency 2 on storage; another lane is independent */
    CHECK(ar_lanes_try_start(l, "storage", 2, 0, 0, 1, 100, &probe), "1st start");
    CHECK(ar_lanes_try_start(l, "storage", 2, 0, 0, 2, 100, &probe), "2nd start");
    CHECK(!ar_lanes_try_start(l, "storage", 2, 0, 0, 3, 100, &probe), "3rd waits");
    CHECK(ar_lanes_try_start(l, "modality:A", 1, 0, 0, 4, 100, &probe), "other lane starts");
    CHECK_INT(ar_lanes_finished(l, "storage", 1, AR_LANE_OTHER, "disk", 101), AR_LANE_SAME);
    CHECK(ar_lanes_try_start(l, "storage", 2, 0, 0, 3, 101, &probe) && !probe,
          "a slot freed; the job's own failure leaves the lane up");

    /* a forward handed to Orthanc: pending, in flight counts, its look goes */
    CHECK_INT(ar_lanes_finished(l, "modality:A", 4, AR_LANE_PENDING, "", 101), AR_LANE_SAME);
    CHECK(!ar_lanes_try_start(l, "modality:A", 1, 1, 0, 5, 101, &probe), "in flight is full");
    CHECK(ar_lanes_try_start(l, "modality:A", 1, 1, 1, 4, 101, &probe), "its look always goes");
    /* the store job failed: down */
    CHECK_INT(ar_lanes_finished(l, "modality:A", 4, AR_LANE_DEST_FAIL, "association refused", 102),
              AR_LANE_WENT_DOWN);
    ar_lane_info li;
    CHECK(ar_lanes_is_down(l, "modality:A", &li) && li.failures == 1 && li.next_probe_at == 104 &&
              !strcmp(li.last_error, "association refused"), "down, next probe at +2 s");
    CHECK(!ar_lanes_try_start(l, "modality:A", 1, 0, 0, 5, 103, &probe), "no probe before backoff");
    CHECK(ar_lanes_try_start(l, "modality:A", 1, 0, 0, 5, 104, &probe) && probe, "one probe");
    CHECK_INT(ar_lanes_finished(l, "modality:A", 5, AR_LANE_PENDING, "", 104), AR_LANE_SAME);
    CHECK(!ar_lanes_try_start(l, "modality:A", 5, 0, 0, 6, 200, &probe),
          "one probe at a time, whatever the concurrency");
    CHECK_INT(ar_lanes_settle(l, "modality:A", 5, AR_LANE_DEST_FAIL, "timeout", 105), AR_LANE_SAME);
    ar_lanes_is_down(l, "modality:A", &li);
    CHECK(li.failures == 2 && li.next_probe_at == 109 && li.probe_job == 0, "backoff doubles");
    ar_lanes_settle(l, "modality:A", 0, AR_LANE_DEST_FAIL, "x", 110);
    ar_lanes_settle(l, "modality:A", 0, AR_LANE_DEST_FAIL, "x", 110);
    ar_lanes_is_down(l, "modality:A", &li);
    CHECK(li.next_probe_at == 118, "backoff capped at probe_max (%g)", li.next_probe_at);
    /* a probe that fails for its own reason frees the probe slot at once */
    CHECK(ar_lanes_try_start(l, "modality:A", 1, 0, 0, 7, 118, &probe) && probe, "probe 2");
    CHECK_INT(ar_lanes_finished(l, "modality:A", 7, AR_LANE_OTHER, "study gone", 118), AR_LANE_SAME);
    CHECK(ar_lanes_try_start(l, "modality:A", 1, 0, 0, 8, 118, &probe) && probe, "probe 3");
    CHECK_INT(ar_lanes_finished(l, "modality:A", 8, AR_LANE_OK, "", 119), AR_LANE_CAME_UP);
    CHECK(!ar_lanes_is_down(l, "modality:A", &li) && li.failures == 0, "up again");

    ar_lane_info snap[4];
    CHECK_INT(ar_lanes_snapshot(l, snap, 4), 2);
    CHECK(!strcmp(snap[0].name, "modality:A") && !strcmp(snap[1].name, "storage") &&
              snap[1].running == 2, "snapshot in name order");
    ar_lanes_free(l);
    return tap_done();
}
