#!/usr/bin/env python3
"""test_export.py - issue 2, DOWNLOAD: a stable study matched by a rule lands
complete and byte-exact in STORAGE/<rule>/<PatientID>-<family>-EX<StudyID>/
SE<n>-<date>-<uid>/<SOPInstanceUID>.dcm; series rules append -SE<n>; rules
that do not match, inactive rules and ignored file names export nothing; a
second `run --once` does nothing."""

import os
import sys

sys.path.insert(0, os.path.join(os.environ.get("AR_SOURCE_DIR", os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "..", "..")), "tests", "lib"))
import harness as h  # noqa: E402


def layout(study, folder, numbers, dates):
    """Literal expected paths: folder/SE<n>-<date>-<series uid>/<sop>.dcm."""
    out = {}
    for ser, num, date in zip(study["series"], numbers, dates):
        for inst in ser["instances"]:
            out[f"{folder}/SE{num}-{date}-{ser['uid']}/{inst['sop']}.dcm"] = inst["id"]
    return out


def brain_study(o):
    return o.create_study(
        "P123", "DOE^JOHN", "42",
        [{"SeriesNumber": "1", "SeriesDate": "20240131", "Modality": "MR", "instances": 3,
          "content": h.png_data_uri(64, 64, seed=1)},
         {"SeriesNumber": "2", "SeriesDate": "20240201", "Modality": "MR", "instances": 2}],
        study_tags={"StudyDescription": "MRI BRAIN W/O", "StudyDate": "20240131"})


def test_study_rule_exports_complete_folder(t):
    o = t.orthanc("EXPORT", dicom=False)
    ws = t.workspace(o)
    ws.rule("brain", tags=[("StudyDescription", "Study", "brain")])  # case-insensitive
    s = brain_study(o)
    o.wait_stable(s["study"])
    ws.run_once()
    expected = layout(s, "brain/P123-DOE-EX42", ["1", "2"], ["20240131", "20240201"])
    assert len(expected) == 5
    h.assert_tree_matches(o, ws.storage, expected)


def test_second_run_does_nothing(t):
    o = t.orthanc("EXPORT2", dicom=False)
    ws = t.workspace(o)
    ws.rule("brain", tags=[("StudyDescription", "Study", "BRAIN")])
    s = brain_study(o)
    o.wait_stable(s["study"])
    ws.run_once()
    before = h.snapshot_tree(ws.storage)
    assert len(before) == 5, before
    state_before = h.snapshot_tree(ws.state)
    assert state_before, "the state folder holds the daemon's state after a run"
    r = ws.run_once()
    after = h.snapshot_tree(ws.storage)
    assert after == before, ("second run --once touched the export "
                             f"(inode, mtime, size changed): {sorted(set(after.items()) ^ set(before.items()))[:3]}")
    h.assert_no_working(ws.storage)
    assert "Traceback" not in r.stderr


def test_series_rule_appends_series_number(t):
    o = t.orthanc("SERIES", dicom=False)
    ws = t.workspace(o)
    ws.rule("mr_series", check_on="Series", tags=[("Modality", "Series", "mr")])
    s = o.create_study("P7", "ROE^JANE^M", "9",
                       [{"SeriesNumber": "1", "SeriesDate": "20230505", "Modality": "MR",
                         "instances": 2},
                        {"SeriesNumber": "2", "SeriesDate": "20230505", "Modality": "CT",
                         "instances": 2},
                        {"SeriesNumber": "3", "SeriesDate": "20230506", "Modality": "MR",
                         "instances": 1}])
    o.wait_stable(s["study"])
    ws.run_once()
    mr1, ct, mr3 = s["series"]
    expected = {}
    for ser, num, date in ((mr1, "1", "20230505"), (mr3, "3", "20230506")):
        for inst in ser["instances"]:
            expected[f"mr_series/P7-ROE-EX9-SE{num}/SE{num}-{date}-{ser['uid']}/"
                     f"{inst['sop']}.dcm"] = inst["id"]
    # the CT series is not an MR series: a series rule decides each series alone
    h.assert_tree_matches(o, ws.storage, expected)


def test_nonmatching_rule_makes_no_folder(t):
    o = t.orthanc("NOMATCH", dicom=False)
    ws = t.workspace(o)
    ws.rule("ct_only", tags=[("Modality", "Series", "CT")])
    ws.rule("both_tags", tags=[("PatientID", "Patient", "P5"),
                               ("StudyDescription", "Study", "knee")])  # 2nd fails
    ws.rule("absent_tag", tags=[("StudyComments", "Study", "")])  # missing tag never passes
    ws.rule("everything", tags=[("PatientID", "Patient", "p5")])
    ws.rule("everything_too", tags=[("PatientName", "Patient", "smith"),
                                    ("Modality", "Series", "MR")])
    s = o.create_study("P5", "SMITH^ANNA", "3",
                       [{"SeriesNumber": "4", "SeriesDate": "20220202", "Modality": "MR",
                         "instances": 2}],
                       study_tags={"StudyDescription": "HEAD"})
    o.wait_stable(s["study"])
    ws.run_once()
    expected = {}
    for rule in ("everything", "everything_too"):
        expected.update(layout(s, f"{rule}/P5-SMITH-EX3", ["4"], ["20220202"]))
    h.assert_tree_matches(o, ws.storage, expected)
    for rule in ("ct_only", "both_tags", "absent_tag"):
        assert not os.path.exists(ws.path(rule)) or not os.listdir(ws.path(rule)), \
            f"rule {rule} must not export"


def test_series_tag_in_any_series_for_study_rule(t):
    o = t.orthanc("ANYSERIES", dicom=False)
    ws = t.workspace(o)
    ws.rule("has_ct", tags=[("Modality", "Series", "ct")])
    s = o.create_study("P8", "LEE", "11",
                       [{"SeriesNumber": "1", "SeriesDate": "20210101", "Modality": "MR"},
                        {"SeriesNumber": "2", "SeriesDate": "20210101", "Modality": "CT",
                         "instances": 2}])
    o.wait_stable(s["study"])
    ws.run_once()
    # the whole study, both series
    h.assert_tree_matches(o, ws.storage, layout(s, "has_ct/P8-LEE-EX11", ["1", "2"],
                                                 ["20210101", "20210101"]))


def test_inactive_and_ignored_rules(t):
    o = t.orthanc("IGNORED", dicom=False)
    ws = t.workspace(o)
    match = [("PatientID", "Patient", "P9")]
    ws.rule("active", tags=match)
    ws.rule("sleeping", tags=match, active=False)
    ws.rule("master_rule", tags=match)
    ws.rule("masterpiece", tags=match)
    ws.rule("my_template_copy", tags=match)
    ws.rule("template", tags=match)
    with open(os.path.join(ws.rules, "notes.txt"), "w") as f:
        f.write("not a rule\n")
    s = o.create_study("P9", "KIM", "1", [{"SeriesNumber": "1", "SeriesDate": "20200101"}])
    o.wait_stable(s["study"])
    ws.run_once()
    h.assert_tree_matches(o, ws.storage, layout(s, "active/P9-KIM-EX1", ["1"], ["20200101"]))


def test_defaults_for_missing_values(t):
    o = t.orthanc("DEFAULTS", dicom=False)
    ws = t.workspace(o)
    ws.rule("anon", tags=[("StudyDescription", "Study", "anon")])
    ws.rule("anon_series", check_on="Series", tags=[("StudyDescription", "Study", "anon")])
    # empty PatientID/PatientName/StudyID/SeriesDate, no SeriesNumber at all
    s = o.create_study("", "", "", [{"SeriesDate": "", "Modality": "OT", "instances": 2}],
                       study_tags={"StudyDescription": "ANON TEST"})
    o.wait_stable(s["study"])
    ws.run_once()
    expected = layout(s, "anon/NoPID-UNKNOWN-EXUNKNOWN", ["XX"], ["UNKNOWN"])
    expected.update(layout(s, "anon_series/NoPID-UNKNOWN-EXUNKNOWN-SEXX", ["XX"], ["UNKNOWN"]))
    h.assert_tree_matches(o, ws.storage, expected)


def test_study_sent_over_dicom(t):
    src = t.orthanc("MAKER", dicom=False)
    o = t.orthanc("PACS")
    ws = t.workspace(o)
    ws.rule("ct", tags=[("Modality", "Series", "CT")])
    made = src.create_study("P10", "PARK^MIN", "77",
                            [{"SeriesNumber": "5", "SeriesDate": "20190909", "Modality": "CT",
                              "instances": 4, "content": h.png_data_uri(32, 32, seed=5)}])
    files = []
    for i, iid in enumerate(made["instances"]):
        p = os.path.join(t.tmp, f"in{i}.dcm")
        with open(p, "wb") as f:
            f.write(src.instance_file(iid))
        files.append(p)
    o.storescu(files)
    o.wait_stable(made["study"])  # same UIDs, same Orthanc ids
    ws.run_once()
    h.assert_tree_matches(o, ws.storage, layout(made, "ct/P10-PARK-EX77", ["5"], ["20190909"]))


def test_export_of_larger_files(t):
    o = t.orthanc("LARGE", dicom=False)
    ws = t.workspace(o)
    ws.rule("big", tags=[("StudyDescription", "Study", "big")])
    content = h.png_data_uri(512, 512, seed=9)  # ~260 KB of pixels per instance
    s = o.create_study("P11", "BIG", "1",
                       [{"SeriesNumber": "1", "SeriesDate": "20180101", "instances": 12,
                         "content": content}],
                       study_tags={"StudyDescription": "BIG ONE"})
    o.wait_stable(s["study"])
    ws.run_once()
    expected = layout(s, "big/P11-BIG-EX1", ["1"], ["20180101"])
    h.assert_tree_matches(o, ws.storage, expected)
    total = sum(len(o.instance_file(i)) for i in expected.values())
    assert total > 12 * 250000, total


def test_output_uid_gid_chown_the_tree(t):
    if os.geteuid() != 0:
        print("# test_output_uid_gid_chown_the_tree: not root, chown not exercised")
        return
    o = t.orthanc("CHOWN", dicom=False)
    ws = t.workspace(o)
    ws.rule("owned", tags=[("PatientID", "Patient", "P12")])
    s = o.create_study("P12", "OWN", "1", [{"SeriesNumber": "1", "SeriesDate": "20180102",
                                           "instances": 2}])
    o.wait_stable(s["study"])
    ws.run_once(env={"AUTORTHANC_OUTPUT_UID": "12345", "AUTORTHANC_OUTPUT_GID": "12346"})
    h.assert_tree_matches(o, ws.storage, layout(s, "owned/P12-OWN-EX1", ["1"], ["20180102"]))
    top = ws.path("owned", "P12-OWN-EX1")
    wrong = []
    for dirpath, dirnames, filenames in os.walk(top):
        for p in [dirpath] + [os.path.join(dirpath, f) for f in filenames]:
            st = os.lstat(p)
            if (st.st_uid, st.st_gid) != (12345, 12346):
                wrong.append((os.path.relpath(p, ws.storage), st.st_uid, st.st_gid))
    assert not wrong, f"not chowned to 12345:12346: {wrong[:5]}"


if __name__ == "__main__":
    h.main()
