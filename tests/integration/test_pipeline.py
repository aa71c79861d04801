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
  - test_restart_while_forward_runs_sends_once: kill -9 right after Orthanc
    took a forward: the next daemon looks at the same Orthanc job (one store
    job in Orthanc) and records it done.
  - test_trickling_file_is_cut_and_others_pass: a file sent at 2 bytes/s with
    the right Content-Length is cut by the low-speed limit and retried, and a
    study arriving meanwhile is exported at once.
  - test_instance_deleted_mid_export_keeps_the_rest: an instance deleted just
    before its file is fetched: the study is read again and its remaining
    instances are exported.
  - test_forward_timeout_gives_up_on_a_hung_store: a store job Orthanc keeps
    running (a PACS that never answers, DicomScuTimeout 120 s) is cancelled
    after forward_timeout and counted as a failed attempt.
  - test_waiting_for_a_study_costs_a_bounded_number_of_requests: Orthanc's
    StableAge 6 behind a counting proxy, a 10-series study: the arrivals cost
    at most one look each, not one per series per cycle.
  - test_equal_stable_ages_export_each_study_once: 40 studies, StableAge and
    stable_age both 10 s (the compose default shape): each exported once.
"""

import json
import os
import signal
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
    # status says so (the daemon writes its lane table each cycle)
    h.wait_for(lambda: "modality:HUNG: DOWN since" in ws.run(
        ["status"], env={"AUTORTHANC_ORTHANC_URL": src.url}).stdout, 10, "status showing the lane")
    st = json.loads(ws.run(["status", "--json"], env={"AUTORTHANC_ORTHANC_URL": src.url}).stdout)
    lane = [x for x in st["lanes"] if x["name"] == "modality:HUNG"]
    assert lane and lane[0]["state"] == "down" and lane[0]["waiting"] == 7, st["lanes"]

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
                         # main instance tags the snapshot keeps (Orthanc keeps
                         # up to 256 bytes of each): 1,000 instances need ~1 MB
                         [{"SeriesNumber": str(n), "SeriesDate": "20241201", "instances": 50,
                           "instance_tags": lambda i: {"ImageComments": "c" * 250,
                                                       "ImagePositionPatient": "\\".join(["1.5"] * 60),
                                                       "ImageOrientationPatient": "\\".join(["0.5"] * 60)}}
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


def test_restart_while_forward_runs_sends_once(t):
    dest = t.orthanc("PIPEDEST")
    src = t.orthanc("PIPEFSRC", dicom=False,
                    modalities={"DEST": [dest.aet, "127.0.0.1", dest.dicom_port]})
    ws = t.workspace(src)
    ws.rule("send", action="FORWARD", destination="DEST",
            tags=[("StudyDescription", "Study", "pipe")])
    s = small_study(src, "PF01", "PIPE FORWARD", n=30)
    src.wait_stable(s["study"])
    env = ws.env(AUTORTHANC_LOG_FORMAT="json", AUTORTHANC_LOG_LEVEL="debug")
    d = t.daemon(["run"], env=env)
    # killed the moment Orthanc has the forward (its job id is in the ledger)
    h.wait_for(lambda: "forward.submitted" in d.stderr(), 30, "the forward handed to Orthanc",
               interval=0.005)
    d.stop(signal.SIGKILL)
    d2 = t.daemon(["run"], env=env)
    h.wait_for(lambda: [j["status"] for j in f.jobs(ws)] == ["done"], 60,
               "the forward recorded done after the restart")
    assert d2.stop() == 0, h.tail(d2.stderr())
    stores = [j for j in (src.get(f"/jobs/{i}") for i in src.get("/jobs"))
              if j.get("Type") == "DicomModalityStore"]
    assert len(stores) == 1, f"{len(stores)} store jobs in Orthanc: the restart sent again"
    assert "forward.submitted" not in d2.stderr(), "the second daemon submitted the forward again"
    assert sorted(dest.get("/instances")) == sorted(s["instances"])


def test_trickling_file_is_cut_and_others_pass(t):
    o = t.orthanc("PIPESLOW", dicom=False)
    ws = t.workspace(o)
    ws.rule("keep", tags=[("StudyDescription", "Study", "pipe")])
    slow = small_study(o, "PT01", "PIPE SLOW", n=3, seed=3)
    o.wait_stable(slow["study"])
    proxy = f.FaultProxy(o.url).start()
    t.defer(proxy.stop)
    # the right Content-Length, then 2 bytes/s: only a low-speed limit ends it
    proxy.add(rf"/instances/{slow['instances'][0]}/file", "slow", times=1, rate=2)
    env = ws.env(AUTORTHANC_LOG_FORMAT="json", AUTORTHANC_ORTHANC_URL=proxy.url,
                 AUTORTHANC_LOW_SPEED_TIME="3", AUTORTHANC_RETRY_INITIAL="0.5",
                 AUTORTHANC_POLL_INTERVAL="0.2")
    d = t.daemon(["run"], env=env)
    h.wait_for(lambda: proxy.count(rf"/instances/{slow['instances'][0]}/file", fault="slow"),
               30, "the trickling transfer")
    other = small_study(o, "PT02", "PIPE OTHER", seed=4)
    o.wait_stable(other["study"])
    t0 = time.monotonic()
    h.wait_for(lambda: os.path.isdir(ws.path("keep", "PT02-PIPE-EX02")), 30,
               "the study that arrived while a file trickled")
    took = time.monotonic() - t0
    assert took < 10, f"a study waited {took:.1f} s behind a trickling transfer"
    h.wait_for(lambda: os.path.isdir(ws.path("keep", "PT01-PIPE-EX01")), 60,
               "the trickled study, cut and retried")
    assert d.stop() == 0, h.tail(d.stderr())
    h.assert_tree_matches(o, ws.storage, h.expected_files(o, slow["study"], "keep/PT01-PIPE-EX01"),
                          exact=False)
    failed = f.events(d.stderr(), "job.failed")
    assert len(failed) == 1, f"one cut transfer, one failed attempt: {failed}"


def test_instance_deleted_mid_export_keeps_the_rest(t):
    o = t.orthanc("PIPEDEL", dicom=False)
    ws = t.workspace(o)
    ws.rule("keep", tags=[("StudyDescription", "Study", "pipe")])
    s = small_study(o, "PD01", "PIPE DELETE", n=4)
    o.wait_stable(s["study"])
    victim = s["instances"][1]
    proxy = f.FaultProxy(o.url).start()
    t.defer(proxy.stop)
    proxy.add(rf"/instances/{victim}/file", "hook", times=1,
              fn=lambda method, path: o.delete(f"/instances/{victim}"))
    r = ws.run_once(env={"AUTORTHANC_ORTHANC_URL": proxy.url, "AUTORTHANC_LOG_FORMAT": "json"},
                    expect_rc=0)
    assert f.events(r.stderr, "export.reread"), h.tail(r.stderr)
    want = h.expected_files(o, s["study"], "keep/PD01-PIPE-EX01")
    assert len(want) == 3, f"the study should hold 3 instances now, not {len(want)}"
    h.assert_tree_matches(o, ws.storage, want)
    assert [j["status"] for j in f.jobs(ws)] == ["done"]


def test_forward_timeout_gives_up_on_a_hung_store(t):
    listener = SilentListener()
    t.defer(listener.close)
    src = t.orthanc("PIPEFTO", dicom=False,
                    modalities={"HUNG": ["HUNGPACS", "127.0.0.1", listener.port]},
                    extra_config={"DicomScuTimeout": 120})
    ws = t.workspace(src)
    ws.rule("send", action="FORWARD", destination="HUNG",
            tags=[("StudyDescription", "Study", "pipe")])
    s = small_study(src, "PO01", "PIPE TIMEOUT")
    src.wait_stable(s["study"])
    t0 = time.monotonic()
    r = ws.run_once(env={"AUTORTHANC_FORWARD_TIMEOUT": "3", "AUTORTHANC_LOG_FORMAT": "json",
                         "AUTORTHANC_LOG_LEVEL": "debug"},
                    expect_rc=1, timeout=100)
    took = time.monotonic() - t0
    assert took < 60, f"the forward was given up after {took:.0f} s, not forward_timeout's 3 s"
    failed = [f.message(e) for e in f.events(r.stderr, "job.failed")]
    assert any("forward_timeout" in m and "HUNG" in m for m in failed), failed
    jobs = f.jobs(ws)
    assert len(jobs) == 1 and jobs[0]["status"] == "pending" and jobs[0]["attempts"] == 1, jobs


def watched(ws):
    """Arrivals the daemon still watches (its ledger, read on the side)."""
    import sqlite3
    db = sqlite3.connect(os.path.join(ws.state, "autorthanc.sqlite"), timeout=10)
    try:
        return db.execute("SELECT count(*) FROM watch").fetchone()[0]
    finally:
        db.close()


def test_waiting_for_a_study_costs_a_bounded_number_of_requests(t):
    o = t.orthanc("PIPEWAIT", dicom=False, extra_config={"StableAge": 6})
    proxy = t.proxy(o)
    ws = t.workspace(o)
    ws.rule("keep", tags=[("StudyDescription", "Study", "pipe")])
    ws.rule("perseries", check_on="Series", tags=[("StudyDescription", "Study", "pipe")])
    env = ws.env(AUTORTHANC_ORTHANC_URL=proxy.url, AUTORTHANC_STABLE_AGE="6",
                 AUTORTHANC_POLL_INTERVAL="0.2", AUTORTHANC_LOG_FORMAT="json")
    d = t.daemon(["run"], env=env)
    s = o.create_study("PW01", "PIPE^WAIT", "1",
                       [{"SeriesNumber": str(n), "SeriesDate": "20241201", "instances": 1}
                        for n in range(1, 11)],
                       study_tags={"StudyDescription": "PIPE WAIT"})
    h.wait_for(lambda: os.path.isdir(ws.path("keep", "PW01-PIPE-EX1")) and
               len(os.listdir(ws.path("perseries"))) == 10 if os.path.isdir(ws.path("perseries"))
               else False, 60, "the study and its 10 series exported")
    h.wait_for(lambda: watched(ws) == 0, 30, "no arrival left to watch")
    assert d.stop() == 0, h.tail(d.stderr())
    ids = {s["study"]} | {x["id"] for x in s["series"]}
    reqs = [(m, p) for m, p in proxy.take()
            if any(i in p for i in ids) and not p.endswith("/file")]
    # decisions: 3 for the study + 3 per series change at most; plans: 3 per
    # job; arrivals: at most one look each at the study and its 10 series
    # (once per cycle per series, 30 cycles, before: 300+)
    arrival_looks = [p for m, p in reqs if m == "GET" and p.split("?")[0] in
                     {f"/studies/{s['study']}"} | {f"/series/{x['id']}" for x in s["series"]}]
    print(f"# waiting for a 10-series study: {len(reqs)} requests naming it "
          f"({len(arrival_looks)} GET /studies|/series/<id>)")
    assert len(arrival_looks) <= 22, \
        f"{len(arrival_looks)} looks at the arriving study and series: {arrival_looks[:12]}"
    assert not f.events(d.stderr(), "stable.unlogged")


def test_equal_stable_ages_export_each_study_once(t):
    o = t.orthanc("PIPEONCE", dicom=False, extra_config={"StableAge": 10})
    ws = t.workspace(o)
    ws.rule("keep", tags=[("StudyDescription", "Study", "pipe")])
    env = ws.env(AUTORTHANC_STABLE_AGE="10", AUTORTHANC_POLL_INTERVAL="0.2",
                 AUTORTHANC_LOG_FORMAT="json")
    d = t.daemon(["run"], env=env)
    studies = [small_study(o, f"PE{k:02d}", "PIPE ONCE", n=1, seed=k) for k in range(1, 41)]
    h.wait_for(lambda: os.path.isdir(ws.path("keep")) and
               len(os.listdir(ws.path("keep"))) >= 40, 120, "40 exports")
    h.wait_for(lambda: watched(ws) == 0, 60, "no arrival left to watch")
    assert d.stop() == 0, h.tail(d.stderr())
    # (a decision job may show up when Orthanc, busy storing, answers slowly)
    jobs = [j for j in f.jobs(ws) if j["action"] == "download"]
    assert len(jobs) == 40 and all(j["status"] == "done" for j in jobs), \
        f"{len(jobs)} jobs for 40 studies (a second export each time the fallback fires)"
    assert sorted(os.listdir(ws.path("keep"))) == sorted(
        f"PE{k:02d}-PIPE-EX{k:02d}" for k in range(1, 41))
    assert not f.events(d.stderr(), "stable.unlogged"), "the fallback acted on a logged study"
    assert len(studies) == 40


if __name__ == "__main__":
    h.main()
