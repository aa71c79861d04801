#!/usr/bin/env python3
"""test_daemon.py - issue 2, `autorthanc run` without --once: it polls, exports
studies as they become stable, re-reads rule files when they are added,
edited or deleted (no restart), reports a broken rule once (not once per
poll), and stops cleanly with exit 0 on SIGTERM and on SIGINT."""

import os
import signal
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.environ.get("AR_SOURCE_DIR", os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "..", "..")), "tests", "lib"))
import harness as h  # noqa: E402


def exported(o, ws, study_id, prefix):
    """True once the study's folder is complete and byte-exact."""
    try:
        h.assert_tree_matches(o, ws.storage, h.expected_files(o, study_id, prefix),
                              exact=False)
        return True
    except AssertionError:
        return False


def wait_exported(d, o, ws, study_id, prefix, timeout=30):
    def ready():
        if not d.alive():
            raise h.HarnessError(f"daemon exited {d.proc.returncode}:\n{h.tail(d.stderr())}")
        return exported(o, ws, study_id, prefix)
    try:
        h.wait_for(ready, timeout, f"{prefix} to be exported")
    except h.HarnessError as e:
        raise AssertionError(f"{e}\ndaemon stderr:\n{h.tail(d.stderr())}") from None


def study(o, pid, desc="DAEMON", n=2):
    return o.create_study(pid, "RUN^NING", "1",
                          [{"SeriesNumber": "1", "SeriesDate": "20241001", "instances": n}],
                          study_tags={"StudyDescription": desc})


def test_daemon_exports_and_stops_on_sigterm(t):
    o = t.orthanc("DAEMON", dicom=False)
    ws = t.workspace(o)
    ws.rule("live", tags=[("StudyDescription", "Study", "daemon")])
    d = t.daemon(["run"], env=ws.env(), cwd=ws.root)
    s1 = study(o, "P60")
    wait_exported(d, o, ws, s1["study"], "live/P60-RUN-EX1")
    s2 = study(o, "P61", n=3)
    wait_exported(d, o, ws, s2["study"], "live/P61-RUN-EX1")
    rc = d.stop(signal.SIGTERM, timeout=10)
    assert rc == 0, f"SIGTERM: exit {rc}:\n{h.tail(d.stderr())}"
    expected = h.expected_files(o, s1["study"], "live/P60-RUN-EX1")
    expected.update(h.expected_files(o, s2["study"], "live/P61-RUN-EX1"))
    h.assert_tree_matches(o, ws.storage, expected)
    # the position was saved: a run --once afterwards does nothing
    snap = h.snapshot_tree(ws.storage)
    ws.run_once()
    assert h.snapshot_tree(ws.storage) == snap


def test_daemon_stops_on_sigint(t):
    o = t.orthanc("DAEMONINT", dicom=False)
    ws = t.workspace(o)
    ws.rule("live", tags=[("StudyDescription", "Study", "daemon")])
    d = t.daemon(["run"], env=ws.env(), cwd=ws.root)
    s = study(o, "P62")
    wait_exported(d, o, ws, s["study"], "live/P62-RUN-EX1")
    rc = d.stop(signal.SIGINT, timeout=10)
    assert rc == 0, f"SIGINT: exit {rc}:\n{h.tail(d.stderr())}"


def test_rules_reloaded_without_restart(t):
    o = t.orthanc("RELOAD", dicom=False)
    ws = t.workspace(o)
    ws.rule("first", tags=[("StudyDescription", "Study", "daemon")])
    d = t.daemon(["run"], env=ws.env(), cwd=ws.root)
    s1 = study(o, "P63")
    wait_exported(d, o, ws, s1["study"], "first/P63-RUN-EX1")

    # add a rule and a broken one; both are noticed before the next study is stable
    ws.rule("second", tags=[("StudyDescription", "Study", "daemon")])
    ws.write("oops", "{ broken")
    s2 = study(o, "P64")
    wait_exported(d, o, ws, s2["study"], "second/P64-RUN-EX1")
    wait_exported(d, o, ws, s2["study"], "first/P64-RUN-EX1")

    # edit: "first" no longer matches; delete: "second" is gone
    ws.rule("first", tags=[("StudyDescription", "Study", "something else")])
    os.remove(os.path.join(ws.rules, "second.json"))
    ws.rule("third", tags=[("StudyDescription", "Study", "daemon")])
    s3 = study(o, "P65")
    wait_exported(d, o, ws, s3["study"], "third/P65-RUN-EX1")
    assert not os.path.exists(ws.path("first", "P65-RUN-EX1")), "edited rule still matched"
    assert not os.path.exists(ws.path("second", "P65-RUN-EX1")), "deleted rule still ran"

    rc = d.stop(signal.SIGTERM, timeout=10)
    assert rc == 0, f"exit {rc}"
    err = d.stderr()
    n = err.count("oops.json")
    # once, or at most once per later change of the rules folder (3 here) -
    # never once per poll (~30 polls happened)
    assert 1 <= n <= 4, f"broken rule reported {n} times:\n{h.tail(err, 60)}"


def test_one_daemon_per_state_folder_and_fire_hands_over(t):
    """A second daemon on the same state folder refuses to start, naming the
    first one's pid (and its start-up clean-up touches nothing); `fire`
    while the daemon runs hands the job to the daemon through the ledger and
    reports its outcome: the study is exported once, complete, and a watcher
    never sees a partial tree under the final name."""
    o = t.orthanc("ONEOWNER", dicom=False)
    ws = t.workspace(o)
    ws.rule("live", tags=[("StudyDescription", "Study", "daemon")])
    ws.rule("push", tags=[("StudyDescription", "Study", "manual")], active=False)
    d = t.daemon(["run"], env=ws.env(), cwd=ws.root)
    lock = os.path.join(ws.state, "autorthanc.lock")

    def holding():
        if not d.alive():
            raise h.HarnessError(f"daemon exited:\n{h.tail(d.stderr())}")
        try:
            with open(lock) as f:
                return f.read().strip() == str(d.proc.pid)
        except FileNotFoundError:
            return False
    h.wait_for(holding, 30, "the daemon to hold its state folder")
    # an export in progress elsewhere in the storage folder: not the second daemon's to remove
    stray = os.path.join(ws.storage, "live", "SOMEONE-ELSE.WORKING")
    os.makedirs(stray)
    r = ws.run(["run", "--once"])
    assert r.rc == 2 and f"another autorthanc (pid {d.proc.pid})" in r.stderr, \
        f"exit {r.rc}:\n{h.tail(r.stderr)}"
    assert os.path.isdir(stray), "the refused daemon cleaned up the storage folder"
    os.rmdir(stray)

    s = study(o, "P66", desc="MANUAL", n=40)
    final = os.path.join(ws.storage, "push", "P66-RUN-EX1")
    seen, stop = [], threading.Event()

    def watch():
        while not stop.is_set():
            if os.path.isdir(final):
                seen.append(sum(len(fs) for _, _, fs in os.walk(final)))
            time.sleep(0.001)
    w = threading.Thread(target=watch, daemon=True)
    w.start()
    r = ws.run(["fire", "--rule", "push", s["study"]], timeout=120)
    stop.set()
    w.join()
    assert r.rc == 0, f"fire: exit {r.rc}:\n{r.stdout}\n{h.tail(r.stderr)}"
    assert f"the daemon (pid {d.proc.pid})" in r.stdout and "done: exported to push/P66-RUN-EX1" in \
        r.stdout, r.stdout
    h.assert_tree_matches(o, ws.storage, h.expected_files(o, s["study"], "push/P66-RUN-EX1"),
                          exact=False)
    assert seen and set(seen) == {40}, f"a partial tree under the final name: {sorted(set(seen))}"
    jobs = [j for j in f_jobs(ws) if j["rule"] == "push"]
    assert [j["status"] for j in jobs] == ["done"], f"the job ran more than once: {jobs}"
    rc = d.stop(signal.SIGTERM, timeout=10)
    assert rc == 0, f"SIGTERM: exit {rc}:\n{h.tail(d.stderr())}"
    # with no daemon, fire runs the job itself (and holds the folder meanwhile)
    s2 = study(o, "P67", desc="MANUAL", n=2)
    r = ws.run(["fire", "--rule", "push", s2["study"]], expect_rc=0)
    assert "handed to it" not in r.stdout, r.stdout
    h.assert_tree_matches(o, ws.storage, h.expected_files(o, s2["study"], "push/P67-RUN-EX1"),
                          exact=False)


def f_jobs(ws):
    import faults
    return faults.jobs(ws)


if __name__ == "__main__":
    h.main()
