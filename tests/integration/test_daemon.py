#!/usr/bin/env python3
"""test_daemon.py - issue 2, `autorthanc run` without --once: it polls, exports
studies as they become stable, re-reads rule files when they are added,
edited or deleted (no restart), reports a broken rule once (not once per
poll), and stops cleanly with exit 0 on SIGTERM and on SIGINT."""

import os
import signal
import sys

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


if __name__ == "__main__":
    h.main()
