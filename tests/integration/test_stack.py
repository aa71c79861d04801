#!/usr/bin/env python3
"""test_stack.py - docker-compose.yml's stack run natively, end to end.

No Docker engine runs here, so the same configuration is proven with the
same software from Debian:
  * index-db: PostgreSQL (initdb in a temporary folder, password auth over
    TCP on a loopback port chosen at run time, pg_isready over TCP as in the
    compose healthcheck);
  * orthanc: Orthanc reading docker/orthanc.json unmodified, its ${VAR}s
    substituted by Orthanc from the environment docker-compose.yml gives
    the orthanc service (interpolated with env_example plus a few test
    values), with orthanc-postgresql's plugins: the index must be in
    PostgreSQL and the DICOM files on disk;
  * nginx: docker/nginx.conf must pass `nginx -t`, and a server including
    docker/nginx-orthanc.conf unmodified fronts Orthanc under /orthanc/;
  * a study is uploaded THROUGH nginx (POST /orthanc/instances, basic auth,
    one large file sent chunked), found in PostgreSQL and on disk, read back
    byte for byte through nginx, and nginx must not have spooled anything
    to temporary files;
  * autorthanc ($AR_BINARY) pointed at nginx's /orthanc with basic auth:
    `status` and `run --once` with a catch-all JSON rule; the export is
    compared byte for byte with /instances/{id}/file.  Those steps print
    "skip" while the binary is not built.
Prints "ok - name" / "not ok - name: why" / "skip - name: why", then
"N passed, N failed, N skipped"; exits 1 on any failure.  AR_KEEP_TMP=1
keeps the temporary folder.
"""

import http.client
import base64
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

SOURCE_DIR = os.environ.get("AR_SOURCE_DIR") or os.path.abspath(
    os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
sys.path.insert(0, os.path.join(SOURCE_DIR, "tests", "lib"))

try:
    import yaml  # noqa: F401  (stack.compose_service_environment needs it)
except ImportError:
    if os.path.realpath(sys.executable) != os.path.realpath("/usr/bin/python3") \
            and os.path.exists("/usr/bin/python3"):
        os.execv("/usr/bin/python3", ["/usr/bin/python3"] + sys.argv)

import stack  # noqa: E402
import harness as h  # noqa: E402

RULE = "stack-export"
PATIENT_ID, PATIENT_NAME, STUDY_ID = "STACK1", "DOE^JANE", "77"
STABLE_AGE = 2   # seconds (ORTHANC_STABLE_AGE given to the stack)


class Skip(Exception):
    pass


class State:
    """What the steps hand to each other."""
    tmp = None
    stack = None
    direct = None      # harness client on Orthanc itself
    proxied = None     # harness client on nginx's /orthanc
    uploaded = {}      # instance id -> bytes sent
    study = None
    stable_right_after_upload = None


S = State()


def auth():
    return (S.stack.env["ORTHANC_USERNAME"], S.stack.env["ORTHANC_PASSWORD"])


def need(*parts):
    for p in parts:
        if getattr(S.stack, p, None) is None:
            raise AssertionError("not run: %s did not start" % p)


# ---------------------------------------------------------------------------
# steps

def test_prerequisites():
    missing = stack.missing_prerequisites()
    try:
        import yaml  # noqa: F401
    except ImportError:
        missing.append("python3-yaml")
    assert not missing, "install the Debian packages: %s" % ", ".join(missing)


def test_postgresql_starts_like_index_db():
    S.stack.start_postgres()
    pg = S.stack.postgres
    # pg_isready over TCP (the compose healthcheck) already passed; the
    # password from the compose environment must be required and work.
    assert pg.query("SELECT current_database()") == S.stack.env["POSTGRES_DB"]
    r = subprocess.run([os.path.join(pg.bindir, "psql"), "-h", "127.0.0.1", "-p", str(pg.port),
                        "-U", pg.user, "-d", pg.db, "-X", "-c", "SELECT 1"],
                       capture_output=True, text=True,
                       env=dict(os.environ, PGPASSWORD="wrong-" + pg.password,
                                PGCONNECT_TIMEOUT="5"))
    assert r.returncode != 0, "PostgreSQL accepted a wrong password"


def test_orthanc_starts_with_orthanc_json_and_postgresql_index():
    need("postgres")
    o = S.stack.start_orthanc()
    S.direct = stack.orthanc_client(o.url, auth(), "DIRECT")
    sysinfo = S.direct.get("/system")
    env = S.stack.env
    assert "PostgreSQLIndex" in (sysinfo.get("DatabaseBackendPlugin") or ""), \
        "index is not in PostgreSQL: %r" % sysinfo.get("DatabaseBackendPlugin")
    assert sysinfo.get("StorageAreaPlugin") is None, \
        "DICOM files must stay on disk, got storage plugin %r" % sysinfo.get("StorageAreaPlugin")
    assert sysinfo["DicomAet"] == env["ORTHANC_AET_NAME"], sysinfo
    assert sysinfo["DicomPort"] == int(env["ORTHANC_AET_PORT"]), sysinfo
    assert sysinfo["Name"] == env["ORTHANC_NAME"], sysinfo
    # The plugin created Orthanc's tables in the index-db database.
    tables = S.stack.postgres.query(
        "SELECT count(*) FROM information_schema.tables WHERE table_name = 'resources'")
    assert tables == "1", "no 'resources' table in PostgreSQL"


def test_orthanc_requires_authentication():
    need("orthanc")
    url = S.stack.orthanc.url + "/system"
    assert stack.http("GET", url)[0] == 401, "no credentials accepted"
    assert stack.http("GET", url, auth=(auth()[0], "wrong"))[0] == 401, "wrong password accepted"


def test_docker_nginx_conf_passes_nginx_t():
    need("orthanc")
    with open(os.path.join(stack.DOCKER_DIR, "nginx.conf"), encoding="utf-8") as f:
        text = f.read()
    include = "/etc/nginx/autorthanc/nginx-orthanc.conf"
    replacements = [
        ("server orthanc:8042;", "server 127.0.0.1:%d;" % S.stack.orthanc.port),
        ("include %s;" % include, "include %s;" % os.path.join(stack.DOCKER_DIR, "nginx-orthanc.conf")),
        ("listen 80;", "listen 127.0.0.1:%d;" % stack.free_port()),
    ]
    for old, new in replacements:
        assert text.count(old) == 1, "docker/nginx.conf no longer contains %r once" % old
        text = text.replace(old, new)
    n = stack.Nginx(S.tmp, S.stack.orthanc.port)
    os.makedirs(n.root, exist_ok=True)
    main = n.main_config(0).split("    upstream orthanc")[0] + "    include %s;\n}\n" % \
        os.path.join(n.root, "docker-nginx.conf")
    with open(os.path.join(n.root, "docker-nginx.conf"), "w") as f:
        f.write(text)
    ok, out = n.check_config(main)
    assert ok, "nginx -t on docker/nginx.conf: %s" % out


def test_nginx_starts_with_nginx_orthanc_conf():
    need("orthanc")
    n = S.stack.start_nginx()
    S.proxied = stack.orthanc_client(n.url + "/orthanc", auth(), "NGINX")
    assert S.proxied.get("/system")["Name"] == S.stack.env["ORTHANC_NAME"]
    status, headers, _ = stack.http("GET", n.url + "/orthanc/system")
    assert status == 401, "nginx must pass Orthanc's 401 through, got %d" % status
    status, headers, _ = stack.http("GET", n.url + "/orthanc/system", auth=(auth()[0], "x"))
    assert status == 401, "wrong password through nginx: %d" % status


def chunked_post(port, path, data, credentials, chunk=65536):
    """POST with Transfer-Encoding: chunked (a client that streams)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.putrequest("POST", path)
        token = base64.b64encode(("%s:%s" % credentials).encode()).decode()
        conn.putheader("Authorization", "Basic " + token)
        conn.putheader("Content-Type", "application/dicom")
        conn.putheader("Transfer-Encoding", "chunked")
        conn.endheaders()
        for i in range(0, len(data), chunk):
            piece = data[i:i + chunk]
            conn.send(b"%x\r\n" % len(piece) + piece + b"\r\n")
        conn.send(b"0\r\n\r\n")
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        conn.close()


def test_upload_study_through_nginx():
    need("nginx")
    n = S.stack.nginx
    study_uid = h.new_uid()
    files = []
    for series_number, count, size in ((1, 3, 32), (2, 3, 32), (3, 1, 1024)):
        series_uid = h.new_uid()
        for i in range(count):
            files.append(stack.make_dicom(
                PATIENT_ID, PATIENT_NAME, study_uid, series_uid, h.new_uid(),
                study_id=STUDY_ID, series_number=series_number, instance_number=i + 1,
                study_date="20240131", modality="OT", study_description="STACK TEST",
                size=size))
    for data in files:
        if len(data) > 1024 * 1024:
            status, body = chunked_post(n.port, "/orthanc/instances", data, auth())
        else:
            status, _, body = stack.http("POST", n.url + "/orthanc/instances", data, auth=auth(),
                                         headers={"Content-Type": "application/dicom"})
        assert status == 200, "POST /orthanc/instances: HTTP %d %s" % (status, body[:200])
        ans = json.loads(body)
        assert ans.get("Status") == "Success", ans
        S.uploaded[ans["ID"]] = data
        S.study = ans["ParentStudy"]
    S.stable_right_after_upload = S.proxied.get("/studies/%s" % S.study)["IsStable"]
    assert len(S.uploaded) == len(files), "duplicate instance ids"
    assert max(len(d) for d in files) > 2 * 1024 * 1024, "the large file is not large"


def test_index_in_postgresql_and_files_on_disk():
    need("nginx")
    assert S.uploaded, "not run: nothing uploaded"
    counts = dict(line.split("|") for line in S.stack.postgres.query(
        "SELECT resourcetype, count(*) FROM resources GROUP BY 1 ORDER BY 1").splitlines())
    # Orthanc's resource types: 0 patient, 1 study, 2 series, 3 instance.
    assert counts == {"0": "1", "1": "1", "2": "3", "3": str(len(S.uploaded))}, counts
    stats = S.proxied.get("/statistics")
    assert stats["CountInstances"] == len(S.uploaded), stats
    storage = os.path.join(S.stack.orthanc.root, "db")
    on_disk = [os.path.join(d, f) for d, _, fs in os.walk(storage) for f in fs]
    assert len(on_disk) == len(S.uploaded), \
        "%d files in StorageDirectory, want %d (index elsewhere, one file per instance)" % (
            len(on_disk), len(S.uploaded))
    assert not [p for p in on_disk if p.endswith((".db", ".sqlite"))], "an SQLite index appeared"


def test_downloads_through_nginx_byte_exact():
    need("nginx")
    assert S.uploaded, "not run: nothing uploaded"
    for iid, sent in S.uploaded.items():
        status, headers, body = stack.http("GET", S.stack.nginx.url + "/orthanc/instances/%s/file"
                                           % iid, auth=auth())
        assert status == 200, "GET file of %s: HTTP %d" % (iid, status)
        assert body == sent, "instance %s: %d bytes back through nginx, %d sent" % (
            iid, len(body), len(sent))
        assert headers.get("Content-Length") == str(len(sent)), headers


def test_nginx_streams_without_temporary_files():
    need("nginx")
    assert S.uploaded, "not run: nothing uploaded"
    with open(S.stack.nginx.log, encoding="utf-8", errors="replace") as f:
        spooled = [l for l in f if "buffered to a temporary file" in l]
    assert not spooled, "nginx spooled to disk: %s" % spooled[0].strip()
    status, headers, _ = stack.http("GET", S.stack.nginx.url + "/orthanc", auth=auth())
    # urllib follows the redirect to /orthanc/ (Orthanc Explorer's page).
    assert status == 200, "/orthanc -> /orthanc/ gave %d" % status


def test_study_becomes_stable_after_orthanc_stable_age():
    need("nginx")
    assert S.study, "not run: nothing uploaded"
    assert S.stable_right_after_upload is False, \
        "study was stable right after upload: StableAge %s not applied" % STABLE_AGE
    S.proxied.wait_stable(S.study, timeout=STABLE_AGE + 30)


def autorthanc_binary():
    exe = os.environ.get("AR_BINARY") or ""
    if not (exe and os.path.isfile(exe) and os.access(exe, os.X_OK)):
        raise Skip("autorthanc binary not built yet (AR_BINARY=%r)" % exe)
    return exe


def workspace():
    return h.Workspace(os.path.join(S.tmp, "autorthanc"), S.proxied)


def test_autorthanc_status_through_nginx():
    autorthanc_binary()
    need("nginx")
    ws = workspace()
    usage = ws.run(["--help"])
    helptext = usage.stdout + usage.stderr
    if not re.search(r"\bstatus\b", helptext):
        raise Skip("`autorthanc status` is not implemented yet (not in --help)")
    r = ws.run(["status"])
    assert r.rc == 0, "status through nginx exited %d: %s" % (r.rc, h.tail(r.stderr, 10))
    assert S.stack.env["ORTHANC_PASSWORD"] not in r.stdout + r.stderr, "password printed"
    down = ws.run(["status"], env={"AUTORTHANC_ORTHANC_URL":
                                   "http://127.0.0.1:%d/orthanc" % h.closed_port()})
    assert down.rc != 0, "status exits 0 although Orthanc is unreachable"


def test_autorthanc_exports_through_nginx():
    autorthanc_binary()
    need("nginx")
    assert S.study, "not run: nothing uploaded"
    ws = workspace()
    h.write_rule(ws.rules, RULE, {"CheckOn": "Study", "IsActive": True,
                                  "Action": "DOWNLOAD", "Tags": []})
    access_log = os.path.join(S.stack.nginx.root, "access.log")
    before = os.path.getsize(access_log)
    r = ws.run_once(timeout=180)
    assert S.stack.env["ORTHANC_PASSWORD"] not in r.stdout + r.stderr, "password printed in the log"
    prefix = "%s/%s-%s-EX%s" % (RULE, PATIENT_ID, PATIENT_NAME.split("^")[0], STUDY_ID)
    expected = h.expected_files(S.direct, S.study, prefix)
    assert len(expected) == len(S.uploaded), expected
    # Reference bytes come from Orthanc directly, not through nginx.
    h.assert_tree_matches(S.direct, ws.storage, expected)
    for rel, iid in expected.items():
        with open(os.path.join(ws.storage, rel), "rb") as f:
            assert f.read() == S.uploaded[iid], "%s differs from the file uploaded" % rel
    # The transfers went through nginx (its access log), not around it.
    with open(access_log, "rb") as f:
        f.seek(before)
        log = f.read().decode("utf-8", "replace")
    missing = [iid for iid in expected.values()
               if not re.search(r'"GET /orthanc/instances/%s/file HTTP/1\.1" 200 ' % iid, log)]
    assert not missing, "not downloaded through nginx: %s" % missing[:3]


TESTS = [
    test_prerequisites,
    test_postgresql_starts_like_index_db,
    test_orthanc_starts_with_orthanc_json_and_postgresql_index,
    test_orthanc_requires_authentication,
    test_docker_nginx_conf_passes_nginx_t,
    test_nginx_starts_with_nginx_orthanc_conf,
    test_upload_study_through_nginx,
    test_index_in_postgresql_and_files_on_disk,
    test_downloads_through_nginx_byte_exact,
    test_nginx_streams_without_temporary_files,
    test_study_becomes_stable_after_orthanc_stable_age,
    test_autorthanc_exports_through_nginx,
    # after a run: status is healthy only once the daemon has its ledger
    test_autorthanc_status_through_nginx,
]


def main():
    passed = failed = skipped = 0
    S.tmp = tempfile.mkdtemp(prefix="ar-stack-")
    # PostgreSQL may run as another user (initdb refuses root): let it in.
    os.chmod(S.tmp, 0o755)
    overrides = {
        # What a user's .env would set: other credentials, a short stable
        # age for the test, a DICOM port free on this machine.
        "ORTHANC_PASSWORD": "orthanc-" + os.urandom(6).hex(),
        "POSTGRES_PASSWORD": "pg-" + os.urandom(6).hex(),
        "ORTHANC_STABLE_AGE": str(STABLE_AGE),
        "ORTHANC_AET_PORT": str(stack.free_port()),
        "ORTHANC_AET_NAME": "STACKTEST",
        "ORTHANC_NAME": "autorthanc-stack-test",
    }
    started = time.monotonic()
    try:
        S.stack = stack.Stack(S.tmp, overrides)
        for fn in TESTS:
            name = fn.__name__[len("test_"):]
            t0 = time.monotonic()
            try:
                fn()
            except Skip as e:
                skipped += 1
                print("skip - %s: %s" % (name, e), flush=True)
            except Exception as e:
                failed += 1
                msg = (str(e).strip() or type(e).__name__).replace("\n", "\n  ")
                print("not ok - %s: %s" % (name, msg), flush=True)
                if fn is test_prerequisites:
                    break
            else:
                passed += 1
                print("ok - %s (%.1fs)" % (name, time.monotonic() - t0), flush=True)
    finally:
        if S.stack is not None:
            S.stack.stop()
        keep = failed or os.environ.get("AR_KEEP_TMP") == "1"
        if keep:
            print("# temporary folder kept: %s" % S.tmp, flush=True)
        else:
            shutil.rmtree(S.tmp, ignore_errors=True)
    print("# total %.1fs" % (time.monotonic() - started), flush=True)
    print("%d passed, %d failed, %d skipped" % (passed, failed, skipped), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
