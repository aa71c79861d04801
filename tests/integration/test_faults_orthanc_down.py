#!/usr/bin/env python3
"""test_faults_orthanc_down.py - issue 6: Orthanc unreachable or restarted.

The daemon (`autorthanc run`, poll interval 0.2 s) must log an outage once,
not once per poll (about 50 polls fail in 10 s), keep its position, and
resume by itself when Orthanc answers again on the same port with the same
storage and index: every export complete and byte-exact, one job per stable
change, nothing failed for good.

  - test_orthanc_crash_mid_export: Orthanc is killed (SIGKILL) while a
    transfer is running (a .WORKING folder exists), stays down >= 10 s, and
    is started again;
  - test_orthanc_stopped_while_idle: Orthanc is stopped cleanly (SIGTERM)
    while the daemon has nothing to do, stays down >= 10 s, is started again,
    and a study that arrives afterwards is exported;
  - test_outage_costs_pending_jobs_no_attempt: the jobs waiting behind the
    one in flight are not each tried against the dead server;
  - test_orthanc_new_database: Orthanc comes back with an empty database
    (its change log restarts below our position): said once, started over;
  - test_orthanc_restart_mid_arrival: a study still arriving when Orthanc
    restarts never gets a StableStudy change; the daemon exports it anyway.
"""

import os
import shutil
import sys
import time

sys.path.insert(0, os.path.join(os.environ.get("AR_SOURCE_DIR", os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "..", "..")), "tests", "lib"))
import harness as h  # noqa: E402
import faults as f  # noqa: E402

OUTAGE = 10.0


def make_study(o, k, n, seed):
    return o.create_study(f"P{k}", "DOWN^TIME", str(k),
                          [{"SeriesNumber": "1", "SeriesDate": "20240301", "instances": n,
                            "content": h.png_data_uri(512, 512, seed=seed)}],
                          study_tags={"StudyDescription": "OUTAGE"})


def expected_tree(o, studies):
    out = {}
    for k, s in studies:
        out.update(h.expected_files(o, s["study"], f"all/P{k}-DOWN-EX{k}"))
    return out


def complete(o, ws, studies):
    try:
        h.assert_tree_matches(o, ws.storage, expected_tree(o, studies))
        return True
    except AssertionError:
        return False


def hold_outage(d, since):
    """Keep Orthanc down until the daemon has noticed (an orthanc.unreachable
    line) and OUTAGE seconds have passed since `since` (the outage itself is
    the injected fault)."""
    h.wait_for(lambda: f.events(d.stderr(), "orthanc.unreachable"), OUTAGE + 20,
               "the daemon to log orthanc.unreachable")
    left = since + OUTAGE - time.monotonic()
    if left > 0:
        time.sleep(left)


def check_outage_logged_once(d):
    err = d.stderr()
    down = f.events(err, "orthanc.unreachable")
    back = f.events(err, "orthanc.back")
    assert len(down) == 1, (f"outage logged {len(down)} times (once expected):\n"
                            + "\n".join(f.message(e) for e in down[:5]))
    assert len(back) == 1, f"recovery logged {len(back)} times (once expected)"
    return err


def test_orthanc_crash_mid_export(t):
    o = t.orthanc("DOWNMID", dicom=False)
    ws = t.workspace(o)
    ws.rule("all", tags=[("StudyDescription", "Study", "outage")])
    studies = [(k, make_study(o, k, 40, seed=k)) for k in range(1, 7)]
    for _k, s in studies:
        o.wait_stable(s["study"])
    env = ws.env(AUTORTHANC_LOG_FORMAT="json", AUTORTHANC_RETRY_INITIAL="1",
                 AUTORTHANC_RETRY_MAX="2")
    d = t.daemon(["run"], env=env, cwd=ws.root)

    def working():
        if not d.alive():
            raise AssertionError(f"daemon exited {d.proc.returncode}:\n{h.tail(d.stderr())}")
        return f.working_left(ws.storage)
    h.wait_for(working, 30, "the first transfer (.WORKING folder)", interval=0.002)
    f.kill_orthanc(o)
    down_at = time.monotonic()
    done_before = len(f.events(d.stderr(), "export.done"))
    hold_outage(d, down_at)
    assert d.alive(), f"daemon died during the outage:\n{h.tail(d.stderr())}"
    f.start_orthanc_again(o)

    def finished():
        if not d.alive():
            raise AssertionError(f"daemon exited {d.proc.returncode}:\n{h.tail(d.stderr())}")
        return len(f.events(d.stderr(), "export.done")) >= len(studies) and \
            complete(o, ws, studies)
    h.wait_for(finished, 90, "every study exported after Orthanc came back")
    print(f"# exports finished before the crash: {done_before} of {len(studies)}", flush=True)
    assert done_before < len(studies), "Orthanc went down only after all exports"
    err = check_outage_logged_once(d)
    failed = f.events(err, "job.failed")
    for_good = [e for e in failed if "for good" in f.message(e)]
    assert not for_good, f"jobs failed for good because Orthanc was down: {for_good}"
    print(f"# job.failed lines during the outage: {len(failed)}", flush=True)
    rc = d.stop()
    assert rc == 0, f"SIGTERM: exit {rc}"
    h.assert_tree_matches(o, ws.storage, expected_tree(o, studies))
    jobs = f.jobs(ws)
    assert len(jobs) == len(studies) and all(j["status"] == "done" for j in jobs), \
        f"ledger after the outage: {jobs}"


def test_outage_costs_pending_jobs_no_attempt(t):
    """Orthanc crashes during the first of six exports.  The jobs in flight
    (one per export slot: max_parallel_exports=2) fail once each; the jobs still waiting must not each be
    tried against the dead server, logged as failed and charged an attempt:
    a backlog of N jobs would print N errors per outage, and a few outages
    would use up every job's retry budget without a single real failure."""
    o = t.orthanc("DOWNBURST", dicom=False)
    ws = t.workspace(o)
    ws.rule("all", tags=[("StudyDescription", "Study", "outage")])
    studies = [(k, make_study(o, k, 40, seed=k)) for k in range(1, 7)]
    for _k, s in studies:
        o.wait_stable(s["study"])
    slots = 2
    env = ws.env(AUTORTHANC_LOG_FORMAT="json", AUTORTHANC_RETRY_INITIAL="1",
                 AUTORTHANC_RETRY_MAX="2", AUTORTHANC_MAX_PARALLEL_EXPORTS=str(slots))
    d = t.daemon(["run"], env=env, cwd=ws.root)
    h.wait_for(lambda: f.working_left(ws.storage), 30, "the first transfer", interval=0.002)
    f.kill_orthanc(o)
    down_at = time.monotonic()
    hold_outage(d, down_at)
    f.start_orthanc_again(o)
    h.wait_for(lambda: complete(o, ws, studies), 90, "every study exported")
    d.stop()
    err = d.stderr()
    first_down = next(i for i, e in enumerate(f.events(err))
                      if e.get("event") == "orthanc.unreachable")
    burst = [e for e in f.events(err)[:first_down + 1] if e.get("event") == "job.failed"]
    jobs = f.jobs(ws)
    charged = sum(j["attempts"] for j in jobs)
    assert len(burst) <= slots and charged <= slots, (
        f"one outage cost {len(burst)} job.failed lines and {charged} attempts in all "
        f"(at most one per export slot, {slots}, expected): "
        + "; ".join(f.message(e)[:120] for e in burst[:3]))


def test_orthanc_stopped_while_idle(t):
    o = t.orthanc("DOWNIDLE", dicom=False)
    ws = t.workspace(o)
    ws.rule("all", tags=[("StudyDescription", "Study", "outage")])
    first = make_study(o, 1, 5, seed=1)
    o.wait_stable(first["study"])
    env = ws.env(AUTORTHANC_LOG_FORMAT="json")
    d = t.daemon(["run"], env=env, cwd=ws.root)
    h.wait_for(lambda: complete(o, ws, [(1, first)]), 30, "the first study exported")
    f.stop_orthanc(o)
    down_at = time.monotonic()
    hold_outage(d, down_at)
    assert d.alive(), f"daemon died during the outage:\n{h.tail(d.stderr())}"
    f.start_orthanc_again(o)
    h.wait_for(lambda: f.events(d.stderr(), "orthanc.back"), 30,
               "the daemon to notice Orthanc is back")
    second = make_study(o, 2, 5, seed=2)
    o.wait_stable(second["study"])
    h.wait_for(lambda: complete(o, ws, [(1, first), (2, second)]), 30,
               "the study that arrived after the restart to be exported")
    check_outage_logged_once(d)
    rc = d.stop()
    assert rc == 0, f"SIGTERM: exit {rc}"
    jobs = f.jobs(ws)
    assert [j["status"] for j in jobs] == ["done", "done"], f"ledger: {jobs}"


def test_orthanc_new_database(t):
    """Orthanc comes back with a new, empty database on the same port: its
    change log restarts below the daemon's position.  The daemon says so
    (orthanc.reset, once), starts over from the new log and exports what
    arrives there."""
    o = t.orthanc("NEWDB", dicom=False)
    ws = t.workspace(o)
    ws.rule("all", tags=[("StudyDescription", "Study", "outage")])
    first = make_study(o, 1, 12, seed=1)
    o.wait_stable(first["study"])
    d = t.daemon(["run"], env=ws.env(AUTORTHANC_LOG_FORMAT="json"), cwd=ws.root)
    h.wait_for(lambda: complete(o, ws, [(1, first)]), 30, "the first study exported")
    old_last = o.last_change()
    f.stop_orthanc(o)
    for sub in ("index", "storage"):
        shutil.rmtree(os.path.join(o.tmpdir, sub), ignore_errors=True)
    o._file_cache.clear()
    f.start_orthanc_again(o)
    second = make_study(o, 2, 1, seed=2)
    o.wait_stable(second["study"])
    assert o.last_change() < old_last, "the new log is not shorter than the old one"

    def exported_second():
        if not d.alive():
            raise AssertionError(f"daemon exited {d.proc.returncode}:\n{h.tail(d.stderr())}")
        try:
            h.assert_tree_matches(o, ws.storage, h.expected_files(o, second["study"],
                                                                  "all/P2-DOWN-EX2"),
                                  exact=False)
            return True
        except AssertionError:
            return False
    try:
        h.wait_for(exported_second, 30, "the study of the new database to be exported")
    except h.HarnessError as e:
        raise AssertionError(f"{e}\ndaemon stderr:\n{h.tail(d.stderr())}") from None
    resets = f.events(d.stderr(), "orthanc.reset")
    assert len(resets) == 1, f"{len(resets)} orthanc.reset lines (once expected)"
    assert d.stop() == 0


def test_orthanc_restart_mid_arrival(t):
    """Orthanc keeps its stability timers in memory: a study still arriving
    when it restarts never gets a StableStudy change.  The daemon notices the
    arrival it saw (NewStudy/NewSeries) that never became stable in the log,
    and exports it once Orthanc says IsStable (or it is older than
    stable_age)."""
    o = t.orthanc("MIDARRIVAL", dicom=False, extra_config={"StableAge": 10})
    ws = t.workspace(o)
    ws.rule("all", tags=[("StudyDescription", "Study", "outage")])
    env = ws.env(AUTORTHANC_LOG_FORMAT="json", AUTORTHANC_STABLE_AGE="2")
    d = t.daemon(["run"], env=env, cwd=ws.root)
    s = make_study(o, 3, 6, seed=3)
    # the daemon saw the arrival (the study's NewStudy change is behind its position)
    h.wait_for(lambda: any(c["ChangeType"] == "NewStudy" and c["ID"] == s["study"]
                           for c in o.changes(0)), 10, "NewStudy in the log")
    f.stop_orthanc(o)  # well before StableAge: the timer dies with Orthanc
    f.start_orthanc_again(o)
    assert not [c for c in o.changes(0) if c["ChangeType"] == "StableStudy"], \
        "Orthanc logged the study stable before its restart: nothing to catch up"

    def exported():
        if not d.alive():
            raise AssertionError(f"daemon exited {d.proc.returncode}:\n{h.tail(d.stderr())}")
        return complete(o, ws, [(3, s)])
    try:
        h.wait_for(exported, 40, "the study Orthanc never logged stable to be exported")
    except h.HarnessError as e:
        raise AssertionError(f"{e}\ndaemon stderr:\n{h.tail(d.stderr())}") from None
    assert not [c for c in o.changes(0) if c["ChangeType"] == "StableStudy"], \
        "Orthanc logged StableStudy after all: the catch-up path was not what exported it"
    assert f.events(d.stderr(), "stable.unlogged"), "no stable.unlogged line"
    assert d.stop() == 0
    jobs = f.jobs(ws)
    assert [j["status"] for j in jobs] == ["done"], f"one job expected: {jobs}"


if __name__ == "__main__":
    h.main()
