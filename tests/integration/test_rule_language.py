#!/usr/bin/env python3
"""test_rule_language.py - issue 3, integration: a Lua rule and a templated
JSON rule export real studies from a real Orthanc.

  - test_lua_rule_exports_by_age: examples/rules/pediatric.lua (a Lua rule
    deciding on the patient's age at the study date, with a name hook making
    "<year>/<PatientID>-<StudyID>") exports the child's head study and not
    the adult's;
  - test_templated_json_rule: Naming/SeriesNaming/FileNaming templates with
    a date format, a person-name part, zero padding and a fallback, plus a
    MinCount quantifier; the folder names follow the templates, a "/" inside
    a tag value stays inside one component, every file is byte-exact.
"""

import os
import shutil
import sys

sys.path.insert(0, os.path.join(os.environ.get("AR_SOURCE_DIR", os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "..", "..")), "tests", "lib"))
import harness as h  # noqa: E402

SRC = os.environ.get("AR_SOURCE_DIR", os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                   "..", ".."))


def test_lua_rule_exports_by_age(t):
    o = t.orthanc("LUARULE", dicom=False)
    ws = t.workspace(o)
    shutil.copy(os.path.join(SRC, "examples", "rules", "pediatric.lua"),
                os.path.join(ws.rules, "pediatric.lua"))
    child = o.create_study("KID1", "SMALL^TIM", "77",
                           [{"SeriesNumber": "1", "SeriesDate": "20240310", "instances": 2}],
                           study_tags={"StudyDescription": "MRI HEAD", "StudyDate": "20240310"},
                           patient_tags={"PatientBirthDate": "20150601"})
    adult = o.create_study("ADULT1", "BIG^ANN", "78",
                           [{"SeriesNumber": "1", "SeriesDate": "20240310", "instances": 1}],
                           study_tags={"StudyDescription": "MRI HEAD", "StudyDate": "20240310"},
                           patient_tags={"PatientBirthDate": "19700101"})
    o.wait_stable(child["study"])
    o.wait_stable(adult["study"])
    ws.run(["run", "--once"], expect_rc=0)
    h.assert_tree_matches(o, ws.storage,
                          h.expected_files(o, child["study"], "pediatric/2024/KID1-77"))


def test_templated_json_rule(t):
    o = t.orthanc("TEMPLATE", dicom=False)
    ws = t.workspace(o)
    ws.write("dwi", {
        "CheckOn": "Study", "IsActive": True, "Action": "DOWNLOAD",
        "Tags": [{"TagName": "SeriesDescription", "Level": "Series", "Operator": "startswith",
                  "Value": "dwi", "MinCount": 2}],
        "Naming": "{StudyDate:%Y/%m}/{AccessionNumber|NOACC}-{PatientName.family}",
        "SeriesNaming": "{SeriesNumber:03}-{SeriesDescription}",
        "FileNaming": "{SOPInstanceUID}.dcm",
    })
    series = [{"SeriesNumber": str(n), "SeriesDate": "20240205", "SeriesDescription": d,
               "Modality": "MR", "instances": 2}
              for n, d in ((1, "T1"), (2, "DWI b0"), (3, "DWI a/b"))]
    s = o.create_study("TPL1", "Müller^Jörg", "5", series,
                       study_tags={"StudyDescription": "BRAIN", "StudyDate": "20240205",
                                   "AccessionNumber": ""})
    one_dwi = o.create_study("TPL2", "ONLY^ONE", "6", series[:2],
                             study_tags={"StudyDescription": "BRAIN", "StudyDate": "20240205"})
    o.wait_stable(s["study"])
    o.wait_stable(one_dwi["study"])
    ws.run(["run", "--once"], expect_rc=0)
    folder = "dwi/2024/02/NOACC-Müller"
    names = {"1": "001-T1", "2": "002-DWI b0", "3": "003-DWI a_b"}
    expected = {}
    by_id = {x["ID"]: x for x in o.study_series(s["study"])}
    for inst in o.study_instances(s["study"]):
        number = by_id[inst["ParentSeries"]]["MainDicomTags"]["SeriesNumber"]
        sop = inst["MainDicomTags"]["SOPInstanceUID"]
        expected[f"{folder}/{names[number]}/{sop}.dcm"] = inst["ID"]
    h.assert_tree_matches(o, ws.storage, expected)


if __name__ == "__main__":
    h.main()
