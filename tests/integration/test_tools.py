#!/usr/bin/env python3
"""test_tools.py - issue 4, the rule workbench, against a real Orthanc:
  - the REPL driven through a pipe with real scripts (an unfinished chunk
    continues with the ">> " prompt, errors print and the prompt survives,
    =expr and plain expressions print, try() explains a miss with the actual
    value, name() gives the daemon's folder, the budget stops a runaway line)
    and through a pseudo-terminal, where Ctrl-C stops `while true do end`
    and the REPL goes on;
  - `snapshot` -> `test --fixture` gives the same verdict and folder as
    `test STUDY` (by Orthanc id and by StudyInstanceUID) and as the daemon:
    `run --once` exports a study iff the verdict was a match, into that folder;
  - `test` predicts a folder collision the state database would resolve;
  - `backtest` counts (studies, series, bytes) equal what `run --once` then
    exports; --since keeps the studies from a date on;
  - `fire` exports a study now through the job ledger;
  - `test` exit codes (0 match, 1 no match, --expect-no-match, 2 for input
    errors) and `test --cases` runs the rule cases like the unit test."""

import json
import os
import pty
import re
import select
import signal
import sys
import time

sys.path.insert(0, os.path.join(os.environ.get("AR_SOURCE_DIR", os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "..", "..")), "tests", "lib"))
import harness as h  # noqa: E402


def brain(o, pid="P100", desc="MRI BRAIN W/O", date="20240131", series=None):
    return o.create_study(
        pid, "DOE^JOHN", "42",
        series or [{"SeriesNumber": "1", "SeriesDate": date, "Modality": "MR", "instances": 2},
                   {"SeriesNumber": "2", "SeriesDate": date, "Modality": "MR", "instances": 1}],
        study_tags={"StudyDescription": desc, "StudyDate": date})


def chest(o, pid="P200", date="20230615"):
    return o.create_study(
        pid, "ROE^JANE", "7",
        [{"SeriesNumber": "1", "SeriesDate": date, "Modality": "CT", "instances": 3},
         {"SeriesNumber": "2", "SeriesDate": date, "Modality": "SR", "instances": 1}],
        study_tags={"StudyDescription": "CT CHEST", "StudyDate": date})


def repl(ws, script, extra=(), env=None):
    """Run `autorthanc repl` with script on its stdin (a pipe)."""
    r = h.run_autorthanc(["repl"] + list(extra), env=ws.env(**(env or {})), cwd=ws.root,
                         stdin_data=script)
    assert r.rc == 0, f"repl exited {r.rc}: {r.stderr}"
    return r.stdout


def outputs(stdout):
    """What each prompt's input printed: the text between prompts ("> " or
    ">> " at the start of a line or right after the previous prompt)."""
    return re.split(r"(?:>> |> )", stdout)


def test_repl_through_a_pipe(t):
    o = t.orthanc("REPL", dicom=False)
    ws = t.workspace(o)
    ws.rule("knee", tags=[("StudyDescription", "Study", "knee")])
    ws.rule("mr", tags=[("Modality", "Series", "MR")])
    s = brain(o)
    o.wait_stable(s["study"])
    script = "\n".join([
        "=1 + 1",                                   # =expr prints
        "function twice(n)",                        # unfinished: continues
        "  return n * 2",
        "end",
        "twice(21)",                                # plain expression prints
        "nosuch()",                                 # error, prompt survives
        "'after the error'",
        f"ids = studies{{PatientID = 'P1*'}}",
        "#ids, ids[1]",
        f"s = study('{s['study_uid']}')",           # by StudyInstanceUID
        "s.id, s.tags.StudyDescription, #s.series",
        "try('knee', s)",                           # a miss, with the actual value
        "try('mr', s)",
        "name('mr', s)",
        "s.tags.StudyDescription = 'x'",            # read-only, as for rules
        "io",                                       # the sandbox's globals
        "while true do end",                        # stopped by the budget
        "'still here'",
        "",
    ])
    out = repl(ws, script, env={"AUTORTHANC_RULE_INSTRUCTION_BUDGET": "200000"})
    assert out.startswith("autorthanc "), out[:200]
    assert "\n> 2\n" in out, out
    assert ">> >> " in out, f"an unfinished chunk must prompt for more:\n{out}"
    assert "> 42\n" in out, out
    assert "error: stdin:1: undefined global 'nosuch'" in out, out
    assert "> after the error\n" in out, out
    assert f"> 1\t{s['study']}\n" in out, out
    assert f"> {s['study']}\tMRI BRAIN W/O\t2\n" in out, out
    assert ('> false\tTags[1] failed: StudyDescription contains "knee" '
            '(value: "MRI BRAIN W/O")\n') in out, out
    assert "> true\tmatched\n" in out, out
    assert "> mr/P100-DOE-EX42\n" in out, out
    assert "error: stdin:1: the study is read-only" in out, out
    assert "error: stdin:1: undefined global 'io'" in out, out
    assert "error: exceeded instruction budget (200000 instructions) at stdin:1" in out, out
    assert out.rstrip().endswith("> still here\n>") or "> still here\n" in out, out
    # the daemon agrees with name(): the folder it exports is the one shown
    ws.run_once()
    h.assert_tree_matches(o, ws.storage, h.expected_files(o, s["study"], "mr/P100-DOE-EX42"))


def test_repl_fixture_without_orthanc(t):
    ws = t.workspace(None)
    ws.write("brainy.lua", """
return {
  check_on = "study", action = "download",
  match = function(study)
    print("looking at " .. study.tags.StudyDescription)
    return contains(study.tags.StudyDescription, "brain"), "not a brain study"
  end,
  name = function(study) return {"by-hook", study.patient.PatientID} end,
}
""")
    fixture = os.path.join(h.SOURCE_DIR, "tests", "cases", "_fixtures", "mr_brain.json")
    port = t.dead_port()
    out = repl(ws, "s = study()\n=s.patient.PatientID\ntry('brainy')\nname('brainy', s)\n"
               "rules()[1].name\nstudies{}\n",
               extra=["--fixture", fixture],
               env={"AUTORTHANC_ORTHANC_URL": f"http://127.0.0.1:{port}"})
    with open(fixture, encoding="utf-8") as f:
        fx = json.load(f)
    pid = fx["study"]["PatientMainDicomTags"]["PatientID"]
    assert f"> {pid}\n" in out, out
    assert "[rule] looking at " in out, out
    assert "> brainy/by-hook/" + pid + "\n" in out, out
    assert "> brainy\n" in out, out
    assert "error: " in out.split("> brainy\n", 1)[1], "studies{} without Orthanc must fail " + out


def read_until(fd, buf, pattern, timeout=20):
    deadline = time.monotonic() + timeout
    while pattern not in buf[0]:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"timed out waiting for {pattern!r}; the terminal shows:\n"
                                 f"{buf[0][-800:].decode('utf-8', 'replace')}")
        r, _, _ = select.select([fd], [], [], left)
        if r:
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                chunk = b""
            if not chunk:
                raise AssertionError(f"the REPL closed the terminal while waiting for {pattern!r}:"
                                     f"\n{buf[0][-800:].decode('utf-8', 'replace')}")
            buf[0] += chunk
    at = buf[0].index(pattern) + len(pattern)
    seen, buf[0] = buf[0][:at], buf[0][at:]
    return seen


def test_repl_ctrl_c_in_a_terminal(t):
    """Through a pseudo-terminal (readline on): Ctrl-C stops a runaway line,
    the REPL goes on; Ctrl-C at the prompt drops the line being typed."""
    ws = t.workspace(None)
    ws.rule("any", tags=[("PatientID", "Patient", "")])
    fixture = os.path.join(h.SOURCE_DIR, "tests", "cases", "_fixtures", "mr_brain.json")
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": ws.root, "TERM": "xterm"}
    for k in ("ASAN_OPTIONS", "UBSAN_OPTIONS", "LSAN_OPTIONS"):
        if k in os.environ:
            env[k] = os.environ[k]
    env.update(ws.env(AUTORTHANC_RULE_INSTRUCTION_BUDGET="1000000000000000",
                      AUTORTHANC_RULE_TIMEOUT_MS="3600000"))
    pid, fd = pty.fork()
    if pid == 0:
        try:
            os.chdir(ws.root)
            os.execve(h.binary(), ["autorthanc", "repl", "--fixture", fixture], env)
        finally:
            os._exit(127)
    t.defer(lambda: os.kill(pid, signal.SIGKILL))
    buf = [b""]
    read_until(fd, buf, b"> ")
    os.write(fd, b"n = 0 while true do n = n + 1 end\r")
    # the loop runs (nothing but the echo comes back) until Ctrl-C
    read_until(fd, buf, b"end\r\n")
    r, _, _ = select.select([fd], [], [], 0.5)
    assert not r or b"error" not in os.read(fd, 4096), "the loop ended by itself"
    os.write(fd, b"\x03")
    seen = read_until(fd, buf, b"> ")
    assert b"error: interrupted at stdin:1" in seen, seen
    os.write(fd, b"n ~= 0, 40 + 2\r")
    seen = read_until(fd, buf, b"> ")
    assert b"true\t42" in seen, seen
    os.write(fd, b"x = 'never run")
    read_until(fd, buf, b"never run")
    os.write(fd, b"\x03")
    read_until(fd, buf, b"^C")
    read_until(fd, buf, b"> ")
    os.write(fd, b"rawget(_G, 'x') == nil\r")
    seen = read_until(fd, buf, b"> ")
    assert b"true" in seen, seen
    os.write(fd, b"\x04")  # end of input: the REPL exits 0
    deadline = time.monotonic() + 10
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        assert time.monotonic() < deadline, "the REPL did not exit at end of input"
        select.select([fd], [], [], 0.1)
        try:
            os.read(fd, 4096)
        except OSError:
            pass
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, status
    os.close(fd)


def verdict_lines(stdout):
    """The verdict and path lines of `test` output, without the study label."""
    lines = stdout.splitlines()[1:]
    return [re.sub(r"^(study|fixture) \S+ ", "", ln) for ln in lines]


def test_snapshot_round_trip_agrees_with_the_daemon(t):
    o = t.orthanc("ROUNDTRIP", dicom=False)
    ws = t.workspace(o)
    ws.rule("brain", tags=[("StudyDescription", "Study", "brain"), ("Modality", "Series", "MR")])
    yes, no = brain(o), chest(o)
    for s in (yes, no):
        o.wait_stable(s["study"])
    expect = {}
    for s, want_rc in ((yes, 0), (no, 1)):
        by_id = ws.run(["test", "brain", s["study"]], expect_rc=want_rc)
        by_uid = ws.run(["test", "brain", s["study_uid"]], expect_rc=want_rc)
        assert verdict_lines(by_id.stdout) == verdict_lines(by_uid.stdout), \
            (by_id.stdout, by_uid.stdout)
        fixture = os.path.join(t.tmp, s["study"] + ".json")
        snap = ws.run(["snapshot", s["study"], "--instances"], expect_rc=0)
        with open(fixture, "w", encoding="utf-8") as f:
            f.write(snap.stdout)
        loaded = json.loads(snap.stdout)
        assert loaded["study"]["ID"] == s["study"]
        assert len(loaded["instances"]) == len(s["instances"])
        by_fixture = ws.run(["test", "brain", "--fixture", fixture], expect_rc=want_rc)
        assert verdict_lines(by_fixture.stdout) == verdict_lines(by_id.stdout), \
            (by_fixture.stdout, by_id.stdout)
        expect[s["study"]] = by_id.stdout
    assert ": match\n  path: brain/P100-DOE-EX42 (3 files, " in expect[yes["study"]]
    assert ('reason: Tags[1] failed: StudyDescription contains "brain" (value: "CT CHEST")'
            in expect[no["study"]]), expect[no["study"]]
    # without --instances the fixture has no instances, and the same verdict
    lean = ws.run(["snapshot", yes["study_uid"]], expect_rc=0)
    assert json.loads(lean.stdout)["instances"] == []
    # the daemon does what `test` said: the match exported into that folder, nothing else
    ws.run_once()
    h.assert_tree_matches(o, ws.storage, h.expected_files(o, yes["study"], "brain/P100-DOE-EX42"))


def test_test_predicts_a_collision(t):
    o = t.orthanc("PREDICT", dicom=False)
    ws = t.workspace(o)
    ws.rule("r", tags=[("StudyDescription", "Study", "chest")])
    series = [{"SeriesNumber": "1", "SeriesDate": "20240601", "Modality": "CR"}]
    a = o.create_study("P1", "DOE^JOHN", "1", series, study_tags={"StudyDescription": "CHEST"})
    seq = o.wait_stable(a["study"])
    ws.run_once()
    b = o.create_study("P1", "DOE^JOHN", "1", series, study_tags={"StudyDescription": "CHEST PA"})
    r = ws.run(["test", "r", b["study"]], expect_rc=0)
    want = f"r/P1-DOE-EX1~{b['study'][:8]}"
    assert f"collision: r/P1-DOE-EX1 is already owned by r|{a['study']}" in r.stdout, r.stdout
    assert f"would get {want}" in r.stdout, r.stdout
    # a dry run claims nothing: the daemon then uses the folder predicted
    o.wait_stable(b["study"], since=seq)
    ws.run_once()
    h.assert_tree_matches(o, ws.storage, dict(h.expected_files(o, a["study"], "r/P1-DOE-EX1"),
                                              **h.expected_files(o, b["study"], want)))


def test_backtest_counts_what_run_once_exports(t):
    o = t.orthanc("BACKTEST", dicom=False)
    ws = t.workspace(o)
    ws.rule("brain", tags=[("StudyDescription", "Study", "brain")])
    ws.rule("ct_series", check_on="Series", tags=[("Modality", "Series", "CT")])
    ws.rule("nothing", tags=[("StudyDescription", "Study", "no such study")])
    ws.rule("asleep", tags=[("PatientID", "Patient", "P")], active=False)
    studies = [brain(o, "P101", date="20220101"), brain(o, "P102", date="20240301"),
               chest(o, "P201", date="20230101"), chest(o, "P202", date="20240402")]
    for s in studies:
        o.wait_stable(s["study"])
    r = ws.run(["backtest", "--list"], expect_rc=0)
    assert "backtest of 4 rule(s) over 4 studies" in r.stdout, r.stdout
    counts = {}
    for m in re.finditer(r"^(\w+): (\d+) stud(?:y|ies), (?:(\d+) series, )?(\d+) bytes", r.stdout,
                         re.M):
        counts[m.group(1)] = (int(m.group(2)), int(m.group(3) or 0), int(m.group(4)))
    assert counts["brain"][0] == 2 and counts["ct_series"][:2] == (2, 2), r.stdout
    assert counts["nothing"] == (0, 0, 0), r.stdout
    assert "asleep: inactive" in r.stdout, r.stdout
    listed = re.findall(r"^  ([0-9a-f-]{44})(?: series [0-9a-f-]{44})?  (\S+)  ", r.stdout, re.M)
    assert len(listed) == 4, r.stdout

    since = ws.run(["backtest", "brain", "ct_series", "--since", "2024-01-01"], expect_rc=0)
    assert "over 2 studies" in since.stdout, since.stdout
    assert re.search(r"^brain: 1 study, ", since.stdout, re.M), since.stdout
    assert re.search(r"^ct_series: 1 study, 1 series, ", since.stdout, re.M), since.stdout
    assert h.walk_tree(ws.storage) == ([], []), "backtest must export nothing"

    ws.run_once()
    files, _ = h.walk_tree(ws.storage)
    for rule, (nstudies, nseries, nbytes) in counts.items():
        mine = [f for f in files if f.startswith(rule + "/")]
        folders = {f.split("/")[1] for f in mine}
        assert len(folders) == (nseries or nstudies), (rule, folders, counts[rule])
        size = sum(os.path.getsize(os.path.join(ws.storage, f)) for f in mine)
        assert size == nbytes, (rule, size, nbytes)
    assert sorted(f"{p}/" for _, p in listed) == sorted(
        {"/".join(f.split("/")[:2]) + "/" for f in files}), (listed, files)


def test_fire_exports_a_study_now(t):
    o = t.orthanc("FIRE", dicom=False)
    ws = t.workspace(o)
    ws.rule("brain", tags=[("StudyDescription", "Study", "brain")])
    ws.rule("sleeping", tags=[("StudyDescription", "Study", "brain")], active=False)
    s = brain(o, "P300")
    # no need to wait for Orthanc's stable event: fire acts now
    r = ws.run(["fire", s["study_uid"]], expect_rc=0)
    assert re.search(r"^brain: job \d+ done: exported to brain/P300-DOE-EX42$", r.stdout, re.M), \
        r.stdout
    h.assert_tree_matches(o, ws.storage, h.expected_files(o, s["study"], "brain/P300-DOE-EX42"))
    jobs = ws.run(["jobs"], expect_rc=0)
    assert re.search(r"\tdone\t.*\tbrain\tdownload\tstudy\t" + s["study"], jobs.stdout), jobs.stdout
    # an inactive rule runs when named; a rule that does not match does nothing
    r = ws.run(["fire", s["study"], "--rule", "sleeping"], expect_rc=0)
    assert "sleeping: job" in r.stdout, r.stdout
    ws.rule("knee", tags=[("StudyDescription", "Study", "knee")])
    r = ws.run(["fire", s["study"], "--rule", "knee"], expect_rc=1)
    assert "knee: no match: Tags[1] failed" in r.stdout, r.stdout
    assert not os.path.exists(ws.path("knee"))
    # the daemon later sees the stable study: it exports it again, whole, in place
    o.wait_stable(s["study"])
    ws.run_once()
    h.assert_tree_matches(o, ws.storage, dict(
        h.expected_files(o, s["study"], "brain/P300-DOE-EX42"),
        **h.expected_files(o, s["study"], "sleeping/P300-DOE-EX42")))


def test_test_exit_codes_and_cases(t):
    o = t.orthanc("EXITCODES", dicom=False)
    ws = t.workspace(o)
    ws.rule("brain", tags=[("StudyDescription", "Study", "brain")])
    ws.write("broken.json", '{"CheckOn": "Study", "Tags": [}')
    yes, no = brain(o), chest(o)
    ws.run(["test", "brain", yes["study"]], expect_rc=0)
    ws.run(["test", "brain", yes["study"], no["study"]], expect_rc=1)
    ws.run(["test", "brain", no["study"], "--expect-no-match"], expect_rc=0)
    ws.run(["test", "brain", yes["study"], "--expect-no-match"], expect_rc=1)
    r = ws.run(["test", "brain", "1.2.3.4.5"], expect_rc=2)
    assert "no study has the id or StudyInstanceUID '1.2.3.4.5'" in r.stdout, r.stdout
    r = ws.run(["test", "nosuch", yes["study"]], expect_rc=2)
    assert "no rule named 'nosuch'" in r.stderr, r.stderr
    r = ws.run(["test", "broken", yes["study"]], expect_rc=2)
    assert "broken.json" in r.stderr, r.stderr
    ws.run(["test", "brain", "--fixture", os.path.join(t.tmp, "missing.json")], expect_rc=2)
    ws.run(["test", "brain"], expect_rc=2)
    # a rule file instead of a rule name
    ws.run(["test", os.path.join(ws.rules, "brain.json"), yes["study"]], expect_rc=0)

    cases = os.path.join(h.SOURCE_DIR, "tests", "cases")
    ncases = len([d for d in os.listdir(cases)
                  if not d.startswith(("_", ".")) and os.path.isdir(os.path.join(cases, d))])
    r = ws.run(["test", "--cases", cases], expect_rc=0)
    assert r.stdout.rstrip().endswith(f"{ncases} passed, 0 failed"), r.stdout[-300:]
    r = ws.run(["test", "--cases", cases, "escape_"], expect_rc=0)
    assert re.search(r"^ok - escape_io_open$", r.stdout, re.M), r.stdout
    # a case that fails says why, and exits 1
    bad = os.path.join(t.tmp, "cases", "wrong_verdict")
    os.makedirs(bad)
    with open(os.path.join(bad, "rule.json"), "w") as f:
        json.dump(h.rule_json(tags=[("StudyDescription", "Study", "knee")]), f)
    with open(os.path.join(bad, "expect.json"), "w") as f:
        json.dump({"matched": True, "fixture": os.path.join(cases, "_fixtures", "mr_brain.json")},
                  f)
    r = ws.run(["test", "--cases", os.path.dirname(bad)], expect_rc=1)
    assert "not ok - wrong_verdict: matched is false" in r.stdout, r.stdout
    assert "0 passed, 1 failed" in r.stdout, r.stdout


if __name__ == "__main__":
    h.main()
