#!/usr/bin/env python3
"""test_pipeline.py - issue 10, a pipeline that never stalls.

  - test_dead_forward_lane_does_not_stall_downloads: a FORWARD target that
    accepts TCP and never answers (a hung PACS) next to a DOWNLOAD rule, in the
    daemon: the downloads finish as if it were not there, a study arriving
    later is exported within a few poll intervals of becoming stable, the
    forward lane goes down with its jobs' attempts untouched, and when a real
    Orthanc takes the listener's port every queued forward arrives.
  - test_study_too_big_for_the_memory_cap_is_a_failed_decision: a study too
    big for a small rule_memory_mb, ahead of two small ones: the small ones
    are exported in the same `run --once`, the big one is a failed decision
    job naming the memory cap, and `retry` brings it back.
  - test_hooks_get_their_own_study: two export slots, studies of different
    sizes, a Lua rule whose on_exported hook checks that the path it is given
    was made from the study it is given.
  - test_one_refusal_does_not_lose_a_study: one HTTP 429 on a study's
    /instances while it is decided: the study is exported on a later attempt.
"""

import json
import os
import socket
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.environ.get("AR_SOURCE_DIR", os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "..", "..")), "tests", "lib"))
import harness as h  # noqa: E402
import faults as f  # noqa: E402


class SilentListener:
    """A loopback port that accepts connections and never says a word (a hung
    PACS: the association request is never answered)."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.held = []
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.closed:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            self.held.append(c)

    def close(self):
        self.closed = True
        self.sock.close()
        for c in self.held:
            c.close()


def small_study(o, pid, desc, n=2, seed=1):
    return o.create_study(pid, "PIPE^LINE", pid[-2:],
                          [{"SeriesNumber": "1", "SeriesDate": "20241201", "instances": n,
                            "content": h.png_data_uri(16, 16, seed=seed)}],
                          study_tags={"StudyDescription": desc})


def folder_of(ws, rule, pid, study_id):
    return ws.path(rule, f"{pid}-PIPE-EX{pid[-2:]}")


def test_dead_forward_lane_does_not_stall_downloads(t):
    listener = SilentListener()
    t.defer(listener.close)
    src = t.orthanc("PIPESRC", dicom=False,
                    modalities={"HUNG": ["HUNGPACS", "127.0.0.1", listener.port]},
                    extra_config={"DicomScuTimeout": 20})
    ws = t.workspace(src)
    ws.rule("keep", tags=[("StudyDescription", "Study", "pipe")])
    ws.rule("send", action="FORWARD", destination="HUNG",
            tags=[("StudyDescription", "Study", "pipe")])
    studies = [small_study(src, f"PP{k:02d}", "PIPE SMALL", seed=k) for k in range(1, 7)]
    for s in studies:
        src.wait_stable(s["study"])
    env = ws.env(AUTORTHANC_LOG_FORMAT="json", AUTORTHANC_RETRY_INITIAL="1",
                 AUTORTHANC_RETRY_MAX="2", AUTORTHANC_POLL_INTERVAL="0.2")
    d = t.daemon(["run"], env=env)
    t0 = time.monotonic()
    for s in studies:
        pid = src.get(f"/studies/{s['study']}")["PatientMainDicomTags"]["PatientID"]
        path = folder_of(ws, "keep", pid, s["study"])
        h.wait_for(lambda: os.path.isdir(path), 60, f"download of {pid}")
    took = time.monotonic() - t0
    # a stalled design waits DicomScuTimeout (20 s) per forward before a download
    assert took < 15, f"6 small downloads took {took:.1f} s next to a hung forward target"

    # a study arriving now is exported within a few poll intervals
    late = small_study(src, "PP07", "PIPE LATE", seed=7)
    src.wait_stable(late["study"])
    t1 = time.monotonic()
    path = folder_of(ws, "keep", "PP07", late["study"])
    h.wait_for(lambda: os.path.isdir(path), 60, "download of the late study")
    late_took = time.monotonic() - t1
    assert late_took < 10, f"the late study waited {late_took:.1f} s behind a hung forward"

    # the hung target is found out (DicomScuTimeout) and its lane goes down;
    # its queued jobs keep their attempts
    h.wait_for(lambda: "lane.down" in d.stderr(), 90, "the forward lane going down")
    jobs = [j for j in f.jobs(ws, env={"AUTORTHANC_ORTHANC_URL": src.url})
            if j["action"] == "forward"]
    assert len(jobs) == 7, f"expected 7 forward jobs, got {jobs}"
    assert all(j["status"] == "pending" for j in jobs), jobs
    assert all(j["attempts"] == 0 for j in jobs), \
        f"a dead destination must not use up attempts: {[(j['id'], j['attempts']) for j in jobs]}"
    downs = f.events(d.stderr(), "lane.down")
    assert len(downs) == 1, f"the lane went down once, not per job: {downs}"

    # a real PACS takes the port: every queued forward arrives
    port = listener.port
    listener.close()
    dest = t.orthanc("HUNGPACS", extra_config={"DicomPort": port})
    want = sorted(i for s in studies + [late] for i in s["instances"])
    h.wait_for(lambda: len(dest.get("/instances")) == len(want), 120,
               "every queued forward arriving at the revived destination")
    got = sorted(dest.get("/instances"))
    assert got == want, f"{len(got)} of {len(want)} instances arrived"
    h.wait_for(lambda: "lane.up" in d.stderr(), 30, "the lane coming up")
    jobs = [j for j in f.jobs(ws, env={"AUTORTHANC_ORTHANC_URL": src.url})
            if j["action"] == "forward"]
    h.wait_for(lambda: all(j["status"] == "done" for j in
                           f.jobs(ws, env={"AUTORTHANC_ORTHANC_URL": src.url})
                           if j["action"] == "forward"), 30, "forward jobs done")
    assert d.stop() == 0, h.tail(d.stderr())


def test_study_too_big_for_the_memory_cap_is_a_failed_decision(t):
    o = t.orthanc("PIPEMEM", dicom=False)
    ws = t.workspace(o)
    ws.rule("keep", tags=[("StudyDescription", "Study", "pipe")])
    big = o.create_study("PB01", "PIPE^BIG", "1",
                         [{"SeriesNumber": str(n), "SeriesDate": "20241201", "instances": 50}
                          for n in range(1, 21)],
                         study_tags={"StudyDescription": "PIPE BIG"})
    o.wait_stable(big["study"])
    smalls = [small_study(o, f"PS{k:02d}", "PIPE SMALL", seed=k) for k in (1, 2)]
    for s in smalls:
        o.wait_stable(s["study"])
    env = {"AUTORTHANC_RULE_MEMORY_MB": os.environ.get("AR_TEST_SMALL_CAP_MB", "1"),
           "AUTORTHANC_LOG_FORMAT": "json"}
    r = ws.run_once(env=env, expect_rc=1)
    for k, s in zip((1, 2), smalls):
        h.assert_tree_matches(o, ws.storage, h.expected_files(
            o, s["study"], f"keep/PS{k:02d}-PIPE-EX{k:02d}"), exact=False)
    assert not os.path.exists(ws.path("keep", "PB01-PIPE-EX1")), "the big study was exported?"
    failed = [j for j in f.jobs(ws) if j["status"] == "failed"]
    assert len(failed) == 1 and failed[0]["action"] == "decide", f"failed jobs: {failed}"
    assert "rule_memory_mb" in failed[0]["detail"], failed[0]
    r2 = ws.run(["jobs", "--failed"], expect_rc=0)
    assert big["study"] in r2.stdout, r2.stdout
    # the log moved on: a second run does not stumble over it again
    r3 = ws.run_once(env=env, expect_rc=0)
    assert not f.events(r3.stderr, "study.undecided"), h.tail(r3.stderr)
    # with room, `retry` brings it back
    ws.run(["retry", str(failed[0]["id"])], expect_rc=0)
    ws.run_once(env={"AUTORTHANC_RULE_MEMORY_MB": "64"}, expect_rc=0)
    h.assert_tree_matches(o, ws.storage, h.expected_files(o, big["study"], "keep/PB01-PIPE-EX1"),
                          exact=False)


HOOK_RULE = r"""
return {
  check_on = "study",
  action = "download",
  match = function(study) return contains(study.tags.StudyDescription, "pipe") end,
  name = function(study) return study.patient.PatientID end,
  on_exported = function(study, path)
    local want = "/" .. study.patient.PatientID
    if path:sub(-#want) == want then
      print("HOOK-OK " .. study.patient.PatientID)
    else
      print("HOOK-MISMATCH study=" .. study.patient.PatientID .. " path=" .. path)
    end
  end,
}
"""


def test_hooks_get_their_own_study(t):
    o = t.orthanc("PIPEHOOK", dicom=False)
    ws = t.workspace(o)
    ws.write("hooked.lua", HOOK_RULE)
    sizes = [12, 1, 6, 2, 9, 1]
    studies = []
    for k, n in enumerate(sizes, 1):
        s = o.create_study(f"PH{k:02d}", "PIPE^HOOK", str(k),
                           [{"SeriesNumber": "1", "SeriesDate": "20241201", "instances": n,
                             "content": h.png_data_uri(64, 64, seed=k)}],
                           study_tags={"StudyDescription": "PIPE HOOK"})
        studies.append(s)
    for s in studies:
        o.wait_stable(s["study"])
    r = ws.run_once(env={"AUTORTHANC_MAX_PARALLEL_EXPORTS": "2"}, expect_rc=0)
    assert "HOOK-MISMATCH" not in r.stderr, h.tail(r.stderr)
    oks = sorted(line.split("HOOK-OK ")[1].split()[0].strip('"')
                 for line in r.stderr.splitlines() if "HOOK-OK " in line)
    assert oks == [f"PH{k:02d}" for k in range(1, 7)], f"hooks ran for {oks}"
    assert "is not part of study" not in r.stderr, h.tail(r.stderr)


def test_one_refusal_does_not_lose_a_study(t):
    o = t.orthanc("PIPE429", dicom=False)
    ws = t.workspace(o)
    ws.rule("keep", tags=[("StudyDescription", "Study", "pipe")])
    s = small_study(o, "PR01", "PIPE REFUSED")
    o.wait_stable(s["study"])
    proxy = f.FaultProxy(o.url).start()
    t.defer(proxy.stop)
    proxy.add(rf"/studies/{s['study']}/instances", "status", times=1, status=429,
              body=json.dumps({"Message": "slow down"}))
    ws.run_once(env={"AUTORTHANC_ORTHANC_URL": proxy.url, "AUTORTHANC_RETRY_INITIAL": "0.1"},
                expect_rc=0)
    h.assert_tree_matches(o, ws.storage, h.expected_files(o, s["study"], "keep/PR01-PIPE-EX01"))
    assert proxy.count(rf"/studies/{s['study']}/instances", fault="status") == 1


if __name__ == "__main__":
    h.main()
