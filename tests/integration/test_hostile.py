#!/usr/bin/env python3
"""test_hostile.py - issue 2: names come from untrusted tag values.  Whatever
PatientID/PatientName/StudyID/SeriesNumber/SeriesDate/UIDs hold (path
separators, "..", control characters, SMB-hostile characters, over-long and
non-Latin values, a ".WORKING" suffix), every exported path component is safe,
non-Latin names stay readable, every instance is exported byte-exact exactly
once, and nothing is written outside the storage folder."""

import hashlib
import os
import sys

sys.path.insert(0, os.path.join(os.environ.get("AR_SOURCE_DIR", os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "..", "..")), "tests", "lib"))
import harness as h  # noqa: E402

BAD_CHARS = set('/\\<>:"|?*\x00')


def check_component(c, where):
    b = c.encode("utf-8", "surrogateescape")
    assert c not in ("", ".", ".."), f"{where}: dot component {c!r}"
    assert len(b) <= 255, f"{where}: component of {len(b)} bytes"
    try:
        b.decode("utf-8")
    except UnicodeDecodeError:
        raise AssertionError(f"{where}: component not valid UTF-8: {b!r}") from None
    bad = [ch for ch in c if ch in BAD_CHARS or ord(ch) < 0x20 or ord(ch) == 0x7f]
    assert not bad, f"{where}: component {c!r} holds {bad!r}"
    assert c == c.strip(" "), f"{where}: component {c!r} has leading/trailing spaces"
    assert not c.endswith("."), f"{where}: component {c!r} ends with a dot"
    assert not c.endswith(".WORKING"), f"{where}: final component {c!r} looks like a work folder"


def check_storage_safe(storage):
    """Every entry under storage is a plain folder or file with safe components."""
    real_root = os.path.realpath(storage)
    for dirpath, dirnames, filenames in os.walk(storage):
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            assert not os.path.islink(p), f"symlink in storage: {p}"
            assert os.path.realpath(p).startswith(real_root + os.sep), f"{p} escapes storage"
            check_component(name, os.path.relpath(p, storage))


def check_nothing_outside(t, ws):
    """No DICOM file and no stray folder anywhere in the test's directory
    outside storage/, Orthanc's own folders and the state folder."""
    allowed = {os.path.realpath(ws.storage), os.path.realpath(ws.state),
               os.path.realpath(ws.rules)}
    allowed |= {os.path.realpath(o.tmpdir) for o in t.orthancs}
    for dirpath, dirnames, filenames in os.walk(t.tmp):
        rp = os.path.realpath(dirpath)
        if any(rp == a or rp.startswith(a + os.sep) for a in allowed):
            dirnames[:] = []
            continue
        for f in filenames:
            assert not f.endswith(".dcm"), f"DICOM file outside storage: {os.path.join(dirpath, f)}"
        for d in dirnames:
            full = os.path.realpath(os.path.join(dirpath, d))
            if not any(full == a or a.startswith(full + os.sep) for a in allowed):
                raise AssertionError(f"unexpected folder outside storage: {full}")
    for stray in ("escaped", "abs-escape"):
        found = [n for n in os.listdir(t.tmp) if n.startswith(stray)]
        assert not found, f"path traversal wrote {found} in {t.tmp}"


def check_every_instance_once(o, storage, instance_ids, under):
    """Each instance's bytes are exactly one file under storage/<under>."""
    by_digest = {}
    for rel in h.walk_tree(storage)[0]:
        if not rel.startswith(under + "/"):
            continue
        with open(os.path.join(storage, rel), "rb") as f:
            by_digest.setdefault(hashlib.sha256(f.read()).hexdigest(), []).append(rel)
    for iid in instance_ids:
        d = hashlib.sha256(o.instance_file(iid)).hexdigest()
        paths = by_digest.get(d, [])
        assert len(paths) == 1, f"instance {iid} exported {len(paths)} times: {paths}"
    n = sum(len(v) for v in by_digest.values())
    assert n == len(instance_ids), f"{n} files under {under}, {len(instance_ids)} instances"


def hostile_studies(o, tmp):
    """(label, created study) for each hostile case; all match 'StudyDescription hostile'."""
    abs_target = "/" + "../" * 16 + tmp.lstrip("/") + "/abs-escape"
    cases = [
        ("traversal", "A/B", "../../etc", "..", {}),
        ("relative-escape", "..", "x/../../../../escaped", "1", {}),
        ("absolute-escape", abs_target, "ROOT", "/", {}),
        ("control", "P\x01\x02\x1f\x7f", "X\tY\nZ^Q", "1\x1b[31m", {}),
        ("smb", 'a<b>c:d"e|f?g*h\\i', "  x. .", "7. .", {}),
        ("working", "W", "W", "1.WORKING", {}),
        ("long-ascii", "P" * 256, "N" * 200, "1", {}),
        ("long-utf8", "Q", "é" * 127 + "^Z", "2", {}),
        ("series-tags", "S", "S", "3",
         {"SeriesNumber": "1/../..", "SeriesDate": "..", "SeriesInstanceUID": "../x"}),
        ("sop", "T", "T", "4", {"instance_tags": lambda i: {"SOPInstanceUID": ["../../../evil", "a/b", ".."][i]},
                                "instances": 3}),
    ]
    out = []
    for label, pid, name, sid, series in cases:
        ser = {"SeriesNumber": "1", "SeriesDate": "20240101", "Modality": "OT"}
        ser.update(series)
        s = o.create_study(pid, name, sid, [ser], study_tags={"StudyDescription": "HOSTILE " + label})
        out.append((label, s))
    return out


def test_hostile_values_stay_inside_storage(t):
    o = t.orthanc("HOSTILE", dicom=False)
    ws = t.workspace(o)
    ws.rule("hostile", tags=[("StudyDescription", "Study", "hostile")])
    ws.rule("hostile_series", check_on="Series", tags=[("StudyDescription", "Study", "hostile")])
    studies = hostile_studies(o, t.tmp)
    for _, s in studies:
        o.wait_stable(s["study"])
    ws.run_once()
    h.assert_no_working(ws.storage)
    check_storage_safe(ws.storage)
    check_nothing_outside(t, ws)
    all_ids = [i for _, s in studies for i in s["instances"]]
    check_every_instance_once(o, ws.storage, all_ids, "hostile")
    check_every_instance_once(o, ws.storage, all_ids, "hostile_series")
    top = sorted(os.listdir(ws.storage))
    assert top == ["hostile", "hostile_series"], top
    # one folder per study (no two hostile studies merged into one folder)
    assert len(os.listdir(ws.path("hostile"))) == len(studies), sorted(os.listdir(ws.path("hostile")))


def test_non_latin_names_stay_readable(t):
    o = t.orthanc("UNICODE", dicom=False)
    ws = t.workspace(o)
    ws.rule("intl", tags=[("StudyDescription", "Study", "intl")])
    cases = [("患者123", "山田^太郎", "Ünï", "患者123-山田-EXÜnï"),
             ("Ж-7", "Иванов^Иван", "12", "Ж-7-Иванов-EX12"),
             ("ΑΒΓ", "Ωμέγα", "9", "ΑΒΓ-Ωμέγα-EX9"),
             ("P\u00e9", "Mu\u0308ller^Hans", "5", "P\u00e9-Mu\u0308ller-EX5")]
    made = []
    for pid, name, sid, folder in cases:
        s = o.create_study(pid, name, sid, [{"SeriesNumber": "2", "SeriesDate": "20240102"}],
                           study_tags={"StudyDescription": "INTL"})
        made.append((s, folder))
    for s, _ in made:
        o.wait_stable(s["study"])
    ws.run_once()
    expected = {}
    for s, folder in made:
        ser = s["series"][0]
        inst = ser["instances"][0]
        expected[f"intl/{folder}/SE2-20240102-{ser['uid']}/{inst['sop']}.dcm"] = inst["id"]
    h.assert_tree_matches(o, ws.storage, expected)


def test_long_values_are_cut_on_utf8_boundary(t):
    o = t.orthanc("LONG", dicom=False)
    ws = t.workspace(o)
    ws.rule("long", tags=[("StudyDescription", "Study", "long")])
    s1 = o.create_study("P" * 256, "N", "1", [{"SeriesNumber": "1", "SeriesDate": "20240101"}],
                        study_tags={"StudyDescription": "LONG"})
    # Orthanc drops a main tag over 256 bytes, so the length comes from the
    # joined folder name: 22 ASCII bytes then 3-byte (2-byte) characters put
    # byte 255 in the middle of a character.
    s2 = o.create_study("Q" * 21, "山" * 80 + "^X", "2",
                        [{"SeriesNumber": "1", "SeriesDate": "20240101"}],
                        study_tags={"StudyDescription": "LONG"})
    s3 = o.create_study("R" * 21, "é" * 120 + "^X", "3",
                        [{"SeriesNumber": "1", "SeriesDate": "20240101"}],
                        study_tags={"StudyDescription": "LONG"})
    for s in (s1, s2, s3):
        o.wait_stable(s["study"])
    ws.run_once()
    check_storage_safe(ws.storage)
    folders = sorted(os.listdir(ws.path("long")))
    assert len(folders) == 3, folders
    starts = {"P": "PPPPPPPP", "Q": "Q" * 21 + "-山山山", "R": "R" * 21 + "-ééé"}
    for key, prefix in starts.items():
        hit = [f for f in folders if f.startswith(prefix)]
        assert len(hit) == 1, f"no readable folder starting {prefix!r} in {folders}"
        assert len(hit[0].encode()) <= 255
    check_every_instance_once(o, ws.storage,
                              [i for s in (s1, s2, s3) for i in s["instances"]], "long")


def test_sanitised_file_names_do_not_overwrite(t):
    # Two SOPInstanceUIDs that differ only in a character the sanitiser must
    # replace: both instances must still be exported (complete folder).
    o = t.orthanc("SAMEFILE", dicom=False)
    ws = t.workspace(o)
    ws.rule("same", tags=[("StudyDescription", "Study", "same")])
    variants = ["1.2/3", "1.2\\3", "1.2:3", "1.2?3", "1.2*3"]
    s = o.create_study("P", "N", "1",
                       [{"SeriesNumber": "1", "SeriesDate": "20240101", "instances": len(variants),
                         "instance_tags": lambda i: {"SOPInstanceUID": variants[i]}}],
                       study_tags={"StudyDescription": "SAME"})
    assert len(set(s["instances"])) == len(variants)
    o.wait_stable(s["study"])
    ws.run_once()
    check_storage_safe(ws.storage)
    check_every_instance_once(o, ws.storage, s["instances"], "same")


def test_second_run_after_hostile_does_nothing(t):
    o = t.orthanc("HOSTILE2", dicom=False)
    ws = t.workspace(o)
    ws.rule("hostile", tags=[("StudyDescription", "Study", "hostile")])
    studies = hostile_studies(o, t.tmp)
    for _, s in studies:
        o.wait_stable(s["study"])
    ws.run_once()
    before = h.snapshot_tree(ws.storage)
    ws.run_once()
    assert h.snapshot_tree(ws.storage) == before, "second run changed the hostile exports"


if __name__ == "__main__":
    h.main()
