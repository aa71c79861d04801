#!/usr/bin/env python3
"""test_faults_kill.py - issue 6: `kill -9` of the daemon at random points of
a multi-study export, 20 times, loses nothing and duplicates nothing.

Six studies (two series of 20 instances of 512x512 random pixels each) are
exported by a study rule and a series rule (18 jobs, ~125 MB).  The daemon
(`autorthanc run`, poll interval 0.1 s) is started and killed with SIGKILL 20
times; each kill point is chosen by a seeded random generator (AR_FAULT_SEED
to replay one; the seed is printed): a random delay after the start, a short
random delay after a .WORKING folder appears (mid-transfer), or right after
the k-th export.done line.  Whenever the ledger says everything is done, a
random study gets more images while no daemon runs (a new stable state: the
next exports must replace the old folders whole), so every kill lands in
work.

After every kill:
  - every final folder that exists is complete and byte-exact for one stable
    state of its study or series (never partial);
  - no folder carries a "~" collision suffix (a redo reuses its own folder);
  - a job the ledger had marked done before is not redone (its folder keeps
    its inode while no new stable state came);
  - no job is failed.
After the kills, a clean `run --once`: exit 0, the whole tree exactly the
expected one, byte-exact, no .WORKING; `autorthanc jobs` has exactly one done
job per (rule, Stable* change) and nothing else; a second `run --once`
changes nothing.
"""

import os
import random
import signal
import sys
import time

sys.path.insert(0, os.path.join(os.environ.get("AR_SOURCE_DIR", os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "..", "..")), "tests", "lib"))
import harness as h  # noqa: E402
import faults as f  # noqa: E402

KILLS = 20
STUDIES = 6
PER_SERIES = 20
RULES = ("bystudy", "byseries")


def make_studies(o):
    content = [h.png_data_uri(512, 512, seed=k) for k in range(2)]
    out = []
    for k in range(STUDIES):
        s = o.create_study(f"P{k:02d}", "KILL^ME", str(k + 1),
                           [{"SeriesNumber": str(n), "SeriesDate": "20240101", "Modality": "OT",
                             "instances": PER_SERIES, "content": content[n - 1]}
                            for n in (1, 2)],
                           study_tags={"StudyDescription": "FAULT KILL"})
        out.append(s)
    return out


def add_images(o, k, s, count, content):
    """`count` more instances in series 1 of study number k (a new stable
    state of that series and study)."""
    ser = s["series"][0]
    spec = [{"SeriesNumber": "1", "SeriesDate": "20240101", "Modality": "OT",
             "SeriesInstanceUID": ser["uid"], "instances": count,
             "first_instance_number": PER_SERIES + 1, "content": content}]
    more = o.create_study(f"P{k:02d}", "KILL^ME", str(k + 1), spec,
                          study_tags={"StudyInstanceUID": s["study_uid"],
                                      "StudyDescription": "FAULT KILL"})
    assert more["study"] == s["study"] and more["series"][0]["id"] == ser["id"]


def folders_of(o, studies):
    """{folder: (rule, orthanc resource, expected mapping)} for the current
    content of every study."""
    out = {}
    for k, s in enumerate(studies):
        base = f"P{k:02d}-KILL-EX{k + 1}"
        folder = f"bystudy/{base}"
        out[folder] = ("bystudy", s["study"], h.expected_files(o, s["study"], folder))
        for n, ser in zip((1, 2), s["series"]):
            folder = f"byseries/{base}-SE{n}"
            out[folder] = ("byseries", ser["id"],
                           h.expected_files(o, s["study"], folder, series_ids=[ser["id"]]))
    return out


def final_folders(storage):
    """Folders at storage/<rule>/<name> that are not *.WORKING."""
    out = []
    for rule in sorted(os.listdir(storage)):
        rdir = os.path.join(storage, rule)
        if not os.path.isdir(rdir):
            continue
        for name in sorted(os.listdir(rdir)):
            if not name.endswith(".WORKING"):
                out.append(f"{rule}/{name}")
    return out


def working_now(storage):
    for rule in RULES:
        try:
            if any(n.endswith(".WORKING") for n in os.listdir(os.path.join(storage, rule))):
                return True
        except FileNotFoundError:
            pass
    return False


def expected_job_count(o, studies):
    """One job per StableStudy change of our studies (study rule) and per
    StableSeries change of their series (series rule)."""
    ids = {s["study"] for s in studies} | {ser["id"] for s in studies for ser in s["series"]}
    return sum(1 for c in o.changes(0)
               if c["ChangeType"] in ("StableStudy", "StableSeries") and c["ID"] in ids)


def test_kill9_at_random_points(t):
    seed = int(os.environ.get("AR_FAULT_SEED") or 6061)
    rng = random.Random(seed)
    print(f"# seed {seed} (AR_FAULT_SEED={seed} replays it)", flush=True)
    o = t.orthanc("KILL", dicom=False)
    ws = t.workspace(o)
    ws.rule("bystudy", tags=[("StudyDescription", "Study", "fault kill")])
    ws.rule("byseries", check_on="Series", tags=[("StudyDescription", "Study", "fault kill")])
    studies = make_studies(o)
    for s in studies:
        o.wait_stable(s["study"])

    refs = f.RefFiles(o)
    layout = folders_of(o, studies)
    # every complete state a folder may show: the first one, then one more
    # for each time its study or series gets more images
    states = {folder: [exp] for folder, (_r, _id, exp) in layout.items()}
    env = ws.env(AUTORTHANC_POLL_INTERVAL="0.1", AUTORTHANC_LOG_FORMAT="json",
                 AUTORTHANC_RETRY_INITIAL="0.5", AUTORTHANC_RETRY_MAX="1")
    done_inodes = {}  # (rule, resource, job ids) all done -> folder inode
    stats = {"delay": 0, "working": 0, "done_k": 0, "more_images": 0, "left_working": 0,
             "missed_condition": 0}
    additions = 0  # each one logs a StableSeries and a StableStudy later
    total_exports = 0

    for i in range(KILLS):
        ledger = f.jobs(ws, env=env)
        done = sum(1 for j in ledger if j["status"] == "done")
        if done >= len(layout) + 2 * additions:
            # all done: give the next daemon work (a new stable state), added
            # while no daemon runs so every state is a complete one
            k = rng.randrange(STUDIES)
            add_images(o, k, studies[k], 4, h.png_data_uri(512, 512, seed=100 + i))
            additions += 1
            stats["more_images"] += 1
            for folder, (_r, _id, exp) in folders_of(o, studies).items():
                if exp not in states[folder]:
                    states[folder].append(exp)
        strategy = rng.choices(["delay", "working", "done_k"], weights=[3, 4, 3])[0]
        delay = rng.uniform(0.0, 0.8)
        small = rng.uniform(0.0, 0.05)
        # exports left to do (a job interrupted after its rename but before
        # the ledger marked it done exports once more: at least 1)
        k = rng.randint(1, max(1, min(3, len(layout) + 2 * additions - done)))
        stats[strategy] += 1

        run_dir = os.path.join(t.tmp, f"run{i:02d}")
        os.makedirs(run_dir)
        d = h.Daemon(["run"], env, run_dir)
        t.defer(lambda d=d: d.stop(signal.SIGKILL, timeout=5))
        started = time.monotonic()

        def alive_and(cond):
            def check():
                if not d.alive():
                    raise AssertionError(f"daemon exited by itself ({d.proc.returncode}):\n"
                                         + h.tail(d.stderr()))
                return cond()
            return check

        try:
            if strategy == "working":
                h.wait_for(alive_and(lambda: working_now(ws.storage)), 8,
                           "a .WORKING folder", interval=0.002)
                time.sleep(small)  # the fault: a random point inside the transfer
            elif strategy == "done_k":
                h.wait_for(alive_and(lambda: len(f.events(d.stderr(), "export.done")) >= k),
                           8, f"export.done #{k}", interval=0.005)
            else:
                left = started + delay - time.monotonic()
                if left > 0:
                    time.sleep(left)  # the fault: a random point after the start
        except h.HarnessError:
            stats["missed_condition"] += 1  # the work ended first: kill anyway
            print(f"# kill {i}: {strategy} condition not met, killed anyway", flush=True)
        if not d.alive():
            raise AssertionError(f"kill {i}: daemon exited by itself ({d.proc.returncode}):\n"
                                 + h.tail(d.stderr()))
        d.proc.send_signal(signal.SIGKILL)
        d.proc.wait()
        total_exports += len(f.events(d.stderr(), "export.done"))
        crashed = [e for e in f.events(d.stderr()) if e.get("level") == "error"]
        assert not crashed, f"kill {i}: errors logged: {crashed[:3]}"
        if working_now(ws.storage):
            stats["left_working"] += 1

        # -- invariants at this kill point ---------------------------------
        for folder in final_folders(ws.storage):
            assert "~" not in folder, f"kill {i}: collision twin {folder}"
            assert folder in states, f"kill {i}: unexpected folder {folder}"
            problems = [f.folder_problem(refs, ws.storage, folder, exp)
                        for exp in states[folder]]
            if all(problems):
                raise AssertionError(f"kill {i} ({strategy}): final folder {folder} is not a "
                                     f"complete export: {problems}")
        ledger = f.jobs(ws, env=env)
        bad = [j for j in ledger if j["status"] not in ("done", "pending")]
        assert not bad, f"kill {i}: jobs neither done nor pending: {bad}"
        by_key = {}
        for j in ledger:
            by_key.setdefault((j["rule"], j["resource"]), []).append(j)
        for (rule, res), js in by_key.items():
            if any(j["status"] != "done" for j in js):
                continue
            folder = js[-1]["detail"]
            key = (rule, res, tuple(j["id"] for j in js))
            ino = os.stat(os.path.join(ws.storage, folder)).st_ino
            if key in done_inodes:
                assert done_inodes[key] == ino, (
                    f"kill {i}: job(s) {key[2]} of {rule} {res} were done, yet {folder} was "
                    f"exported again (a finished job was redone)")
            done_inodes[key] = ino

    print(f"# kills: {stats}; export.done lines over all runs: {total_exports}", flush=True)
    assert stats["left_working"] >= 1, f"no kill interrupted a transfer: {stats}"

    # -- the clean run -------------------------------------------------------------
    h.wait_for(lambda: expected_job_count(o, studies) >= len(layout) + 2 * additions, 30,
               "the new stable states to be logged")
    for s in studies:
        o.wait_stable(s["study"])
    r = ws.run(["run", "--once"], env=env, timeout=240)
    assert r.rc == 0, f"clean run --once exited {r.rc}:\n{h.tail(r.stderr)}"
    final = folders_of(o, studies)
    expected = {}
    for folder, (_r, _id, exp) in final.items():
        expected.update(exp)
    h.assert_tree_matches(o, ws.storage, expected)  # exact, byte-exact, no .WORKING
    assert not f.working_left(ws.storage)

    ledger = f.jobs(ws, env=env)
    not_done = [j for j in ledger if j["status"] != "done"]
    assert not not_done, f"jobs not done after the clean run: {not_done}"
    want = expected_job_count(o, studies)
    assert len(ledger) == want, (f"{len(ledger)} jobs in the ledger, expected one per "
                                 f"(rule, stable change) = {want}")
    counts = {}
    for j in ledger:
        counts[(j["rule"], j["resource"])] = counts.get((j["rule"], j["resource"]), 0) + 1
    for folder, (rule, res, _exp) in final.items():
        assert (rule, res) in counts, f"no job for {rule} {res} ({folder})"
    for j in ledger:
        assert j["detail"] in final, f"job {j['id']} exported to {j['detail']!r}"

    snap = h.snapshot_tree(ws.storage)
    r = ws.run(["run", "--once"], env=env)
    assert r.rc == 0, f"second run --once exited {r.rc}:\n{h.tail(r.stderr)}"
    assert not f.events(r.stderr, "export.done"), "a second run --once exported again"
    assert h.snapshot_tree(ws.storage) == snap, "a second run --once changed the tree"


if __name__ == "__main__":
    h.main()
