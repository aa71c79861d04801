#!/usr/bin/env python3
"""test_faults_deleted.py - issue 6: a study deleted between "stable" and its
export ends as "gone", leaves no folder (and no .WORKING), does not fail the
run (exit 0), and does not stop the other studies.

Three moments of deletion:
  - before the daemon ever looks at the study (DELETE before `run --once`);
  - after the rules decided (the jobs are in the ledger, as `autorthanc jobs`
    shows) and before the export starts: a FaultProxy hook deletes the study
    in Orthanc when a job fetches it to plan its export;
  - in the middle of the transfer (a hook on the 4th file request), once for
    a first export and once for the re-export of a study that was exported
    before, whose old complete folder must stay untouched.
"""

import os
import sys

sys.path.insert(0, os.path.join(os.environ.get("AR_SOURCE_DIR", os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "..", "..")), "tests", "lib"))
import harness as h  # noqa: E402
import faults as f  # noqa: E402


def two_studies(o, n=6):
    content = h.png_data_uri(128, 128, seed=11)
    gone = o.create_study("PGONE", "GONE^SOON", "1",
                          [{"SeriesNumber": "1", "SeriesDate": "20240201", "instances": n,
                            "content": content}],
                          study_tags={"StudyDescription": "DELETE ME"})
    kept = o.create_study("PKEPT", "KEPT^HERE", "2",
                          [{"SeriesNumber": "1", "SeriesDate": "20240202", "instances": n,
                            "content": content}],
                          study_tags={"StudyDescription": "DELETE ME NOT"})
    o.wait_stable(gone["study"])
    o.wait_stable(kept["study"])
    return gone, kept


def env_for(ws, url=None):
    extra = {"AUTORTHANC_LOG_FORMAT": "json"}
    if url:
        extra["AUTORTHANC_ORTHANC_URL"] = url
    return extra


def assert_kept_only(o, ws, kept, rules=("all",)):
    expected = {}
    for rule in rules:
        expected.update(h.expected_files(o, kept["study"], f"{rule}/PKEPT-KEPT-EX2"))
    h.assert_tree_matches(o, ws.storage, expected)  # exact: nothing of PGONE, no .WORKING


def test_deleted_before_the_daemon_looks(t):
    o = t.orthanc("DELBEFORE", dicom=False)
    ws = t.workspace(o)
    ws.rule("all", tags=[("StudyDescription", "Study", "delete me")])
    gone, kept = two_studies(o)
    o.delete(f"/studies/{gone['study']}")
    r = ws.run(["run", "--once"], env=env_for(ws))
    assert r.rc == 0, f"run --once exited {r.rc}:\n{h.tail(r.stderr)}"
    assert_kept_only(o, ws, kept)
    assert not os.path.exists(ws.path("all", "PGONE-GONE-EX1"))
    jobs = f.jobs(ws)
    mine = [j for j in jobs if j["resource"] == gone["study"]]
    assert all(j["status"] == "gone" for j in mine), f"jobs of the deleted study: {mine}"
    others = [j for j in jobs if j["resource"] == kept["study"]]
    assert [j["status"] for j in others] == ["done"], f"jobs of the kept study: {others}"
    errors = [e for e in f.events(r.stderr) if e.get("level") == "error"]
    assert not errors, f"errors logged for a deleted study: {errors}"


def test_deleted_after_the_decision(t):
    o = t.orthanc("DELAFTER", dicom=False)
    ws = t.workspace(o)
    ws.rule("all", tags=[("StudyDescription", "Study", "delete me")])
    ws.rule("perseries", check_on="Series", tags=[("StudyDescription", "Study", "delete me")])
    gone, kept = two_studies(o)
    mine_ids = {gone["study"]} | {s["id"] for s in gone["series"]}
    deleted = []

    def delete_once_jobs_are_recorded(method, path):
        # the decisions fetch /studies/<id> too; delete only once the ledger
        # holds the study's jobs, i.e. when a job fetches it to plan its export
        if deleted or not any(j["resource"] in mine_ids for j in f.jobs(ws)):
            return
        o.delete(f"/studies/{gone['study']}")
        deleted.append(path)

    with f.FaultProxy(o.url) as proxy:
        proxy.add(f"/studies/{gone['study']}", "hook", fn=delete_once_jobs_are_recorded)
        r = ws.run(["run", "--once"], env=env_for(ws, proxy.url))
    assert deleted, ("no job fetched the study after the decision (the proxy saw "
                     f"{proxy.count('/studies/.*')} study requests)")
    assert r.rc == 0, f"run --once exited {r.rc}:\n{h.tail(r.stderr)}"
    expected = h.expected_files(o, kept["study"], "all/PKEPT-KEPT-EX2")
    expected.update(h.expected_files(o, kept["study"], "perseries/PKEPT-KEPT-EX2-SE1"))
    h.assert_tree_matches(o, ws.storage, expected)
    jobs = f.jobs(ws)
    mine = [j for j in jobs if j["resource"] in mine_ids]
    assert len(mine) == 2, f"expected a study job and a series job for PGONE, got {mine}"
    for j in mine:
        assert j["status"] == "gone", f"job of the deleted study ended {j['status']}: {j}"
    gone_lines = f.events(r.stderr, "job.gone")
    assert len(gone_lines) == 2, f"job.gone lines: {gone_lines}"


def test_deleted_mid_transfer(t):
    o = t.orthanc("DELMID", dicom=False)
    ws = t.workspace(o)
    ws.rule("all", tags=[("StudyDescription", "Study", "delete me")])
    gone, kept = two_studies(o, n=12)
    files = "|".join(gone["instances"])
    with f.FaultProxy(o.url) as proxy:
        hook = proxy.add(f"/instances/({files})/file", "hook", times=1, after=3,
                         fn=lambda m, p: o.delete(f"/studies/{gone['study']}"))
        r = ws.run(["run", "--once"], env=env_for(ws, proxy.url))
    assert hook.hits == 1, "the transfer never reached its 4th file"
    assert r.rc == 0, f"run --once exited {r.rc}:\n{h.tail(r.stderr)}"
    assert_kept_only(o, ws, kept)
    jobs = f.jobs(ws)
    mine = [j for j in jobs if j["resource"] == gone["study"]]
    assert [j["status"] for j in mine] == ["gone"], f"job of the deleted study: {mine}"
    assert "404" in mine[0]["detail"] or "not found" in mine[0]["detail"].lower(), \
        f"the job's error does not say why: {mine[0]['detail']!r}"


def test_deleted_during_reexport_keeps_old_folder(t):
    o = t.orthanc("DELRE", dicom=False)
    ws = t.workspace(o)
    ws.rule("all", tags=[("StudyDescription", "Study", "delete me")])
    gone, kept = two_studies(o, n=8)
    ws.run(["run", "--once"], env=env_for(ws), expect_rc=0)
    folder = "all/PGONE-GONE-EX1"
    old = h.expected_files(o, gone["study"], folder)
    h.assert_tree_matches(o, ws.storage, old, exact=False)
    before = h.snapshot_tree(ws.path(folder))
    seq = o.last_change()
    more = o.create_study("PGONE", "GONE^SOON", "1",
                          [{"SeriesNumber": "1", "SeriesDate": "20240201", "instances": 6,
                            "SeriesInstanceUID": gone["series"][0]["uid"],
                            "first_instance_number": 9,
                            "content": h.png_data_uri(128, 128, seed=12)}],
                          study_tags={"StudyInstanceUID": gone["study_uid"],
                                      "StudyDescription": "DELETE ME"})
    assert more["study"] == gone["study"]
    o.wait_stable(gone["study"], since=seq)
    ids = "|".join(gone["instances"] + more["instances"])
    with f.FaultProxy(o.url) as proxy:
        hook = proxy.add(f"/instances/({ids})/file", "hook", times=1, after=3,
                         fn=lambda m, p: o.delete(f"/studies/{gone['study']}"))
        r = ws.run(["run", "--once"], env=env_for(ws, proxy.url))
    assert hook.hits == 1, "the re-export never reached its 4th file"
    assert r.rc == 0, f"run --once exited {r.rc}:\n{h.tail(r.stderr)}"
    assert not f.working_left(ws.storage), f".WORKING left: {f.working_left(ws.storage)}"
    assert h.snapshot_tree(ws.path(folder)) == before, \
        "the old complete export was changed by the failed re-export"
    jobs = [j for j in f.jobs(ws) if j["resource"] == gone["study"]]
    assert [j["status"] for j in jobs] == ["done", "gone"], f"jobs of PGONE: {jobs}"


if __name__ == "__main__":
    h.main()
