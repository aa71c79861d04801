#!/usr/bin/env python3
"""test_collisions.py - issue 2: two different studies whose folder names
collide (same PatientID, PatientName and StudyID; or all empty) never share
or overwrite each other's folder: the later one gets the deterministic suffix
"~<first 8 characters of its Orthanc study id>"; re-exports keep each study
in its own folder."""

import os
import sys

sys.path.insert(0, os.path.join(os.environ.get("AR_SOURCE_DIR", os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "..", "..")), "tests", "lib"))
import harness as h  # noqa: E402


def stable_seq(o, study_id):
    """Seq of the newest StableStudy change of this study."""
    seqs = [c["Seq"] for c in o.changes(0)
            if c["ChangeType"] == "StableStudy" and c["ID"] == study_id]
    assert seqs, f"no StableStudy for {study_id}"
    return max(seqs)


def test_same_names_two_runs(t):
    o = t.orthanc("COLLIDE", dicom=False)
    ws = t.workspace(o)
    ws.rule("r", tags=[("StudyDescription", "Study", "chest")])
    series = [{"SeriesNumber": "1", "SeriesDate": "20240601", "Modality": "CR", "instances": 2}]
    a = o.create_study("P1", "DOE^JOHN", "1", series, study_tags={"StudyDescription": "CHEST"})
    seq_a = o.wait_stable(a["study"])
    ws.run_once()
    base = "r/P1-DOE-EX1"
    exp_a = h.expected_files(o, a["study"], base)
    h.assert_tree_matches(o, ws.storage, exp_a)

    b = o.create_study("P1", "DOE^JOHN", "1",
                       [{"SeriesNumber": "1", "SeriesDate": "20240601", "Modality": "CR",
                         "instances": 3}],
                       study_tags={"StudyDescription": "CHEST PA"})
    assert b["study"] != a["study"]
    seq_b = o.wait_stable(b["study"], since=seq_a)
    ws.run_once()
    suffixed = f"{base}~{b['study'][:8]}"
    exp_b = h.expected_files(o, b["study"], suffixed)
    h.assert_tree_matches(o, ws.storage, dict(exp_a, **exp_b))

    # both get more images: each is re-exported into its own folder
    for s, n in ((a, 2), (b, 3)):
        o.create_study("P1", "DOE^JOHN", "1",
                       [{"SeriesNumber": "1", "SeriesDate": "20240601", "Modality": "CR",
                         "SeriesInstanceUID": s["series"][0]["uid"], "instances": 1,
                         "first_instance_number": n + 1}],
                       study_tags={"StudyInstanceUID": s["study_uid"]})
    o.wait_stable(a["study"], since=seq_b)
    o.wait_stable(b["study"], since=seq_b)
    ws.run_once()
    exp_a = h.expected_files(o, a["study"], base)
    exp_b = h.expected_files(o, b["study"], suffixed)
    assert len(exp_a) == 3 and len(exp_b) == 4
    h.assert_tree_matches(o, ws.storage, dict(exp_a, **exp_b))


def test_all_empty_one_run(t):
    o = t.orthanc("EMPTY", dicom=False)
    ws = t.workspace(o)
    ws.rule("anon", tags=[("StudyDescription", "Study", "empty")])
    mk = lambda n: o.create_study("", "", "", [{"SeriesNumber": "1", "SeriesDate": "20240602",
                                                "instances": n}],
                                  study_tags={"StudyDescription": "EMPTY"})
    a, b = mk(1), mk(2)
    o.wait_stable(a["study"])
    o.wait_stable(b["study"])
    first, later = sorted((a, b), key=lambda s: stable_seq(o, s["study"]))
    ws.run_once()
    base = "anon/NoPID-UNKNOWN-EXUNKNOWN"
    expected = h.expected_files(o, first["study"], base)
    expected.update(h.expected_files(o, later["study"], f"{base}~{later['study'][:8]}"))
    h.assert_tree_matches(o, ws.storage, expected)

    # deterministic: a fresh state and storage over the same Orthanc log give the same names
    ws2 = t.workspace(o, name="again")
    ws2.rule("anon", tags=[("StudyDescription", "Study", "empty")])
    ws2.run_once()
    h.assert_tree_matches(o, ws2.storage, expected)

    # and a second run changes nothing
    snap = h.snapshot_tree(ws.storage)
    ws.run_once()
    assert h.snapshot_tree(ws.storage) == snap


def test_collision_per_rule_and_series_rule(t):
    o = t.orthanc("COLLIDE3", dicom=False)
    ws = t.workspace(o)
    ws.rule("study_rule", tags=[("StudyDescription", "Study", "spine")])
    ws.rule("series_rule", check_on="Series", tags=[("Modality", "Series", "MR")])
    mk = lambda: o.create_study("P3", "ROE", "4",
                                [{"SeriesNumber": "2", "SeriesDate": "20240603", "Modality": "MR"}],
                                study_tags={"StudyDescription": "SPINE"})
    a = mk()
    seq = o.wait_stable(a["study"])
    b = mk()
    o.wait_stable(b["study"], since=seq)
    assert stable_seq(o, a["study"]) < stable_seq(o, b["study"])
    ws.run_once()
    sfx = "~" + b["study"][:8]
    expected = {}
    expected.update(h.expected_files(o, a["study"], "study_rule/P3-ROE-EX4"))
    expected.update(h.expected_files(o, b["study"], "study_rule/P3-ROE-EX4" + sfx))
    expected.update(h.expected_files(o, a["study"], "series_rule/P3-ROE-EX4-SE2"))
    # For a series rule the contract names no id: the study's or the series' first 8.
    names = sorted(os.listdir(ws.path("series_rule")))
    later = [n for n in names if n != "P3-ROE-EX4-SE2"]
    assert len(later) == 1 and later[0] in ("P3-ROE-EX4-SE2" + sfx,
                                            "P3-ROE-EX4-SE2~" + b["series"][0]["id"][:8]), names
    expected.update(h.expected_files(o, b["study"], "series_rule/" + later[0]))
    h.assert_tree_matches(o, ws.storage, expected)


def test_two_series_same_number_in_one_study(t):
    # Series rule: two series of one study that share SeriesNumber collide on
    # "...-SE<n>"; each must still get its own complete folder.
    o = t.orthanc("COLLIDE4", dicom=False)
    ws = t.workspace(o)
    ws.rule("ser", check_on="Series", tags=[("Modality", "Series", "CT")])
    s = o.create_study("P4", "DUP", "6",
                       [{"SeriesNumber": "3", "SeriesDate": "20240604", "Modality": "CT",
                         "instances": 2},
                        {"SeriesNumber": "3", "SeriesDate": "20240604", "Modality": "CT",
                         "instances": 1}])
    o.wait_stable(s["study"])
    ws.run_once()
    names = sorted(os.listdir(ws.path("ser")))
    assert len(names) == 2 and names[0] == "P4-DUP-EX6-SE3" and names[1].startswith(
        "P4-DUP-EX6-SE3~"), names
    expected = {}
    for name in names:
        inner = os.listdir(ws.path("ser", name))
        assert len(inner) == 1, inner
        uid = inner[0].rsplit("-", 1)[1]
        ser = [x for x in s["series"] if x["uid"] == uid]
        assert ser, f"{name}/{inner[0]} names no series of the study"
        expected.update(h.expected_files(o, s["study"], f"ser/{name}", series_ids={ser[0]["id"]}))
    assert len(expected) == 3
    h.assert_tree_matches(o, ws.storage, expected)


if __name__ == "__main__":
    h.main()
