#!/usr/bin/env python3
"""test_faults_input.py - issue 6, "bad input never crashes it", at the
level of the running daemon (the unit tests and rule cases cover the engine
alone; test_faults_proxy.py covers malformed server answers):

  - test_runaway_rules_do_not_hurt_the_daemon: rules that loop forever (also
    inside pcall), exhaust memory, or raise, next to a good rule; every study
    is exported by the good rule, each bad rule is reported for each study,
    the daemon stays up and its peak memory stays bounded;
  - test_rules_folder_disappears: the rules folder is removed under the
    running daemon and comes back later: no crash, the problem is reported
    once (not once per poll), and once the folder is back the daemon exports
    again, including the study that became stable while the folder was gone
    (a missing folder is not "no rule matches": deciding with no rules would
    lose that study for good).
"""

import os
import shutil
import sys

sys.path.insert(0, os.path.join(os.environ.get("AR_SOURCE_DIR", os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "..", "..")), "tests", "lib"))
import harness as h  # noqa: E402
import faults as f  # noqa: E402

LOOP = """return {
  check_on = "study", action = "download",
  match = function(study) while true do end end,
}
"""
LOOP_IN_PCALL = """return {
  check_on = "study", action = "download",
  match = function(study)
    while true do pcall(function() while true do end end) end
  end,
}
"""
HOG = """return {
  check_on = "study", action = "download",
  match = function(study)
    local t = {}
    for i = 1, 1e9 do t[i] = string.rep("x", 1024) .. i end
    return true
  end,
}
"""
RAISE = """return {
  check_on = "study", action = "download",
  match = function(study) error("rule says no") end,
}
"""
BAD_NAME = """return {
  check_on = "study", action = "download",
  match = function(study) return true end,
  name = function(study) return {"..", "/", string.rep("\\255", 400)} end,
}
"""


def vm_hwm_kb(pid):
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def study(o, k, desc="INPUT"):
    return o.create_study(f"PIN{k}", "BAD^INPUT", str(k),
                          [{"SeriesNumber": "1", "SeriesDate": "20240701", "instances": 2,
                            "content": h.png_data_uri(32, 32, seed=k)}],
                          study_tags={"StudyDescription": desc})


def alive_and(d, cond):
    def check():
        if not d.alive():
            raise AssertionError(f"daemon exited {d.proc.returncode}:\n{h.tail(d.stderr())}")
        return cond()
    return check


def test_runaway_rules_do_not_hurt_the_daemon(t):
    o = t.orthanc("RUNAWAY", dicom=False)
    ws = t.workspace(o)
    ws.rule("good", tags=[("StudyDescription", "Study", "input")])
    for name, src in (("loop", LOOP), ("loop_pcall", LOOP_IN_PCALL), ("hog", HOG),
                      ("raise", RAISE), ("badname", BAD_NAME)):
        ws.write(name + ".lua", src)
    env = ws.env(AUTORTHANC_LOG_FORMAT="json", AUTORTHANC_RULE_TIMEOUT_MS="500",
                 AUTORTHANC_RULE_MEMORY_MB="32")
    d = t.daemon(["run"], env=env, cwd=ws.root)
    studies = [study(o, k) for k in (1, 2)]
    for s in studies:
        o.wait_stable(s["study"])
    expected = {}
    for k, s in zip((1, 2), studies):
        expected.update(h.expected_files(o, s["study"], f"good/PIN{k}-BAD-EX{k}"))

    def good_done():
        try:
            h.assert_tree_matches(o, ws.storage, expected, exact=False)
            return True
        except AssertionError:
            return False
    h.wait_for(alive_and(d, good_done), 60, "the good rule's exports")
    hwm = vm_hwm_kb(d.proc.pid)
    err = d.stderr()
    assert d.stop() == 0, "the daemon did not stop cleanly"
    errors = f.events(err, "rule.error")
    for bad in ("loop", "loop_pcall", "hog", "raise"):
        n = sum(1 for e in errors if e.get("rule") == bad)
        assert n == 2, f"rule {bad}: {n} rule.error lines, expected one per study (2)"
    # the bad name hook: refused or sanitised, never outside good/ or badname/
    files, dirs = h.walk_tree(ws.storage)
    for p in files + dirs:
        assert p.split("/")[0] in ("good", "badname"), f"unexpected path {p}"
        assert ".." not in p.split("/"), f"dot-dot component in {p}"
    assert hwm < 256 * 1024, f"peak RSS {hwm // 1024} MiB with a 32 MiB rule memory cap"
    print(f"# peak RSS {hwm // 1024} MiB", flush=True)


def test_rules_folder_disappears(t):
    o = t.orthanc("NORULES", dicom=False)
    ws = t.workspace(o)
    ws.rule("all", tags=[("StudyDescription", "Study", "input")])
    saved = os.path.join(t.tmp, "rules-saved")
    shutil.copytree(ws.rules, saved)
    d = t.daemon(["run"], env=ws.env(AUTORTHANC_LOG_FORMAT="json"), cwd=ws.root)
    first = study(o, 1)
    o.wait_stable(first["study"])
    h.wait_for(alive_and(d, lambda: f.events(d.stderr(), "export.done")), 30, "first export")

    shutil.rmtree(ws.rules)
    missing = study(o, 2)
    o.wait_stable(missing["study"])
    h.wait_for(alive_and(d, lambda: any("rules" in f.message(e).lower()
                                        for e in f.events(d.stderr())
                                        if e.get("level") in ("error", "warn"))), 15,
               "the missing rules folder to be reported")
    shutil.copytree(saved, ws.rules)
    after = study(o, 3)
    o.wait_stable(after["study"])
    h.wait_for(alive_and(d, lambda: os.path.isdir(ws.path("all", "PIN3-BAD-EX3"))), 30,
               "an export once the rules folder is back")
    err = d.stderr()
    assert d.stop() == 0
    reports = [e for e in f.events(err)
               if e.get("level") in ("error", "warn") and "rules" in f.message(e).lower()]
    assert len(reports) <= 2, (f"the missing rules folder was reported {len(reports)} times "
                               f"(once expected, not once per poll)")
    h.assert_tree_matches(o, ws.storage, h.expected_files(o, after["study"],
                                                          "all/PIN3-BAD-EX3"), exact=False)
    assert os.path.isdir(ws.path("all", "PIN2-BAD-EX2")), (
        "the study that became stable while the rules folder was missing was never "
        "exported: the daemon decided it with no rules and moved past it")
    h.assert_tree_matches(o, ws.storage, h.expected_files(o, missing["study"],
                                                          "all/PIN2-BAD-EX2"), exact=False)


if __name__ == "__main__":
    h.main()
