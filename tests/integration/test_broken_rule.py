#!/usr/bin/env python3
"""test_broken_rule.py - issue 2: a broken rule file (invalid JSON, wrong
types, unknown Level/Action/CheckOn) is reported with its file name and the
other rules keep running: `run --once` exits 0 and exports through the good
rules; `check` prints one line per rule and exits 1 naming the broken file;
`check --emit-lua` prints the Lua a JSON rule compiles to."""

import os
import shutil
import subprocess
import sys

sys.path.insert(0, os.path.join(os.environ.get("AR_SOURCE_DIR", os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "..", "..")), "tests", "lib"))
import harness as h  # noqa: E402

BROKEN = {
    "bad_syntax": '{"CheckOn": "Study", "Action": "DOWNLOAD", "Tags": [ ',
    "bad_level": h.rule_json(tags=[("PatientID", "Planet", "P")]),
    "bad_action": dict(h.rule_json(tags=[("PatientID", "Patient", "P")]), Action="DELETE"),
    "bad_checkon": dict(h.rule_json(tags=[("PatientID", "Patient", "P")]), CheckOn="Patient"),
    "bad_tags_type": dict(h.rule_json(), Tags="PatientID=P"),
    "bad_value_type": {"CheckOn": "Study", "IsActive": True, "Action": "DOWNLOAD",
                       "Tags": [{"TagName": "PatientID", "Level": "Patient",
                                 "Value": {"text": "P"}}]},
    "bad_tagname_type": {"CheckOn": "Study", "IsActive": True, "Action": "DOWNLOAD",
                         "Tags": [{"TagName": ["PatientID"], "Level": "Patient", "Value": "P"}]},
    "not_an_object": "[1, 2, 3]",
}


def good_rules(ws):
    ws.rule("good_study", tags=[("PatientID", "Patient", "P30")])
    ws.rule("good_series", check_on="Series", tags=[("Modality", "Series", "MR")])


def write_broken(ws, names=None):
    for name in names or BROKEN:
        ws.write(name, BROKEN[name])


def output(r):
    return r.stdout + r.stderr


def test_run_once_uses_good_rules_and_names_broken_files(t):
    o = t.orthanc("BROKEN", dicom=False)
    ws = t.workspace(o)
    good_rules(ws)
    write_broken(ws)
    s = o.create_study("P30", "BAD^RULES", "2",
                       [{"SeriesNumber": "1", "SeriesDate": "20240701", "Modality": "MR",
                         "instances": 2}])
    o.wait_stable(s["study"])
    r = ws.run_once()  # exit 0: a broken rule is not a configuration error
    for name in BROKEN:
        assert f"{name}.json" in r.stderr, f"stderr does not name {name}.json:\n{h.tail(r.stderr)}"
    expected = h.expected_files(o, s["study"], "good_study/P30-BAD-EX2")
    expected.update(h.expected_files(o, s["study"], "good_series/P30-BAD-EX2-SE1"))
    h.assert_tree_matches(o, ws.storage, expected)
    for name in BROKEN:
        assert not os.path.exists(ws.path(name)), f"broken rule {name} produced a folder"


def test_check_exits_1_naming_each_broken_file(t):
    ws = t.workspace()
    good_rules(ws)
    write_broken(ws)
    r = ws.check()
    assert r.rc == 1, f"check exited {r.rc} with broken rules:\n{output(r)}"
    for name in BROKEN:
        assert f"{name}.json" in output(r), f"check output does not name {name}.json:\n{output(r)}"
    lines = [ln for ln in output(r).splitlines() if "good_study" in ln]
    assert lines, f"no line for good_study:\n{output(r)}"
    line = lines[0].lower()
    assert "ok" in line and "study" in line and "download" in line, \
        f"good_study's line should give trigger, action and OK: {lines[0]!r}"
    for name in BROKEN:
        bad = [ln for ln in output(r).splitlines() if name in ln]
        assert bad and not any(ln.rstrip().endswith("OK") for ln in bad), \
            f"{name} reported as OK: {bad}"


def test_check_each_kind_alone(t):
    # every kind of breakage is caught on its own (not only by the first)
    ws = t.workspace()
    for name in BROKEN:
        path = ws.write(name, BROKEN[name])
        r = ws.check([path])
        assert r.rc == 1, f"check {name}.json exited {r.rc}:\n{output(r)}"
        assert f"{name}.json" in output(r), output(r)
        os.remove(path)


def test_check_good_rules_exit_0(t):
    ws = t.workspace()
    good_rules(ws)
    ws.rule("inactive", tags=[("PatientID", "Patient", "X")], active=False)
    ws.write("master_broken", "{")       # ignored names are not checked
    ws.write("some_template", "{")
    r = ws.check()
    assert r.rc == 0, f"check exited {r.rc}:\n{output(r)}"
    out = output(r)
    assert "good_study" in out and "good_series" in out, out
    # ignored names are not checked (no BROKEN), but listed with the reason
    for name, why in (("master_broken.json", "starting with 'master'"),
                      ("some_template.json", "containing 'template'")):
        line = [ln for ln in out.splitlines() if name in ln]
        assert len(line) == 1 and "IGNORED" in line[0] and why in line[0], out
    assert "BROKEN" not in out, out
    series_line = [ln for ln in out.splitlines() if "good_series" in ln][0].lower()
    assert "series" in series_line and "ok" in series_line, series_line
    # naming one good file
    r = ws.check([os.path.join(ws.rules, "good_study.json")])
    assert r.rc == 0, output(r)


def test_check_warns_about_what_a_user_would_not_mean(t):
    """A rule with no conditions ("Tags": [], the disk-filling mistake) is
    valid but warned about; files that look like rules but are not loaded
    (a capitalised extension, a backup copy) are listed with the reason."""
    ws = t.workspace()
    good_rules(ws)
    ws.write("everything", {"CheckOn": "Study", "IsActive": True, "Action": "DOWNLOAD",
                            "Tags": []})
    ws.write("chest rule.JSON", {"CheckOn": "Study", "IsActive": True, "Action": "DOWNLOAD",
                                 "Tags": [{"TagName": "BodyPartExamined", "Value": "CHEST"}]})
    ws.write("good_study.json.bak", "{}")
    ws.write("README.txt", "notes")
    r = ws.check()
    assert r.rc == 0, f"check exited {r.rc}:\n{output(r)}"
    out = output(r)
    warn = [ln for ln in out.splitlines() if ln.startswith("everything") and "WARNING" in ln]
    assert warn and "no conditions" in warn[0] and "every study matches" in warn[0], out
    assert not [ln for ln in out.splitlines() if ln.startswith("good_study ") and "WARNING" in ln], out
    jl = [ln for ln in out.splitlines() if "chest rule.JSON" in ln]
    assert jl and "IGNORED" in jl[0] and "lower-case .json" in jl[0], out
    bl = [ln for ln in out.splitlines() if "good_study.json.bak" in ln]
    assert bl and "IGNORED" in bl[0], out
    assert "README.txt" not in out, out


def test_emit_lua(t):
    ws = t.workspace()
    path = ws.rule("emit_me", tags=[("StudyDescription", "Study", "Needle-Xyz"),
                                    ("Modality", "Series", "MR")])
    r = ws.check(["--emit-lua", path])
    assert r.rc == 0, f"check --emit-lua exited {r.rc}:\n{output(r)}"
    lua = r.stdout
    assert "function" in lua and "return" in lua, f"no Lua on stdout:\n{lua}"
    assert "needle-xyz" in lua.lower(), f"the tag value is not in the Lua:\n{lua}"
    luac = shutil.which("luac5.4") or shutil.which("luac")
    if luac:
        # the printed Lua is a chunk a user can start from: it must at least parse
        src = os.path.join(t.tmp, "emitted.lua")
        with open(src, "w") as f:
            f.write(lua)
        p = subprocess.run([luac, "-p", src], capture_output=True, text=True)
        assert p.returncode == 0, f"emitted Lua does not parse: {p.stderr}\n{lua}"
    # all rules of the folder
    ws.rule("second", tags=[("PatientID", "Patient", "Other-Abc")])
    r = ws.check(["--emit-lua"])
    assert r.rc == 0, output(r)
    assert "needle-xyz" in r.stdout.lower() and "other-abc" in r.stdout.lower(), r.stdout


def test_broken_file_does_not_stop_later_fix(t):
    # a rule fixed between two runs is used by the next run
    o = t.orthanc("FIXED", dicom=False)
    ws = t.workspace(o)
    ws.write("later", BROKEN["bad_syntax"])
    s = o.create_study("P31", "FIX", "1", [{"SeriesNumber": "1", "SeriesDate": "20240702"}])
    seq = o.wait_stable(s["study"])
    r = ws.run_once()
    assert "later.json" in r.stderr
    assert not os.listdir(ws.storage)
    ws.rule("later", tags=[("PatientID", "Patient", "P31")])
    s2 = o.create_study("P32", "FIX", "2", [{"SeriesNumber": "1", "SeriesDate": "20240702"}])
    s3 = o.create_study("P31", "FIX", "3", [{"SeriesNumber": "1", "SeriesDate": "20240702"}])
    o.wait_stable(s2["study"], since=seq)
    o.wait_stable(s3["study"], since=seq)
    r = ws.run_once()
    h.assert_tree_matches(o, ws.storage, h.expected_files(o, s3["study"], "later/P31-FIX-EX3"),
                          exact=False)
    assert not [n for n in os.listdir(ws.path("later")) if n.startswith("P32")]


if __name__ == "__main__":
    h.main()
