#!/usr/bin/env python3
"""test_forward.py - issue 2, FORWARD: a matching study (or series) is sent
with POST /modalities/{name}/store to a modality registered in Orthanc's
DicomModalities and the instances arrive there; a forward to an unreachable
or unknown modality is a failed job: `run --once` exits 1 and stderr names
the modality, while the other rules still do their work."""

import os
import sys

sys.path.insert(0, os.path.join(os.environ.get("AR_SOURCE_DIR", os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "..", "..")), "tests", "lib"))
import harness as h  # noqa: E402


def pair(t, extra_modalities=None):
    """(source, destination): the destination is a DICOM modality 'DEST' of the source."""
    dest = t.orthanc("DESTPACS")
    mods = {"DEST": [dest.aet, "127.0.0.1", dest.dicom_port]}
    mods.update(extra_modalities or {})
    src = t.orthanc("SOURCE", dicom=False, modalities=mods)
    return src, dest


def sops(o, ids):
    return sorted(o.get(f"/instances/{i}")["MainDicomTags"]["SOPInstanceUID"] for i in ids)


def test_forward_study(t):
    src, dest = pair(t)
    ws = t.workspace(src)
    ws.rule("fwd", action="FORWARD", destination="DEST",
            tags=[("StudyDescription", "Study", "forward")])
    s = src.create_study("P40", "SEND^ME", "1",
                         [{"SeriesNumber": "1", "SeriesDate": "20240801", "Modality": "CT",
                           "instances": 3, "content": h.png_data_uri(32, 32, seed=4)},
                          {"SeriesNumber": "2", "SeriesDate": "20240801", "Modality": "CT",
                           "instances": 2}],
                         study_tags={"StudyDescription": "FORWARD ME"})
    src.wait_stable(s["study"])
    ws.run_once()
    got = dest.get("/instances")
    assert sops(dest, got) == sops(src, s["instances"]), \
        f"{len(got)} of {len(s['instances'])} instances arrived"
    # same UIDs -> same Orthanc study id on the destination
    assert dest.get(f"/studies/{s['study']}")["MainDicomTags"]["StudyID"] == "1"
    assert not os.listdir(ws.storage), f"FORWARD wrote to storage: {os.listdir(ws.storage)}"

    # a second run does not forward again
    last = dest.last_change()
    ws.run_once()
    assert dest.last_change() == last, "second run --once forwarded again"


def test_forward_series_rule_sends_only_that_series(t):
    src, dest = pair(t)
    ws = t.workspace(src)
    ws.rule("fwd_mr", check_on="Series", action="FORWARD", destination="DEST",
            tags=[("Modality", "Series", "MR")])
    s = src.create_study("P41", "PART", "2",
                         [{"SeriesNumber": "1", "SeriesDate": "20240802", "Modality": "MR",
                           "instances": 2},
                          {"SeriesNumber": "2", "SeriesDate": "20240802", "Modality": "CT",
                           "instances": 2}])
    src.wait_stable(s["study"])
    ws.run_once()
    mr = [i["id"] for i in s["series"][0]["instances"]]
    assert sops(dest, dest.get("/instances")) == sops(src, mr)


def test_forward_unreachable_fails_naming_modality(t):
    dead_port = t.dead_port()
    src, dest = pair(t, {"DEADPACS": ["NOBODY", "127.0.0.1", dead_port]})
    ws = t.workspace(src)
    ws.rule("to_dead", action="FORWARD", destination="DEADPACS",
            tags=[("PatientID", "Patient", "P42")])
    ws.rule("to_dest", action="FORWARD", destination="DEST",
            tags=[("PatientID", "Patient", "P42")])
    ws.rule("keep", tags=[("PatientID", "Patient", "P42")])
    s = src.create_study("P42", "FAIL", "3",
                         [{"SeriesNumber": "1", "SeriesDate": "20240803", "instances": 2}])
    src.wait_stable(s["study"])
    r = ws.run_once(expect_rc=1, timeout=180)
    assert "DEADPACS" in r.stderr, f"stderr does not name the modality:\n{h.tail(r.stderr)}"
    # the other rules did their work
    h.assert_tree_matches(src, ws.storage, h.expected_files(src, s["study"], "keep/P42-FAIL-EX3"))
    assert sops(dest, dest.get("/instances")) == sops(src, s["instances"])


def test_forward_unknown_modality_fails_naming_it(t):
    src, dest = pair(t)
    ws = t.workspace(src)
    ws.rule("to_nowhere", action="FORWARD", destination="NOSUCHPACS",
            tags=[("PatientID", "Patient", "P43")])
    s = src.create_study("P43", "NOWHERE", "4", [{"SeriesNumber": "1", "SeriesDate": "20240804"}])
    src.wait_stable(s["study"])
    r = ws.run_once(expect_rc=1, timeout=180)
    assert "NOSUCHPACS" in r.stderr, f"stderr does not name the modality:\n{h.tail(r.stderr)}"
    assert "modality 'NOSUCHPACS' is not configured in Orthanc (known: DEST)" in r.stderr, \
        h.tail(r.stderr)
    assert "inexistent item" not in r.stderr, h.tail(r.stderr)
    assert dest.get("/instances") == []
    # `check` verifies destinations against Orthanc's modalities when it answers
    ws.rule("to_dest", action="FORWARD", destination="DEST", tags=[("PatientID", "Patient", "P44")])
    r = ws.check()
    out = r.stdout + r.stderr
    assert r.rc == 1, out
    bad = [ln for ln in out.splitlines() if ln.startswith("to_nowhere") and "BROKEN" in ln]
    assert bad and "modality 'NOSUCHPACS' is not configured in Orthanc" in bad[0], out
    assert not [ln for ln in out.splitlines() if ln.startswith("to_dest") and "BROKEN" in ln], out
    # offline, nothing is verified (and that is said)
    r = ws.check(env={"AUTORTHANC_ORTHANC_URL": "http://127.0.0.1:%d" % t.dead_port()})
    assert r.rc == 0 and "FORWARD destinations not verified" in r.stdout + r.stderr, \
        r.stdout + r.stderr


if __name__ == "__main__":
    h.main()
