#!/usr/bin/env python3
"""test_restable.py - issue 2: a study that gets more images after it was
exported becomes stable again and is exported again, whole; the new complete
folder replaces the old one (same name, no suffix, never partial), the files
of the old instances are unchanged, the new ones are present."""

import os
import subprocess
import sys
import threading

sys.path.insert(0, os.path.join(os.environ.get("AR_SOURCE_DIR", os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "..", "..")), "tests", "lib"))
import harness as h  # noqa: E402


def add_images(o, s, series_index, count, first_number, content=None, new_series=None):
    """More instances into series `series_index` of study s (and optionally a
    new series); returns the created dict."""
    ser = s["series"][series_index]
    tags = o.get(f"/series/{ser['id']}")["MainDicomTags"]
    spec = [{"SeriesNumber": tags.get("SeriesNumber"), "SeriesDate": tags.get("SeriesDate", ""),
             "Modality": tags.get("Modality", "OT"), "SeriesInstanceUID": ser["uid"],
             "instances": count, "first_instance_number": first_number}]
    if content:
        spec[0]["content"] = content
    if new_series:
        spec.append(new_series)
    pt = o.get(f"/studies/{s['study']}")
    return o.create_study(pt["PatientMainDicomTags"].get("PatientID"),
                          pt["PatientMainDicomTags"].get("PatientName"),
                          pt["MainDicomTags"].get("StudyID"), spec,
                          study_tags={"StudyInstanceUID": s["study_uid"]})


def test_more_images_reexport_whole(t):
    o = t.orthanc("RESTABLE", dicom=False)
    ws = t.workspace(o)
    ws.rule("knee", tags=[("StudyDescription", "Study", "knee")])
    s = o.create_study("P20", "NGUYEN^AN", "5",
                       [{"SeriesNumber": "1", "SeriesDate": "20240301", "Modality": "MR",
                         "instances": 2, "content": h.png_data_uri(32, 32, seed=3)}],
                       study_tags={"StudyDescription": "KNEE LEFT"})
    seq = o.wait_stable(s["study"])
    ws.run_once()
    folder = "knee/P20-NGUYEN-EX5"
    first = h.expected_files(o, s["study"], folder)
    assert len(first) == 2
    h.assert_tree_matches(o, ws.storage, first)
    old_bytes = h.read_tree(ws.storage)
    old_folder_ino = os.stat(ws.path(folder)).st_ino

    more = add_images(o, s, 0, 2, 3, new_series={"SeriesNumber": "2", "SeriesDate": "20240302",
                                                 "Modality": "MR", "instances": 1})
    assert more["study"] == s["study"]
    o.wait_stable(s["study"], since=seq)
    ws.run_once()
    full = h.expected_files(o, s["study"], folder)
    assert len(full) == 5
    h.assert_tree_matches(o, ws.storage, full)  # same folder name, nothing else (no "~" twin)
    new_bytes = h.read_tree(ws.storage)
    for rel, data in old_bytes.items():
        assert new_bytes[rel] == data, f"{rel} changed on re-export"
    assert os.stat(ws.path(folder)).st_ino != old_folder_ino, \
        "the study folder was patched in place, not replaced by a new complete folder"

    # and a third run does nothing
    snap = h.snapshot_tree(ws.storage)
    ws.run_once()
    assert h.snapshot_tree(ws.storage) == snap


def test_restable_series_rule_replaces_only_that_series(t):
    o = t.orthanc("RESERIES", dicom=False)
    ws = t.workspace(o)
    ws.rule("per_series", check_on="Series", tags=[("Modality", "Series", "CT")])
    s = o.create_study("P21", "OKAFOR", "8",
                       [{"SeriesNumber": "1", "SeriesDate": "20240401", "Modality": "CT",
                         "instances": 2},
                        {"SeriesNumber": "2", "SeriesDate": "20240401", "Modality": "CT",
                         "instances": 1}])
    seq = o.wait_stable(s["study"])
    ws.run_once()
    f1, f2 = "per_series/P21-OKAFOR-EX8-SE1", "per_series/P21-OKAFOR-EX8-SE2"
    exp = h.expected_files(o, s["study"], f1, series_ids={s["series"][0]["id"]})
    exp.update(h.expected_files(o, s["study"], f2, series_ids={s["series"][1]["id"]}))
    h.assert_tree_matches(o, ws.storage, exp)
    untouched = h.snapshot_tree(ws.path(f2))

    add_images(o, s, 0, 3, 3)
    o.wait_change("StableSeries", resource_id=s["series"][0]["id"], since=seq)
    o.wait_stable(s["study"], since=seq)
    ws.run_once()
    exp = h.expected_files(o, s["study"], f1, series_ids={s["series"][0]["id"]})
    assert len(exp) == 5
    exp.update(h.expected_files(o, s["study"], f2, series_ids={s["series"][1]["id"]}))
    h.assert_tree_matches(o, ws.storage, exp)
    assert h.snapshot_tree(ws.path(f2)) == untouched, "the unchanged series was re-exported"


def _observe(path):
    """One consistent look at the tree behind `path`: open it, list it through
    directory fds, and return (inode, files) only if `path` still names the
    same folder afterwards (otherwise None: a swap happened meanwhile, and an
    old tree being deleted is not a partial final folder)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except FileNotFoundError:
        return ("absent", None)
    try:
        ino = os.fstat(fd).st_ino
        files = set()
        for dirpath, _, filenames, _dfd in os.fwalk(dir_fd=fd):
            for f in filenames:
                files.add(os.path.normpath(os.path.join(dirpath, f)))
        try:
            same = os.stat(path).st_ino == ino
        except FileNotFoundError:
            same = False
        return (ino, files) if same else None
    finally:
        os.close(fd)


def test_replacement_is_never_partial(t):
    # Watch the final folder while the re-export of a larger study runs: every
    # consistent look must see the old complete tree or the new complete tree,
    # and the final name must never be missing.
    o = t.orthanc("ATOMIC", dicom=False)
    ws = t.workspace(o)
    ws.rule("big", tags=[("StudyDescription", "Study", "atomic")])
    content = h.png_data_uri(384, 384, seed=11)
    s = o.create_study("P22", "ATOM", "1",
                       [{"SeriesNumber": "1", "SeriesDate": "20240501", "instances": 30,
                         "content": content}],
                       study_tags={"StudyDescription": "ATOMIC"})
    seq = o.wait_stable(s["study"])
    ws.run_once()
    folder = ws.path("big", "P22-ATOM-EX1")
    old = _observe(folder)
    assert old and old[0] != "absent" and len(old[1]) == 30, old

    add_images(o, s, 0, 30, 31, content=content)
    o.wait_stable(s["study"], since=seq)
    proc = subprocess.Popen([h.binary(), "run", "--once"], cwd=ws.root,
                            env=dict({"PATH": os.environ.get("PATH", "/usr/bin:/bin")}, **ws.env()),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    looks = []
    stop = threading.Event()

    def watch():
        while not stop.is_set():
            looks.append(_observe(folder))

    w = threading.Thread(target=watch)
    w.start()
    try:
        out, err = proc.communicate(timeout=120)
    finally:
        stop.set()
        w.join()
    assert proc.returncode == 0, f"run --once exited {proc.returncode}: {err.decode()[-2000:]}"
    new = _observe(folder)
    assert new and len(new[1]) == 60, new
    h.assert_tree_matches(o, ws.storage, h.expected_files(o, s["study"], "big/P22-ATOM-EX1"))
    assert looks, "the watcher never looked"
    if os.environ.get("AR_DEBUG_LOOKS"):
        print(f"# {len(looks)} looks, {len(set(x[0] for x in looks if x))} inodes, {sum(1 for x in looks if x is None)} straddling")
    absent = [x for x in looks if x and x[0] == "absent"]
    assert not absent, f"the final folder was missing in {len(absent)} of {len(looks)} looks"
    bad = [x for x in looks if x and x[1] not in (old[1], new[1])]
    assert not bad, (f"{len(bad)} of {len(looks)} looks saw a partial final folder, e.g. "
                     f"{len(bad[0][1])} files")


if __name__ == "__main__":
    h.main()
