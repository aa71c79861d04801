#!/usr/bin/env python3
"""test_harness.py - guards the test harness itself (tests/lib/harness.py),
without autorthanc: a private Orthanc on run-time ports, studies with explicit
UIDs landing in one series, stability waits, DICOM C-STORE between two
Orthancs, and the tree comparison catching what it must catch."""

import os
import sys

sys.path.insert(0, os.path.join(os.environ.get("AR_SOURCE_DIR", os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "..", "..")), "tests", "lib"))
import harness as h  # noqa: E402


def test_orthanc_starts_on_private_ports(t):
    a = t.orthanc("HA")
    b = t.orthanc("HB", dicom=False)
    assert a.http_port != b.http_port
    sa, sb = a.get("/system"), b.get("/system")
    assert sa["DicomAet"] == "HA" and sa["DicomPort"] == a.dicom_port, sa
    assert sa["Name"] != sb["Name"]
    assert [p for p in a.get("/plugins") if p != "explorer.js"] == [], "no plugin may be loaded"
    assert os.path.isdir(os.path.join(a.tmpdir, "index")), "index must live in tmpdir"
    a.stop()
    assert not a.alive()
    h.wait_for(lambda: _refused(a.http_port), 10, "port to be released")


def _refused(port):
    import socket
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return False
    except OSError:
        return True


def test_create_study_groups_instances(t):
    o = t.orthanc("HC")
    s = o.create_study("P1", "DOE^JOHN", "42",
                       [{"SeriesNumber": "1", "Modality": "MR", "SeriesDate": "20240131",
                         "instances": 3},
                        {"SeriesNumber": "2", "Modality": "CT", "instances": 2,
                         "content": h.png_data_uri(16, 16, seed=1)}],
                       study_tags={"StudyDescription": "BRAIN"})
    st = o.get(f"/studies/{s['study']}")
    assert len(st["Series"]) == 2, st
    assert st["PatientMainDicomTags"]["PatientID"] == "P1"
    assert st["MainDicomTags"]["StudyID"] == "42"
    assert st["MainDicomTags"]["StudyDescription"] == "BRAIN"
    assert len(o.study_instances(s["study"])) == 5
    tags = o.get(f"/instances/{s['series'][0]['instances'][0]['id']}/simplified-tags")
    assert tags["SOPClassUID"] == h.SECONDARY_CAPTURE, tags
    assert tags["SOPInstanceUID"] == s["series"][0]["instances"][0]["sop"]
    # more instances into the same study and series
    s2 = o.create_study("P1", "DOE^JOHN", "42",
                        [{"SeriesNumber": "1", "Modality": "MR", "SeriesDate": "20240131",
                          "SeriesInstanceUID": s["series"][0]["uid"], "instances": 2,
                          "first_instance_number": 4}],
                        study_tags={"StudyInstanceUID": s["study_uid"]})
    assert s2["study"] == s["study"] and s2["series"][0]["id"] == s["series"][0]["id"]
    assert len(o.study_instances(s["study"])) == 7


def test_png_content_grows_the_file(t):
    o = t.orthanc("HD", dicom=False)
    small = o.create_study("P", "A", "1", [{"SeriesNumber": "1"}])
    big = o.create_study("P", "A", "2", [{"SeriesNumber": "1",
                                          "content": h.png_data_uri(256, 256, seed=2)}])
    n_small = len(o.instance_file(small["instances"][0]))
    n_big = len(o.instance_file(big["instances"][0]))
    assert n_big > n_small + 60000, (n_small, n_big)


def test_wait_stable_and_changes(t):
    o = t.orthanc("HE", dicom=False)
    s = o.create_study("P2", "X", "7", [{"SeriesNumber": "1", "instances": 2},
                                        {"SeriesNumber": "2"}])
    seq = o.wait_stable(s["study"], timeout=20)
    types = {c["ChangeType"] for c in o.changes(0)}
    assert {"NewInstance", "StableStudy", "StableSeries"} <= types, types
    assert seq <= o.last_change()
    # more images: a second StableStudy after `seq`
    o.create_study("P2", "X", "7", [{"SeriesNumber": "1", "instances": 1,
                                     "SeriesInstanceUID": s["series"][0]["uid"]}],
                   study_tags={"StudyInstanceUID": s["study_uid"]})
    seq2 = o.wait_stable(s["study"], timeout=20, since=seq)
    assert seq2 > seq


def test_wait_for_times_out_with_a_message(t):
    try:
        h.wait_for(lambda: False, 0.2, "the impossible")
    except h.HarnessError as e:
        assert "the impossible" in str(e)
    else:
        raise AssertionError("wait_for did not time out")


def test_storescu_between_orthancs(t):
    a = t.orthanc("SRC", dicom=False)
    b = t.orthanc("DST")
    s = a.create_study("P3", "Y", "9", [{"SeriesNumber": "1", "instances": 3}])
    files = []
    for i, iid in enumerate(s["instances"]):
        p = os.path.join(t.tmp, f"{i}.dcm")
        with open(p, "wb") as f:
            f.write(a.instance_file(iid))
        files.append(p)
    b.storescu(files)
    assert len(b.get("/instances")) == 3
    assert set(b.get("/instances")) == set(s["instances"]), "same UIDs give same Orthanc ids"
    # upload over HTTP is idempotent
    assert b.upload(files[0]) == s["instances"][0]


def test_tree_comparison(t):
    o = t.orthanc("HF", dicom=False)
    s = o.create_study("P4", "Z", "5", [{"SeriesNumber": "3", "SeriesDate": "20200101",
                                         "instances": 2}])
    root = os.path.join(t.tmp, "storage")
    expected = h.expected_files(o, s["study"], "r/P4-Z-EX5")
    for rel, iid in expected.items():
        assert "/SE3-20200101-" in rel, rel
        os.makedirs(os.path.dirname(os.path.join(root, rel)), exist_ok=True)
        with open(os.path.join(root, rel), "wb") as f:
            f.write(o.instance_file(iid))
    h.assert_tree_matches(o, root, expected)
    # one flipped byte is caught
    rel = sorted(expected)[0]
    data = bytearray(o.instance_file(expected[rel]))
    data[-1] ^= 0xFF
    with open(os.path.join(root, rel), "wb") as f:
        f.write(data)
    _must_fail(lambda: h.assert_tree_matches(o, root, expected), "differ")
    with open(os.path.join(root, rel), "wb") as f:
        f.write(o.instance_file(expected[rel]))
    # an extra file is caught, and a .WORKING folder
    with open(os.path.join(root, "r", "stray"), "wb") as f:
        f.write(b"x")
    _must_fail(lambda: h.assert_tree_matches(o, root, expected), "unexpected")
    os.remove(os.path.join(root, "r", "stray"))
    os.makedirs(os.path.join(root, "r", "P4-Z-EX5.WORKING"))
    _must_fail(lambda: h.assert_tree_matches(o, root, expected), ".WORKING")


def _must_fail(fn, text):
    try:
        fn()
    except AssertionError as e:
        assert text in str(e), f"expected {text!r} in {e}"
        return
    raise AssertionError(f"expected a failure mentioning {text!r}")


def test_rule_files(t):
    ws = t.workspace()
    p = ws.rule("ct", tags=[("Modality", "Series", "CT")])
    import json
    with open(p) as f:
        r = json.load(f)
    assert r == {"CheckOn": "Study", "IsActive": True, "Action": "DOWNLOAD",
                 "Tags": [{"TagName": "Modality", "Level": "Series", "Value": "CT"}]}
    assert os.path.basename(p) == "ct.json"
    assert ws.write("bad", "{").endswith("bad.json")


if __name__ == "__main__":
    h.main()
