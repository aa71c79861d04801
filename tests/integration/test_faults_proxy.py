#!/usr/bin/env python3
"""test_faults_proxy.py - issue 6: a hostile network between autorthanc and
Orthanc, made by tests/lib/faults.py's FaultProxy (loopback, run-time port).

  - a truncated /instances/{id}/file answer (full Content-Length, fewer bytes,
    connection closed) and a short one with a consistent lying Content-Length
    (only the instance's FileSize can catch it): the job fails with a size
    error, nothing is renamed, no .WORKING stays, a later run succeeds;
  - HTTP 500 for the first N requests to a file, to the study, or to
    /changes: retried by the daemon with backoff until it works (the outage
    of /changes logged once);
  - HTTP 403 for a file: not retried (failed for good), `autorthanc retry`
    requeues it and the next run exports it;
  - malformed or hostile JSON for /changes and for a study: no crash (no
    signal, no sanitizer abort, no hang), a clear error, no request built
    from a hostile id, and the work is done once the server behaves;
  - a corrupted file of the right size with verify_md5 on: the job fails
    (issue 6's optional MD5 check, not implemented in the daemon yet).
"""

import os
import sys

sys.path.insert(0, os.path.join(os.environ.get("AR_SOURCE_DIR", os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "..", "..")), "tests", "lib"))
import harness as h  # noqa: E402
import faults as f  # noqa: E402

FOLDER = "all/PNET-PROXY-EX1"
FILES = r"/instances/[^/]+/file"


def setup(t, name, n=5):
    o = t.orthanc(name, dicom=False)
    ws = t.workspace(o)
    ws.rule("all", tags=[("StudyDescription", "Study", "proxy")])
    s = o.create_study("PNET", "PROXY^ME", "1",
                       [{"SeriesNumber": "1", "SeriesDate": "20240501", "instances": n,
                         "content": h.png_data_uri(256, 256, seed=31)}],
                       study_tags={"StudyDescription": "PROXY"})
    o.wait_stable(s["study"])
    proxy = f.FaultProxy(o.url).start()
    t.defer(proxy.stop)
    env = {"AUTORTHANC_LOG_FORMAT": "json", "AUTORTHANC_ORTHANC_URL": proxy.url}
    return o, ws, s, proxy, env


def run_once(ws, env, timeout=60):
    return ws.run(["run", "--once"], env=env, timeout=timeout)


def assert_not_crashed(r, what):
    assert r.rc in (0, 1), f"{what}: exit {r.rc} (a crash or sanitizer abort?):\n" \
                           f"{h.tail(r.stderr)}"
    for bad in ("AddressSanitizer", "runtime error:", "Segmentation", "LeakSanitizer"):
        assert bad not in r.stderr, f"{what}: {bad} in stderr:\n{h.tail(r.stderr)}"


def assert_nothing_exported(ws):
    left = f.working_left(ws.storage)
    assert not left, f".WORKING left: {left}"
    files, _ = h.walk_tree(ws.storage)
    assert not files, f"files exported despite the fault: {files[:3]}"


def assert_exported(o, ws, s):
    h.assert_tree_matches(o, ws.storage, h.expected_files(o, s["study"], FOLDER))


def daemon(t, ws, env, **extra):
    e = ws.env(AUTORTHANC_RETRY_INITIAL="0.3", AUTORTHANC_RETRY_MAX="1", **env)
    e.update(extra)
    return t.daemon(["run"], env=e, cwd=ws.root)


def wait_daemon(d, cond, timeout, what):
    def check():
        if not d.alive():
            raise AssertionError(f"daemon exited {d.proc.returncode}:\n{h.tail(d.stderr())}")
        return cond()
    try:
        return h.wait_for(check, timeout, what)
    except h.HarnessError as e:
        raise AssertionError(f"{e}\ndaemon stderr:\n{h.tail(d.stderr())}") from None


def size_failure_then_success(o, ws, s, proxy, env, kind):
    proxy.add(FILES, kind, times=1, after=2, keep=0.5)
    r = run_once(ws, env)
    assert r.rc == 1, f"{kind}: run --once exited {r.rc}:\n{h.tail(r.stderr)}"
    assert_nothing_exported(ws)  # never renamed
    failed = f.events(r.stderr, "job.failed")
    assert len(failed) == 1, f"job.failed lines: {failed}"
    msg = f.message(failed[0])
    assert "bytes" in msg and ("truncated" in msg or "expected" in msg
                               or "Content-Length" in msg), f"not a size error: {msg!r}"
    jobs = f.jobs(ws)
    assert len(jobs) == 1 and jobs[0]["status"] == "pending", \
        f"a size mismatch is worth a retry (pending): {jobs}"
    proxy.clear()
    r = run_once(ws, env)
    assert r.rc == 0, f"retry exited {r.rc}:\n{h.tail(r.stderr)}"
    assert_exported(o, ws, s)
    assert [j["status"] for j in f.jobs(ws)] == ["done"]
    return msg


def test_truncated_file_fails_with_size_error(t):
    o, ws, s, proxy, env = setup(t, "TRUNC")
    msg = size_failure_then_success(o, ws, s, proxy, env, "truncate")
    assert "truncated" in msg or "Content-Length" in msg, msg


def test_short_file_caught_by_filesize(t):
    o, ws, s, proxy, env = setup(t, "SHORT")
    msg = size_failure_then_success(o, ws, s, proxy, env, "short")
    assert "expected" in msg, f"the FileSize check should name the expected size: {msg!r}"


def test_500_on_a_file_is_retried(t):
    o, ws, s, proxy, env = setup(t, "E500FILE")
    victim = f"/instances/{s['instances'][2]}/file"
    proxy.add(victim, "status", times=2, status=500)
    d = daemon(t, ws, env)
    wait_daemon(d, lambda: f.events(d.stderr(), "export.done"), 30,
                "the export after two 500 answers")
    failed = f.events(d.stderr(), "job.failed")
    assert len(failed) == 2 and all("retrying" in f.message(e) for e in failed), \
        f"expected two failed attempts, each retried: {[f.message(e) for e in failed]}"
    assert proxy.count(victim) >= 3
    assert d.stop() == 0
    assert_exported(o, ws, s)
    jobs = f.jobs(ws)
    assert len(jobs) == 1 and jobs[0]["status"] == "done", jobs


def test_500_in_once_mode_then_next_run(t):
    o, ws, s, proxy, env = setup(t, "E500ONCE")
    proxy.add(FILES, "status", times=1, status=503)
    r = run_once(ws, env)
    assert r.rc == 1, f"exit {r.rc}"
    assert_nothing_exported(ws)
    jobs = f.jobs(ws)
    assert [j["status"] for j in jobs] == ["pending"], f"a 5xx is retried later: {jobs}"
    r = run_once(ws, env)
    assert r.rc == 0, f"exit {r.rc}:\n{h.tail(r.stderr)}"
    assert_exported(o, ws, s)


def test_500_on_the_study_during_decision(t):
    o, ws, s, proxy, env = setup(t, "E500STUDY")
    proxy.add(f"/studies/{s['study']}", "status", times=3, status=500)
    d = daemon(t, ws, env)
    wait_daemon(d, lambda: f.events(d.stderr(), "export.done"), 30,
                "the export after three 500 answers for the study")
    assert d.stop() == 0
    assert_exported(o, ws, s)
    # the change that could not be decided became a decision job, done once
    # the study answered; then its download job
    assert [(j["action"], j["status"]) for j in f.jobs(ws)] == \
        [("decide", "done"), ("download", "done")], f.jobs(ws)


def test_500_on_changes_logged_once(t):
    o, ws, s, proxy, env = setup(t, "E500CHG")
    proxy.add(r"/changes\?.*", "status", times=8, status=500)
    d = daemon(t, ws, env)
    wait_daemon(d, lambda: f.events(d.stderr(), "export.done"), 30,
                "the export after eight 500 answers to /changes")
    assert d.stop() == 0
    down = f.events(d.stderr(), "orthanc.unreachable")
    assert len(down) == 1, f"{len(down)} orthanc.unreachable lines for one outage"
    assert_exported(o, ws, s)


def test_403_fails_for_good_then_retry_command(t):
    o, ws, s, proxy, env = setup(t, "E403")
    proxy.add(FILES, "status", times=1, status=403)
    r = run_once(ws, env)
    assert r.rc == 1, f"exit {r.rc}"
    assert_nothing_exported(ws)
    failed = f.events(r.stderr, "job.failed")
    assert len(failed) == 1 and "for good" in f.message(failed[0]), \
        f"a 4xx is not worth a retry: {[f.message(e) for e in failed]}"
    jobs = f.jobs(ws)
    assert [j["status"] for j in jobs] == ["failed"], jobs
    assert "403" in jobs[0]["detail"], jobs[0]
    failed_list = ws.run(["jobs", "--failed"], expect_rc=0).stdout
    assert str(jobs[0]["id"]) in failed_list
    r = run_once(ws, env)
    assert r.rc == 0 and not f.events(r.stderr, "export.done"), \
        "a job failed for good must wait for `autorthanc retry`"
    ws.run(["retry", "--all"], expect_rc=0)
    r = run_once(ws, env)
    assert r.rc == 0, f"exit {r.rc}:\n{h.tail(r.stderr)}"
    assert_exported(o, ws, s)


MALFORMED_CHANGES = [
    ("truncated JSON", b'{"Changes": [{"Seq": 1, "ChangeType": "Stab'),
    ("not JSON", b"<html>gateway</html>"),
    ("empty body", b""),
    ("array", b"[]"),
    ("null", b"null"),
    ("Changes not a list", b'{"Changes": 5, "Done": true, "Last": 3}'),
    ("wrong types", b'{"Changes": [{"Seq": "x", "ChangeType": 5, "ID": []}], '
                    b'"Done": "yes", "Last": "y"}'),
    ("missing fields", b'{"Changes": [{}], "Done": true, "Last": 1}'),
    ("deep nesting", b"[" * 200000),
    ("huge numbers", b'{"Changes": [{"Seq": 1e400, "ChangeType": "StableStudy", '
                     b'"ResourceType": "Study", "ID": "x"}], "Done": true, "Last": 1e400}'),
    ("long strings", b'{"Changes": [{"Seq": 1, "ChangeType": "' + b"S" * 100000
                     + b'", "ResourceType": "Study", "ID": "' + b"a" * 100000
                     + b'"}], "Done": true, "Last": 1}'),
    ("invalid UTF-8", b'{"Changes": [{"Seq": 1, "ChangeType": "StableStudy", '
                      b'"ResourceType": "Study", "ID": "\xff\xfe"}], "Done": true, "Last": 1}'),
    ("hostile id", b'{"Changes": [{"Seq": 1, "ChangeType": "StableStudy", '
                   b'"ResourceType": "Study", "ID": "../../tools/reset"}], '
                   b'"Done": true, "Last": 1}'),
]


def test_malformed_changes_never_crash(t):
    o, ws, s, proxy, env = setup(t, "BADJSON", n=2)
    problems = []
    for name, body in MALFORMED_CHANGES:
        proxy.clear()
        proxy.add(r"/changes\?.*", "body", body=body)
        try:
            r = run_once(ws, env, timeout=20)
        except h.HarnessError as e:
            problems.append(f"{name}: run --once hung ({str(e).splitlines()[0]})")
            continue
        assert_not_crashed(r, name)
        if f.working_left(ws.storage) or h.walk_tree(ws.storage)[0]:
            problems.append(f"{name}: something was written to the storage folder")
        errors = [e for e in f.events(r.stderr) if e.get("level") in ("error", "warn")]
        if r.rc == 1 and not errors:
            problems.append(f"{name}: exit 1 without an error line")
        elif errors and not any(w in f.message(e).lower() for e in errors
                                for w in ("/changes", "invalid")):
            problems.append(f"{name}: the error names neither the change log nor the bad "
                            f"value: {f.message(errors[0])[:160]!r}")
        print(f"# {name}: exit {r.rc}: "
              f"{f.message(errors[0])[:150] if errors else '(no error line)'}", flush=True)
    hostile = [p for (_m, p, _s, _k) in proxy.log if ".." in p or "tools/reset" in p]
    if hostile:
        problems.append(f"requests built from hostile ids: {hostile[:3]}")
    assert not problems, "; ".join(problems)
    # the position survived: once /changes is sane again the study is exported
    proxy.clear()
    r = run_once(ws, env)
    assert r.rc == 0, f"exit {r.rc}:\n{h.tail(r.stderr)}"
    assert_exported(o, ws, s)


def test_negative_last_does_not_hang(t):
    """{"Changes": [], "Last": -5} from a fresh position: the change-log
    reset branch must not start over forever."""
    o, ws, s, proxy, env = setup(t, "NEGLAST", n=2)
    proxy.add(r"/changes\?.*", "body", body=b'{"Changes": [], "Done": true, "Last": -5}')
    try:
        r = run_once(ws, env, timeout=20)
    except h.HarnessError:
        n = proxy.count(r"/changes\?.*")
        raise AssertionError(f"run --once never ended: it asked /changes {n} times in 20 s "
                             f"(the reset branch loops)") from None
    assert_not_crashed(r, "negative Last")
    assert r.rc == 1, f"a negative Last is a bad answer: exit {r.rc}"
    proxy.clear()
    r = run_once(ws, env)
    assert r.rc == 0
    assert_exported(o, ws, s)


def test_malformed_study_answer_is_retried(t):
    """A garbled answer for the study (a proxy or server hiccup) must not
    lose the study: it is retried like a network error, and exported once
    the answers are sane."""
    o, ws, s, proxy, env = setup(t, "BADSTUDY", n=2)
    # every answer for the study is garbled during the first run (both the
    # StableSeries and the StableStudy decisions read it)
    proxy.add(f"/studies/{s['study']}", "body",
              body=b'{"ID": "' + s["study"].encode() + b'", "MainDicomTags": [1, 2')
    r = run_once(ws, env)
    assert_not_crashed(r, "garbled study answer")
    assert_nothing_exported(ws)
    errors = [f.message(e) for e in f.events(r.stderr) if e.get("level") in ("error", "warn")]
    assert errors, "a garbled study answer went unreported"
    proxy.clear()
    r = run_once(ws, env)
    assert r.rc == 0, f"exit {r.rc}:\n{h.tail(r.stderr)}"
    try:
        assert_exported(o, ws, s)
    except AssertionError as e:
        raise AssertionError(f"the study was lost after one garbled answer (first run said: "
                             f"{errors[0][:200]!r}): {str(e).splitlines()[0]}") from None


def test_garbled_study_during_job_is_retried(t):
    """A job retried in a later run fetches the study again to plan its
    export (within one run it reuses the snapshot its decision fetched); that
    answer is garbled once.  That is a server hiccup, not a broken study: the
    job must stay pending for a retry, and the next run exports it."""
    o, ws, s, proxy, env = setup(t, "BADJOB", n=2)
    proxy.add(FILES, "status", times=1, status=500)   # run 1: the job fails, stays pending
    r = run_once(ws, env)
    assert_not_crashed(r, "500 on a file")
    assert [j["status"] for j in f.jobs(ws)] == ["pending"], f"ledger: {f.jobs(ws)}"
    proxy.clear()
    proxy.add(f"/studies/{s['study']}", "body", times=1,
              body=b'{"ID": "' + s["study"].encode() + b'", "MainDicomTags": {"Study')
    r = run_once(ws, env)                                # run 2: the retry meets the garbled answer
    assert_not_crashed(r, "garbled study answer in a job")
    assert proxy.count(f"/studies/{s['study']}") >= 1, "the retried job did not fetch the study"
    assert_nothing_exported(ws)
    jobs = f.jobs(ws)
    assert len(jobs) == 1, f"ledger: {jobs}"
    assert jobs[0]["status"] == "pending", (
        f"one garbled answer failed the job for good ({jobs[0]['status']}, "
        f"{jobs[0]['detail'][:160]!r}); it should be retried like a network error")
    proxy.clear()
    r = run_once(ws, env)
    assert r.rc == 0, f"exit {r.rc}:\n{h.tail(r.stderr)}"
    assert_exported(o, ws, s)


def test_corrupt_file_caught_by_md5(t):
    """Not implemented in the daemon yet: issue 6's optional MD5 check
    (verify_md5 / AUTORTHANC_VERIFY_MD5) against
    /instances/{id}/attachments/dicom/md5."""
    o, ws, s, proxy, env = setup(t, "MD5")
    proxy.add(FILES, "corrupt", times=1, after=1)
    env = dict(env, AUTORTHANC_VERIFY_MD5="true")
    r = run_once(ws, env)
    assert_not_crashed(r, "corrupt file")
    assert r.rc == 1 and not h.walk_tree(ws.storage)[0], (
        f"a file with one byte changed was exported with verify_md5 on (exit {r.rc}); "
        f"the MD5 check is missing")
    proxy.clear()
    r = run_once(ws, env)
    assert r.rc == 0
    assert_exported(o, ws, s)


if __name__ == "__main__":
    h.main()
