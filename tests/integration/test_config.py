#!/usr/bin/env python3
"""test_config.py - issue 2, command line and configuration: a YAML file
(--config or AUTORTHANC_CONFIG), environment variables overriding it, the
original's alias variables, unknown keys and bad values are exit 2 naming the
key, the password never printed (not even in errors), --help and --version,
AUTORTHANC_START_AT=now, and the state kept in SQLite outside the storage."""

import os
import re
import sys

sys.path.insert(0, os.path.join(os.environ.get("AR_SOURCE_DIR", os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "..", "..")), "tests", "lib"))
import harness as h  # noqa: E402

PASSWORD = "Pa55:w@rd/Secret-7Qz"


def yaml_quote(v):
    return '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"'


def write_yaml(path, mapping):
    with open(path, "w", encoding="utf-8") as f:
        for k, v in mapping.items():
            f.write(f"{k}: {v if isinstance(v, (int, float)) else yaml_quote(v)}\n")
    return path


def one_study(o, pid="P50", desc="CONFIG"):
    s = o.create_study(pid, "CONF^IG", "1", [{"SeriesNumber": "1", "SeriesDate": "20240901",
                                              "instances": 2}],
                       study_tags={"StudyDescription": desc})
    o.wait_stable(s["study"])
    return s


def bare_env():
    """No AUTORTHANC_* variable at all (run_autorthanc starts from a clean env)."""
    return {}


def run(t, args, env=None, cwd=None, **kw):
    return h.run_autorthanc(args, env=env or {}, cwd=cwd or t.tmp, **kw)


def out(r):
    return r.stdout + r.stderr


def test_yaml_config_file(t):
    o = t.orthanc("YAML", dicom=False)
    ws = t.workspace(o)
    ws.rule("cfg", tags=[("StudyDescription", "Study", "config")])
    s = one_study(o)
    cfg = write_yaml(os.path.join(t.tmp, "autorthanc.yaml"), {
        "orthanc_url": o.url, "rules_dir": ws.rules, "storage_dir": ws.storage,
        "state_dir": ws.state, "poll_interval": 0.5, "fsync": "no"})
    r = run(t, ["run", "--config", cfg, "--once"])
    assert r.rc == 0, f"exit {r.rc}:\n{out(r)}"
    h.assert_tree_matches(o, ws.storage, h.expected_files(o, s["study"], "cfg/P50-CONF-EX1"))
    r = run(t, ["check", "--config", cfg])
    assert r.rc == 0 and "cfg" in out(r), out(r)


def test_autorthanc_config_variable(t):
    o = t.orthanc("YAMLENV", dicom=False)
    ws = t.workspace(o)
    ws.rule("cfg", tags=[("StudyDescription", "Study", "config")])
    s = one_study(o)
    cfg = write_yaml(os.path.join(t.tmp, "a.yaml"), {
        "orthanc_url": o.url, "rules_dir": ws.rules, "storage_dir": ws.storage,
        "state_dir": ws.state})
    r = run(t, ["run", "--once"], env={"AUTORTHANC_CONFIG": cfg})
    assert r.rc == 0, f"exit {r.rc}:\n{out(r)}"
    h.assert_tree_matches(o, ws.storage, h.expected_files(o, s["study"], "cfg/P50-CONF-EX1"))


def test_environment_overrides_file(t):
    o = t.orthanc("OVERRIDE", dicom=False)
    ws = t.workspace(o)
    ws.rule("cfg", tags=[("StudyDescription", "Study", "config")])
    s = one_study(o)
    file_storage = os.path.join(t.tmp, "file-storage")
    os.makedirs(file_storage)
    cfg = write_yaml(os.path.join(t.tmp, "o.yaml"), {
        "orthanc_url": "http://127.0.0.1:%d" % t.dead_port(),  # wrong: env fixes it
        "rules_dir": ws.rules, "storage_dir": file_storage, "state_dir": ws.state})
    r = run(t, ["run", "--config", cfg, "--once"],
            env={"AUTORTHANC_STORAGE_DIR": ws.storage, "AUTORTHANC_ORTHANC_URL": o.url})
    assert r.rc == 0, f"exit {r.rc}:\n{out(r)}"
    h.assert_tree_matches(o, ws.storage, h.expected_files(o, s["study"], "cfg/P50-CONF-EX1"))
    assert os.listdir(file_storage) == [], "the file's storage_dir was used despite the env"


def test_unknown_key_is_exit_2_naming_it(t):
    ws = t.workspace()
    cfg = write_yaml(os.path.join(t.tmp, "u.yaml"), {
        "orthanc_url": "http://127.0.0.1:1", "rules_dir": ws.rules, "storage_dri": ws.storage,
        "state_dir": ws.state})
    for args in (["run", "--config", cfg, "--once"], ["check", "--config", cfg]):
        r = run(t, args)
        assert r.rc == 2, f"{args[0]}: exit {r.rc} for an unknown key:\n{out(r)}"
        assert "storage_dri" in r.stderr, f"{args[0]}: key not named:\n{r.stderr}"
        assert "u.yaml" in r.stderr, f"{args[0]}: file not named:\n{r.stderr}"


def test_bad_configuration_is_exit_2(t):
    ws = t.workspace()
    base = {"orthanc_url": "http://127.0.0.1:1", "rules_dir": ws.rules,
            "storage_dir": ws.storage, "state_dir": ws.state}
    cases = [
        ("poll_interval", dict(base, poll_interval="soon"), {}),
        ("poll_interval", dict(base, poll_interval=-1), {}),
        ("orthanc_url", dict(base, orthanc_url="ftp://example.invalid/"), {}),
        ("AUTORTHANC_POLL_INTERVAL", base, {"AUTORTHANC_POLL_INTERVAL": "abc"}),
    ]
    for i, (key, mapping, env) in enumerate(cases):
        cfg = write_yaml(os.path.join(t.tmp, f"bad{i}.yaml"), mapping)
        r = run(t, ["run", "--config", cfg, "--once"], env=env)
        assert r.rc == 2, f"case {key}={mapping.get(key, env)}: exit {r.rc}:\n{out(r)}"
        named = key in r.stderr or key.lower().replace("autorthanc_", "") in r.stderr
        assert named, f"case {key}: not named in stderr:\n{r.stderr}"
    # a missing file and a file that is not YAML
    r = run(t, ["run", "--config", os.path.join(t.tmp, "nope.yaml"), "--once"])
    assert r.rc == 2 and "nope.yaml" in r.stderr, out(r)
    bad = os.path.join(t.tmp, "broken.yaml")
    with open(bad, "w") as f:
        f.write("orthanc_url: [unclosed\n  : :\n")
    r = run(t, ["run", "--config", bad, "--once"])
    assert r.rc == 2 and "broken.yaml" in r.stderr, out(r)


def test_original_alias_variables(t):
    o = t.orthanc("ALIAS", dicom=False)
    ws = t.workspace(o)
    ws.rule("old_style", tags=[("StudyDescription", "Study", "config")])
    s = one_study(o)
    r = run(t, ["run", "--once"], env={
        "AUTORTHANC_ORTHANC_URL": o.url, "AUTORTHANC_STATE_DIR": ws.state,
        "ORTHANC_AUTOMATION_JSON_SCRIPTS_PATH": ws.rules,
        "ORTHANC_AUTOMATION_STORAGE_PATH": ws.storage})
    assert r.rc == 0, f"exit {r.rc}:\n{out(r)}"
    h.assert_tree_matches(o, ws.storage, h.expected_files(o, s["study"],
                                                          "old_style/P50-CONF-EX1"))


def test_password_never_printed(t):
    o = t.orthanc("AUTH", dicom=False, auth=("arbot", PASSWORD))
    ws = t.workspace(o)
    ws.rule("secure", tags=[("StudyDescription", "Study", "config")])
    s = one_study(o)
    outputs = []
    # right credentials, debug logging
    r = ws.run_once(env={"AUTORTHANC_LOG_LEVEL": "debug"})
    outputs.append(("good credentials", r))
    h.assert_tree_matches(o, ws.storage, h.expected_files(o, s["study"], "secure/P50-CONF-EX1"))
    # wrong password: fails, and neither password shows
    wrong = "Wr0ng:P@ss-9Kx"
    r = ws.run(["run", "--once"], env={"AUTORTHANC_ORTHANC_PASSWORD": wrong,
                                       "AUTORTHANC_LOG_LEVEL": "debug",
                                       "AUTORTHANC_STATE_DIR": os.path.join(t.tmp, "state2")})
    assert r.rc != 0, f"a wrong password must fail:\n{out(r)}"
    assert "401" in out(r) or "auth" in out(r).lower(), f"no hint at the cause:\n{out(r)}"
    outputs.append(("wrong password", r))
    # errors in a YAML file that holds the password
    for i, extra in enumerate(({"not_a_key": "x"}, {"orthanc_url": "gopher://x"},
                               {"poll_interval": "never"})):
        m = {"orthanc_url": o.url, "orthanc_username": "arbot", "orthanc_password": PASSWORD,
             "rules_dir": ws.rules, "storage_dir": ws.storage, "state_dir": ws.state}
        m.update(extra)
        cfg = write_yaml(os.path.join(t.tmp, f"secret{i}.yaml"), m)
        for args in (["run", "--config", cfg, "--once"], ["check", "--config", cfg]):
            r = run(t, args, env={"AUTORTHANC_LOG_LEVEL": "debug"})
            assert r.rc == 2, f"{extra}: exit {r.rc}:\n{out(r)}"
            outputs.append((f"{args[0]} with {extra}", r))
    # unreachable server with the password set
    r = run(t, ["run", "--once"], env={
        "AUTORTHANC_ORTHANC_URL": "http://127.0.0.1:%d" % t.dead_port(),
        "AUTORTHANC_ORTHANC_USERNAME": "arbot", "AUTORTHANC_ORTHANC_PASSWORD": PASSWORD,
        "AUTORTHANC_RULES_DIR": ws.rules, "AUTORTHANC_STORAGE_DIR": ws.storage,
        "AUTORTHANC_STATE_DIR": os.path.join(t.tmp, "state3"), "AUTORTHANC_LOG_LEVEL": "debug",
        "AUTORTHANC_RETRY_ATTEMPTS": "1"}, timeout=180)
    outputs.append(("unreachable", r))
    for what, r in outputs:
        for secret in (PASSWORD, wrong, "Secret-7Qz", "P@ss-9Kx"):
            assert secret not in out(r), f"{what}: the password appears in the output:\n{out(r)}"


def test_credentials_in_the_url_and_from_a_file_never_show(t):
    """http://user:pass@host works (the credentials move out of the URL at
    load) and the password shows nowhere: not in the start line, `status`,
    `status --json`, status.json or the ledger; the same password read from
    a file (a Docker or systemd secret)."""
    from urllib.parse import quote
    o = t.orthanc("URLAUTH", dicom=False, auth=("arbot", PASSWORD))
    ws = t.workspace(o)
    ws.rule("secure", tags=[("StudyDescription", "Study", "config")])
    s = one_study(o)
    host = o.url.split("://", 1)[1]
    url = f"http://arbot:{quote(PASSWORD, safe='')}@{host}"
    env = {"AUTORTHANC_ORTHANC_URL": url, "AUTORTHANC_ORTHANC_USERNAME": None,
           "AUTORTHANC_ORTHANC_PASSWORD": None, "AUTORTHANC_LOG_LEVEL": "debug"}
    runs = [ws.run_once(env=env)]
    h.assert_tree_matches(o, ws.storage, h.expected_files(o, s["study"], "secure/P50-CONF-EX1"))
    runs.append(ws.run(["status"], env=env, expect_rc=0))
    runs.append(ws.run(["status", "--json"], env=env, expect_rc=0))
    assert "http://" + host in out(runs[-1]), out(runs[-1])
    secret_file = os.path.join(t.tmp, "orthanc-password")
    with open(secret_file, "w") as f:
        f.write(PASSWORD + "\n")
    env2 = {"AUTORTHANC_ORTHANC_PASSWORD_FILE": secret_file, "AUTORTHANC_ORTHANC_PASSWORD": None,
            "AUTORTHANC_LOG_LEVEL": "debug", "AUTORTHANC_STATE_DIR": os.path.join(t.tmp, "st2"),
            "AUTORTHANC_STORAGE_DIR": os.path.join(t.tmp, "storage2")}
    runs.append(ws.run_once(env=env2))
    h.assert_tree_matches(o, os.path.join(t.tmp, "storage2"),
                          h.expected_files(o, s["study"], "secure/P50-CONF-EX1"))
    r = ws.run(["run", "--once"], env=dict(env2, AUTORTHANC_ORTHANC_PASSWORD="x"), expect_rc=2)
    assert "not both" in out(r), out(r)
    r = ws.run(["run", "--once"], env=dict(env2, AUTORTHANC_ORTHANC_PASSWORD_FILE="/nonexistent/pw"),
               expect_rc=2)
    assert "/nonexistent/pw" in out(r), out(r)
    files = []
    for root in (ws.state, os.path.join(t.tmp, "st2")):
        for rel in h.walk_tree(root)[0]:
            with open(os.path.join(root, rel), "rb") as f:
                files.append((rel, f.read()))
    for secret in (PASSWORD, quote(PASSWORD, safe=""), "Secret-7Qz"):
        for r in runs:
            assert secret not in out(r), f"the password appears in the output:\n{out(r)}"
        for rel, data in files:
            assert secret.encode() not in data, f"the password is in {rel}"


def test_help_and_version(t):
    r = run(t, ["--help"])
    assert r.rc == 0, out(r)
    assert "run" in r.stdout and "check" in r.stdout, f"--help must list the commands:\n{r.stdout}"
    r = run(t, ["run", "--help"])
    assert r.rc == 0 and "--once" in r.stdout and "--config" in r.stdout, out(r)
    r = run(t, ["check", "--help"])
    assert r.rc == 0 and "--emit-lua" in r.stdout, out(r)
    with open(os.path.join(h.SOURCE_DIR, "CMakeLists.txt")) as f:
        version = re.search(r"project\(autorthanc\s+VERSION\s+([0-9.]+)", f.read()).group(1)
    r = run(t, ["--version"])
    assert r.rc == 0 and version in r.stdout, f"--version should print {version}:\n{out(r)}"
    r = run(t, ["frobnicate"])
    assert r.rc != 0 and "frobnicate" in r.stderr, f"unknown command: exit {r.rc}\n{out(r)}"
    r = run(t, ["run", "--no-such-option"])
    assert r.rc != 0 and "--no-such-option" in r.stderr, out(r)


def test_start_at_now_skips_existing(t):
    o = t.orthanc("STARTNOW", dicom=False)
    ws = t.workspace(o)
    ws.rule("fresh", tags=[("StudyDescription", "Study", "config")])
    old = one_study(o, pid="P51")
    seq = o.last_change()
    ws.run_once(env={"AUTORTHANC_START_AT": "now"})
    assert not os.path.exists(ws.path("fresh")) or not os.listdir(ws.path("fresh")), \
        "START_AT=now exported a study logged before the first start"
    new = o.create_study("P52", "NEW", "2", [{"SeriesNumber": "1", "SeriesDate": "20240902"}],
                         study_tags={"StudyDescription": "CONFIG"})
    o.wait_stable(new["study"], since=seq)
    ws.run_once(env={"AUTORTHANC_START_AT": "now"})  # only the first start skips
    h.assert_tree_matches(o, ws.storage, h.expected_files(o, new["study"], "fresh/P52-NEW-EX2"))
    assert old["study"] != new["study"]


def test_state_is_sqlite_outside_storage(t):
    o = t.orthanc("STATE", dicom=False)
    ws = t.workspace(o)
    ws.rule("st", tags=[("StudyDescription", "Study", "config")])
    s = one_study(o)
    ws.run_once()
    dbs = []
    for rel in h.walk_tree(ws.state)[0]:
        with open(os.path.join(ws.state, rel), "rb") as f:
            if f.read(16) == b"SQLite format 3\x00":
                dbs.append(rel)
    assert dbs, f"no SQLite database in the state folder: {h.walk_tree(ws.state)[0]}"
    h.assert_tree_matches(o, ws.storage, h.expected_files(o, s["study"], "st/P50-CONF-EX1"))

    # default state folder (no AUTORTHANC_STATE_DIR): still not inside the storage
    o2 = one_study(o, pid="P53")
    ws2 = t.workspace(o, name="defaults")
    ws2.rule("st", tags=[("StudyDescription", "Study", "config")])
    r = ws2.run(["run", "--once"], env={"AUTORTHANC_STATE_DIR": None})
    assert r.rc == 0, out(r)
    expected = h.expected_files(o, s["study"], "st/P50-CONF-EX1")
    expected.update(h.expected_files(o, o2["study"], "st/P53-CONF-EX1"))
    h.assert_tree_matches(o, ws2.storage, expected)  # exact: no state file in storage


def test_state_inside_storage_is_exit_2_naming_both(t):
    """A state folder inside the storage folder (or the storage inside the
    state) is a configuration error before anything runs: a rule named
    `state` with a name hook returning `autorthanc.sqlite` could otherwise
    replace the daemon's own ledger."""
    o = t.orthanc("NESTED", dicom=False)
    ws = t.workspace(o)
    ws.rule("st", tags=[("StudyDescription", "Study", "config")])
    s = one_study(o)
    inner = os.path.join(ws.storage, "state")
    for state, storage in ((inner, ws.storage), (ws.state, os.path.join(ws.state, "exports"))):
        for cmd in (["run", "--once"], ["status"]):
            r = ws.run(cmd, env={"AUTORTHANC_STATE_DIR": state, "AUTORTHANC_STORAGE_DIR": storage},
                       expect_rc=None)
            assert r.rc == 2, f"{cmd}: exit {r.rc}:\n{out(r)}"
            assert state in out(r) and storage in out(r) and "inside" in out(r), out(r)
    assert not os.path.exists(inner), "the refused state folder was created"
    assert not os.listdir(ws.storage), f"something was exported: {os.listdir(ws.storage)}"
    ws.run_once()  # apart, it runs
    h.assert_tree_matches(o, ws.storage, h.expected_files(o, s["study"], "st/P50-CONF-EX1"))


def test_honest_exits_and_no_stray_state_folder(t):
    """`status` (the container's health check) fails, naming the problem,
    when the rules folder is missing, the storage folder is not writable or
    there is no state database; `run --once` with a missing rules folder is
    exit 2; `jobs` and `retry` in a wrong folder never create one; `retry`
    of an unknown job says so."""
    o = t.orthanc("EXITS", dicom=False)
    ws = t.workspace(o)
    ws.rule("st", tags=[("StudyDescription", "Study", "config")])
    one_study(o)
    missing_rules = os.path.join(t.tmp, "no-rules")
    fresh_state = os.path.join(t.tmp, "fresh-state")
    r = ws.run(["run", "--once"], env={"AUTORTHANC_RULES_DIR": missing_rules,
                                       "AUTORTHANC_STATE_DIR": fresh_state})
    assert r.rc == 2 and missing_rules in out(r), f"exit {r.rc}:\n{out(r)}"
    assert not os.path.exists(fresh_state), "a run that could not start created a state folder"
    r = ws.run(["status"], env={"AUTORTHANC_STATE_DIR": fresh_state})
    assert r.rc == 1 and "problem   state: no state database in " + fresh_state in out(r), out(r)
    assert not os.path.exists(fresh_state), "status created a state folder"
    ws.run_once()
    r = ws.run(["status"], expect_rc=0)
    assert "problem" not in out(r), out(r)
    r = ws.run(["status"], env={"AUTORTHANC_RULES_DIR": missing_rules})
    assert r.rc == 1 and "problem   rules:" in out(r) and missing_rules in out(r), out(r)
    not_a_dir = os.path.join(t.tmp, "storage-is-a-file")
    with open(not_a_dir, "w") as f:
        f.write("x")
    r = ws.run(["status", "--json"], env={"AUTORTHANC_STORAGE_DIR": not_a_dir})
    assert r.rc == 1 and "problem   storage: " + not_a_dir + " is not writable" in r.stderr, out(r)
    elsewhere = os.path.join(t.tmp, "elsewhere")
    os.makedirs(elsewhere)
    for cmd in (["jobs"], ["jobs", "--failed"], ["retry", "--all"], ["retry", "1"]):
        r = h.run_autorthanc(cmd, env=ws.env(AUTORTHANC_STATE_DIR=None), cwd=elsewhere)
        assert r.rc == 2 and "no state database in" in out(r), f"{cmd}: exit {r.rc}:\n{out(r)}"
    assert os.listdir(elsewhere) == [], f"a state folder appeared: {os.listdir(elsewhere)}"
    r = ws.run(["retry", "99"])
    assert r.rc == 1 and "no job 99 in the ledger" in out(r), out(r)
    r = ws.run(["retry", "1"])
    assert r.rc == 1 and "job 1 is done, not failed" in out(r), out(r)


def test_refusals_say_what_to_fix(t):
    """Orthanc answered, so it is not "unreachable": a wrong password names
    the user and the settings to check, no credentials asks for them, a
    wrong prefix says there is no REST API at that URL."""
    o = t.orthanc("REFUSE", dicom=False, auth=("arbot", PASSWORD))
    ws = t.workspace(o)
    ws.rule("st", tags=[("StudyDescription", "Study", "config")])
    cases = (
        ({"AUTORTHANC_ORTHANC_PASSWORD": "wrong"},
         "refused the credentials of user 'arbot'", "check orthanc_username / orthanc_password"),
        ({"AUTORTHANC_ORTHANC_USERNAME": None, "AUTORTHANC_ORTHANC_PASSWORD": None},
         "asks for credentials", "set orthanc_username and orthanc_password"),
        ({"AUTORTHANC_ORTHANC_URL": o.url + "/orthanc"},
         "no Orthanc REST API at " + o.url + "/orthanc", "prefix"),
    )
    for env, what, fix in cases:
        r = ws.run(["status"], env=env)
        assert r.rc == 1 and "REFUSED" in out(r) and what in out(r) and fix in out(r), out(r)
        assert "UNREACHABLE" not in out(r), out(r)
        r = ws.run(["run", "--once"], env=env)
        assert r.rc == 1 and what in out(r) and fix in out(r), f"exit {r.rc}:\n{out(r)}"


if __name__ == "__main__":
    h.main()
