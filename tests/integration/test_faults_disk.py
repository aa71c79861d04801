#!/usr/bin/env python3
"""test_faults_disk.py - issue 6: a full or unwritable disk.

The job fails cleanly: exit 1 for `run --once`, the .WORKING folder is
removed, no final folder appears, the error (log line and the ledger's
last_error) names the path and the system error; a later run with room
succeeds, byte-exact; the daemon (without --once) keeps running and retries
by itself.  Running as root makes chmod useless, so the faults are:
  - a file-size limit (RLIMIT_FSIZE, SIGXFSZ ignored: write fails with EFBIG);
  - a 1 MiB tmpfs in a private mount namespace (ENOSPC);
  - a read-only bind mount of the storage folder (EROFS);
  - a 192 KiB tmpfs for the state folder (the SQLite ledger fills up).
The mount tests are skipped (with the reason printed) where this process may
not mount in a new namespace.

test_free_space_checked_before_export covers a promise of issue 6 that the
daemon does not keep yet: when the export's size is known (FileSize of every
instance), free space is checked before any file is fetched.
"""

import os
import sys

sys.path.insert(0, os.path.join(os.environ.get("AR_SOURCE_DIR", os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "..", "..")), "tests", "lib"))
import harness as h  # noqa: E402
import faults as f  # noqa: E402

FOLDER = "all/PDISK-FULL-EX1"
EFBIG = "File too large"
ENOSPC = "No space left on device"
EROFS = "Read-only file system"


def big_study(o, n=6):
    """n instances of ~263 KB (512x512 random pixels): 1.6 MB for n=6."""
    s = o.create_study("PDISK", "FULL^DISK", "1",
                       [{"SeriesNumber": "1", "SeriesDate": "20240401", "instances": n,
                         "content": h.png_data_uri(512, 512, seed=21)}],
                       study_tags={"StudyDescription": "DISK"})
    o.wait_stable(s["study"])
    return s


def setup(t, name):
    o = t.orthanc(name, dicom=False)
    ws = t.workspace(o)
    ws.rule("all", tags=[("StudyDescription", "Study", "disk")])
    return o, ws, big_study(o)


def skip(reason):
    print(f"# SKIP: {reason}", flush=True)


def check_clean_failure(r, storage_seen, storage_named, errtext, ws):
    """The run failed (exit 1) and left nothing behind; its error names the
    storage path and the system error, in the log and in the ledger."""
    assert r.rc == 1, f"run --once exited {r.rc}, expected 1:\n{h.tail(r.stderr)}"
    left = f.working_left(storage_seen)
    assert not left, f".WORKING left behind: {left}"
    assert not os.path.exists(os.path.join(storage_seen, FOLDER)), "a final folder appeared"
    files, _ = h.walk_tree(storage_seen)
    assert not files, f"files left in the storage folder: {files[:5]}"
    failed = f.events(r.stderr, "job.failed")
    assert failed, f"no job.failed line:\n{h.tail(r.stderr)}"
    msg = f.message(failed[0])
    assert storage_named in msg and errtext in msg, \
        f"the error should name the path under {storage_named} and '{errtext}': {msg!r}"
    jobs = f.jobs(ws)
    assert len(jobs) == 1 and jobs[0]["status"] in ("pending", "failed"), f"ledger: {jobs}"
    assert storage_named in jobs[0]["detail"] and errtext in jobs[0]["detail"], \
        f"the ledger's error should name the path and '{errtext}': {jobs[0]['detail']!r}"
    assert jobs[0]["attempts"] == 1, f"attempts: {jobs[0]}"


def check_success(o, s, storage_seen, r, ws):
    assert r.rc == 0, f"run --once with room exited {r.rc}:\n{h.tail(r.stderr)}"
    h.assert_tree_matches(o, storage_seen, h.expected_files(o, s["study"], FOLDER))
    jobs = f.jobs(ws)
    assert [j["status"] for j in jobs] == ["done"], f"ledger after the retry: {jobs}"


def test_file_size_limit(t):
    o, ws, s = setup(t, "FSIZE")
    env = ws.env(AUTORTHANC_LOG_FORMAT="json")
    r = f.run_ar(["run", "--once"], env=env, cwd=ws.root,
                 preexec_fn=f.fsize_limit(128 * 1024))
    check_clean_failure(r, ws.storage, ws.storage, EFBIG, ws)
    r = ws.run(["run", "--once"], env={"AUTORTHANC_LOG_FORMAT": "json"})
    check_success(o, s, ws.storage, r, ws)


def test_tmpfs_full(t):
    why = f.MountNamespace.unavailable()
    if why:
        return skip(why)
    o, ws, s = setup(t, "ENOSPC")
    mnt = os.path.join(t.tmp, "small")
    ns = f.tmpfs_namespace(mnt, "1m")
    t.defer(ns.close)
    env = ws.env(AUTORTHANC_LOG_FORMAT="json", AUTORTHANC_STORAGE_DIR=mnt)
    r = f.run_ar(["run", "--once"], env=env, cwd=ws.root, prefix=ns.prefix())
    check_clean_failure(r, ns.path(mnt), mnt, ENOSPC, ws)
    ns.sh(f"mount -o remount,size=64m '{mnt}'")
    r = f.run_ar(["run", "--once"], env=env, cwd=ws.root, prefix=ns.prefix())
    check_success(o, s, ns.path(mnt), r, ws)


def test_storage_read_only(t):
    why = f.MountNamespace.unavailable()
    if why:
        return skip(why)
    o, ws, s = setup(t, "EROFS")
    ns = f.readonly_namespace(ws.storage)
    t.defer(ns.close)
    env = ws.env(AUTORTHANC_LOG_FORMAT="json")
    r = f.run_ar(["run", "--once"], env=env, cwd=ws.root, prefix=ns.prefix())
    check_clean_failure(r, ws.storage, ws.storage, EROFS, ws)
    # outside the namespace the same folder is writable: the retry succeeds
    r = ws.run(["run", "--once"], env={"AUTORTHANC_LOG_FORMAT": "json"})
    check_success(o, s, ws.storage, r, ws)


def test_daemon_retries_when_room_returns(t):
    why = f.MountNamespace.unavailable()
    if why:
        return skip(why)
    o, ws, s = setup(t, "ENOSPCD")
    mnt = os.path.join(t.tmp, "small")
    ns = f.tmpfs_namespace(mnt, "1m")
    t.defer(ns.close)
    env = ws.env(AUTORTHANC_LOG_FORMAT="json", AUTORTHANC_STORAGE_DIR=mnt,
                 AUTORTHANC_RETRY_INITIAL="0.5", AUTORTHANC_RETRY_MAX="1")
    d = f.PrefixedDaemon(["run"], env, os.path.join(t.tmp, "daemon"), prefix=ns.prefix())
    t.defer(lambda: d.stop())

    def alive_and(cond):
        def check():
            if not d.alive():
                raise AssertionError(f"daemon exited {d.proc.returncode}:\n{h.tail(d.stderr())}")
            return cond()
        return check
    h.wait_for(alive_and(lambda: len(f.events(d.stderr(), "job.failed")) >= 2), 30,
               "two failed attempts on the full disk")
    assert not f.working_left(ns.path(mnt)), "a .WORKING folder stays while the disk is full"
    ns.sh(f"mount -o remount,size=64m '{mnt}'")
    h.wait_for(alive_and(lambda: f.events(d.stderr(), "export.done")), 30,
               "the export once the disk has room")
    h.assert_tree_matches(o, ns.path(mnt), h.expected_files(o, s["study"], FOLDER))
    msg = f.message(f.events(d.stderr(), "job.failed")[0])
    assert mnt in msg and ENOSPC in msg, f"error: {msg!r}"
    rc = d.stop()
    assert rc == 0, f"SIGTERM: exit {rc}"


def test_state_folder_full(t):
    """The state folder (the SQLite ledger) fills up in the middle of a run:
    no crash, a clear error naming the state database, nothing partial in
    storage; once there is room again the next run finishes the work, each
    study exported once into its own folder (no "~" twin, no lost study)."""
    why = f.MountNamespace.unavailable()
    if why:
        return skip(why)
    o = t.orthanc("STATEFULL", dicom=False)
    ws = t.workspace(o)
    ws.rule("all", tags=[("StudyDescription", "Study", "disk")])
    studies = []
    for k in range(1, 9):
        s = o.create_study(f"PST{k}", "FULL^STATE", str(k),
                           [{"SeriesNumber": "1", "SeriesDate": "20240402", "instances": 2,
                             "content": h.png_data_uri(64, 64, seed=k)}],
                           study_tags={"StudyDescription": "DISK"})
        studies.append((k, s))
    for _k, s in studies:
        o.wait_stable(s["study"])
    mnt = os.path.join(t.tmp, "state")
    # room for the database and its shared-memory file, and a few commits of
    # its write-ahead log: full part-way through the eight jobs
    ns = f.tmpfs_namespace(mnt, "192k")
    t.defer(ns.close)
    env = ws.env(AUTORTHANC_LOG_FORMAT="json", AUTORTHANC_STATE_DIR=mnt)
    r = f.run_ar(["run", "--once"], env=env, cwd=ws.root, prefix=ns.prefix(), timeout=120)
    assert r.rc in (1, 2), f"a full state folder: exit {r.rc}, expected 1 (or 2):\n" \
                           f"{h.tail(r.stderr)}"
    for bad in ("AddressSanitizer", "runtime error:", "Segmentation"):
        assert bad not in r.stderr, f"{bad}:\n{h.tail(r.stderr)}"
    errors = [f.message(e) for e in f.events(r.stderr) if e.get("level") == "error"]
    assert any(mnt in m or "full" in m.lower() for m in errors), \
        f"no error names the state database or says it is full: {errors[:3]}"
    assert not f.working_left(ws.storage), f".WORKING left: {f.working_left(ws.storage)}"
    exported_first = len(f.events(r.stderr, "export.done"))
    for folder in os.listdir(ws.path("all")) if os.path.isdir(ws.path("all")) else []:
        k = int(folder.split("-")[0][3:])
        s = dict(studies)[k]
        h.assert_tree_matches(o, ws.storage, h.expected_files(o, s["study"], f"all/{folder}"),
                              exact=False)  # whatever is there is whole
    ns.sh(f"mount -o remount,size=16m '{mnt}'")
    r = f.run_ar(["run", "--once"], env=env, cwd=ws.root, prefix=ns.prefix(), timeout=120)
    assert r.rc == 0, f"with room again: exit {r.rc}:\n{h.tail(r.stderr)}"
    expected = {}
    for k, s in studies:
        expected.update(h.expected_files(o, s["study"], f"all/PST{k}-FULL-EX{k}"))
    h.assert_tree_matches(o, ws.storage, expected)  # exact: no "~" twin, nothing lost
    jobs = f.run_ar(["jobs"], env=env, cwd=ws.root, prefix=ns.prefix())
    lines = [ln.split("\t") for ln in jobs.stdout.splitlines() if ln.strip()]
    assert len(lines) == len(studies) and all(ln[1] == "done" for ln in lines), \
        f"ledger: {jobs.stdout}"
    print(f"# {exported_first} export(s) before the state folder was full", flush=True)


def test_free_space_checked_before_export(t):
    """Not implemented yet in the daemon (issue 6: "free space is checked
    before a large export when the size is known")."""
    why = f.MountNamespace.unavailable()
    if why:
        return skip(why)
    o, ws, s = setup(t, "PRECHECK")
    mnt = os.path.join(t.tmp, "small")
    ns = f.tmpfs_namespace(mnt, "1m")
    t.defer(ns.close)
    with f.FaultProxy(o.url) as proxy:
        env = ws.env(AUTORTHANC_LOG_FORMAT="json", AUTORTHANC_STORAGE_DIR=mnt,
                     AUTORTHANC_ORTHANC_URL=proxy.url)
        r = f.run_ar(["run", "--once"], env=env, cwd=ws.root, prefix=ns.prefix())
        fetched = proxy.count(r"/instances/[^/]+/file")
    assert r.rc == 1, f"exit {r.rc}"
    assert not f.working_left(ns.path(mnt))
    msg = " ".join(f.message(e) for e in f.events(r.stderr, "job.failed"))
    assert fetched == 0, (f"{fetched} files were fetched into a 1 MiB folder for a 1.6 MB "
                          f"export (no free-space check before the transfer): {msg[:200]!r}")
    assert mnt in msg and "space" in msg.lower(), f"error: {msg!r}"


if __name__ == "__main__":
    h.main()
