#!/usr/bin/env python3
"""test_parallel.py - issue 7, "Concurrency": several studies export at once
(max_parallel_exports) and one huge study does not hold back small ones.

  - test_small_studies_pass_a_slow_big_one: a big study whose files come
    through a FaultProxy that paces them (the slow link is the fault, not a
    synchronisation) is first in the ledger; three small studies come after
    it.  With two export slots the small ones are exported while the big one
    is still transferring (their export.done lines come first), and every
    folder is complete and byte-exact at the end.
"""

import os
import sys

sys.path.insert(0, os.path.join(os.environ.get("AR_SOURCE_DIR", os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "..", "..")), "tests", "lib"))
import harness as h  # noqa: E402
import faults as f  # noqa: E402


def test_small_studies_pass_a_slow_big_one(t):
    o = t.orthanc("PARALLEL", dicom=False)
    ws = t.workspace(o)
    ws.rule("all", tags=[("StudyDescription", "Study", "parallel")])
    big = o.create_study("PBIG", "BIG^ONE", "1",
                         [{"SeriesNumber": "1", "SeriesDate": "20240701", "instances": 12,
                           "content": h.png_data_uri(256, 256, seed=7)}],
                         study_tags={"StudyDescription": "PARALLEL BIG"})
    o.wait_stable(big["study"])
    smalls = []
    for k in range(3):
        s = o.create_study(f"PSMALL{k}", "SMALL^ONE", str(k + 2),
                           [{"SeriesNumber": "1", "SeriesDate": "20240701", "instances": 2}],
                           study_tags={"StudyDescription": "PARALLEL SMALL"})
        smalls.append(s)
    for s in smalls:
        o.wait_stable(s["study"])
    proxy = f.FaultProxy(o.url).start()
    t.defer(proxy.stop)
    big_files = "|".join(big["instances"])
    proxy.add(rf"/instances/({big_files})/file", "slow", rate=64 * 1024)
    r = ws.run(["run", "--once"], env={"AUTORTHANC_LOG_FORMAT": "json",
                                       "AUTORTHANC_ORTHANC_URL": proxy.url,
                                       "AUTORTHANC_MAX_PARALLEL_EXPORTS": "2"}, expect_rc=0)
    done = [e.get("study") for e in f.events(r.stderr, "export.done")]
    assert len(done) == 4, f"expected 4 exports, got {done}:\n{h.tail(r.stderr)}"
    assert done[-1] == big["study"], (
        f"the slow big study should finish last with two slots, order was {done}")
    queued = [e.get("study") for e in f.events(r.stderr, "rule.match")]
    assert queued and queued[0] == big["study"], f"the big study was not first in line: {queued}"
    expected = {}
    for s, folder in [(big, "all/PBIG-BIG-EX1")] + [
            (s, f"all/PSMALL{k}-SMALL-EX{k + 2}") for k, s in enumerate(smalls)]:
        expected.update(h.expected_files(o, s["study"], folder))
    h.assert_tree_matches(o, ws.storage, expected)


if __name__ == "__main__":
    h.main()
