"""harness.py - what every integration test of autorthanc stands on.

Promises (python3 standard library only):
  - Orthanc(tmpdir, name, ...): a private Debian Orthanc on loopback, HTTP and
    DICOM ports chosen at run time, its storage, index and log inside tmpdir;
    REST helpers, study creation with explicit UIDs, DICOM C-STORE through
    dcmtk's storescu, and waits that poll a condition under a deadline;
  - run_autorthanc(args, env, cwd, timeout): $AR_BINARY with a clean
    environment plus the given variables, returning (rc, stdout, stderr);
  - Workspace: rules/, storage/ and state/ folders for one daemon, rule files;
  - assert_tree_matches(): every exported file byte for byte against
    /instances/{id}/file, no *.WORKING left, no stray file;
  - main(): the runner convention.  Each tests/integration/test_*.py defines
    test_*(t) functions, run in definition order, each with its own temporary
    directory (t.tmp) and its own Orthanc(s); prints "ok - name" or
    "not ok - name: reason", then "N passed, N failed"; exit 1 on any failure.

Nothing here sleeps to synchronise: every wait polls a condition with a
deadline and fails with a message saying what it was waiting for.
"""

import base64
import collections
import contextlib
import json
import os
import random
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import traceback
import urllib.error
import urllib.request
import uuid
import zlib

SOURCE_DIR = os.environ.get("AR_SOURCE_DIR") or os.path.abspath(
    os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
ORTHANC_BIN = os.environ.get("AR_ORTHANC") or "/usr/sbin/Orthanc"
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"

# Variables run_autorthanc passes through from the test's own environment
# (sanitizer settings, locale); everything else starts clean.
_PASSTHROUGH = ("ASAN_OPTIONS", "UBSAN_OPTIONS", "LSAN_OPTIONS", "LANG", "LC_ALL", "TMPDIR")


def _die_with_parent():
    """preexec_fn: the child gets SIGTERM when the test process dies (ctest
    kills a test that times out; its Orthancs and daemons must not linger)."""
    try:
        import ctypes
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:
        pass


class HarnessError(AssertionError):
    """A precondition of the test could not be established (or a wait timed out)."""


# --------------------------------------------------------------------------
# small utilities

def free_port():
    """A TCP port on 127.0.0.1 that was free a moment ago (bind 0, close)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def closed_port():
    """A loopback port nothing listened on a moment ago.  Another process may
    bind it later; prefer TestContext.dead_port(), which holds it."""
    return free_port()


class DeadPort:
    """A loopback port bound but never listening: connections to it are
    refused, and no other process (a parallel test's Orthanc) can take it
    while this object is open.  Use for 'unreachable' tests; close() frees it."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]

    def close(self):
        self.sock.close()


def new_uid():
    """A fresh, globally unique DICOM UID (2.25 + UUID as integer)."""
    return "2.25." + str(uuid.uuid4().int)


def wait_for(cond, timeout, what, interval=0.05):
    """Poll cond() until it returns something truthy; return that value.
    Raise HarnessError naming `what` when `timeout` seconds pass first."""
    deadline = time.monotonic() + timeout
    last_exc = None
    while True:
        try:
            v = cond()
            if v:
                return v
            last_exc = None
        except Exception as e:  # the condition may fail until the thing is ready
            last_exc = e
        if time.monotonic() >= deadline:
            extra = f" (last error: {last_exc!r})" if last_exc else ""
            raise HarnessError(f"timed out after {timeout:g}s waiting for {what}{extra}")
        time.sleep(interval)


def png_data_uri(width=8, height=8, seed=0):
    """A grayscale 8-bit PNG of random pixels as a data URI.  Random pixels do
    not compress, so the DICOM file grows with width*height."""
    rng = random.Random(seed)
    raw = bytearray()
    for _ in range(height):
        raw.append(0)  # filter type None
        raw.extend(rng.getrandbits(8) for _ in range(width))

    def chunk(kind, data):
        c = struct.pack(">I", len(data)) + kind + data
        return c + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    png = (b"\x89PNG\r\n\x1a\n"
           + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
           + chunk(b"IDAT", zlib.compress(bytes(raw), 6))
           + chunk(b"IEND", b""))
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def tail(text, lines=40):
    if text is None:
        return ""
    parts = text.splitlines()
    return "\n".join(parts[-lines:])


class HttpError(Exception):
    def __init__(self, method, url, status, body):
        self.method, self.url, self.status, self.body = method, url, status, body
        super().__init__(f"{method} {url} -> HTTP {status}: {body[:500]!r}")


# --------------------------------------------------------------------------
# Orthanc

class Orthanc:
    """A private Orthanc.  Use as a context manager (or start()/stop()).

    name       AET (upper-cased, <= 16 chars) and part of the unique "Name"
    dicom      start the DICOM server (DicomPort chosen at run time)
    modalities DicomModalities: {"NAME": [aet, host, port], ...}
    auth       (user, password): AuthenticationEnabled with that one user
    extra_config  merged last into the JSON configuration
    """

    START_TIMEOUT = 30
    STOP_TIMEOUT = 10

    def __init__(self, tmpdir, name, dicom=True, extra_config=None, modalities=None,
                 auth=None, verbose=False):
        self.tmpdir = os.path.abspath(tmpdir)
        self.name = name
        self.aet = name.upper()[:16]
        self.dicom = dicom
        self.extra_config = dict(extra_config or {})
        self.modalities = dict(modalities or {})
        self.auth = auth
        self.verbose = verbose
        self.proc = None
        self.http_port = None
        self.dicom_port = None
        self.log_path = os.path.join(self.tmpdir, "orthanc.log")
        self.config_path = os.path.join(self.tmpdir, "orthanc.json")
        self.unique_name = f"{name}-{uuid.uuid4().hex[:12]}"
        self._file_cache = {}

    # -- lifecycle --------------------------------------------------------
    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop()
        return False

    @property
    def url(self):
        return f"http://127.0.0.1:{self.http_port}"

    def _config(self):
        cfg = {
            "Name": self.unique_name,
            "StorageDirectory": os.path.join(self.tmpdir, "storage"),
            "IndexDirectory": os.path.join(self.tmpdir, "index"),
            "TemporaryDirectory": os.path.join(self.tmpdir, "tmp"),
            "StorageCompression": False,
            "HttpServerEnabled": True,
            "HttpPort": self.http_port,
            "HttpDescribeErrors": True,
            "HttpCompressionEnabled": False,
            "KeepAlive": True,
            "TcpNoDelay": True,
            "HttpThreadsCount": 16,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": bool(self.auth),
            "DicomServerEnabled": bool(self.dicom),
            "DicomAet": self.aet,
            "DicomPort": self.dicom_port if self.dicom else 0,
            "DicomCheckCalledAet": False,
            "DicomAlwaysAllowStore": True,
            "DicomAlwaysAllowEcho": True,
            "DicomCheckModalityHost": False,
            "DicomAssociationCloseDelay": 0,
            "DicomScuTimeout": 10,
            "UnknownSopClassAccepted": True,
            "DicomModalities": self.modalities,
            "StableAge": 1,
            "SaveJobs": False,
            "ConcurrentJobs": 2,
            "DeidentifyLogs": False,
            "ExecuteLuaEnabled": False,
            "Plugins": [],
        }
        if self.auth:
            cfg["RegisteredUsers"] = {self.auth[0]: self.auth[1]}
        cfg.update(self.extra_config)
        return cfg

    def start(self):
        if self.proc is not None:
            raise HarnessError(f"Orthanc {self.name} already started")
        os.makedirs(self.tmpdir, exist_ok=True)
        attempts = 5
        for attempt in range(1, attempts + 1):
            self.http_port = free_port()
            self.dicom_port = free_port() if self.dicom else None
            if self.dicom_port == self.http_port:
                continue
            with open(self.config_path, "w", encoding="utf-8") as f:
                json.dump(self._config(), f, indent=2)
            env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "TCP_NODELAY": "1",
                   "HOME": self.tmpdir}
            args = [ORTHANC_BIN]
            if self.verbose:
                args.append("--verbose")
            args.append(self.config_path)
            with open(self.log_path, "ab") as log:
                log.write(f"---- start attempt {attempt}: http {self.http_port} "
                          f"dicom {self.dicom_port}\n".encode())
                log.flush()
                self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=log,
                                             stderr=subprocess.STDOUT, cwd=self.tmpdir, env=env,
                                             start_new_session=True,
                                             preexec_fn=_die_with_parent)
            if self._wait_started():
                return self
            # Orthanc exited: most likely a port taken between our probe and its bind.
            rc = self.proc.returncode
            self.proc = None
            if attempt == attempts:
                raise HarnessError(f"Orthanc {self.name} did not start (exit {rc}); log:\n"
                                   + self.log_tail())
        raise HarnessError(f"Orthanc {self.name}: could not find free ports")

    def _wait_started(self):
        deadline = time.monotonic() + self.START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            try:
                sysinfo = self.get("/system", timeout=2)
                if sysinfo.get("Name") == self.unique_name:
                    return True
                # someone else answers on "our" port: give up on this attempt
                self._kill()
                return False
            except (OSError, HttpError, ValueError):
                pass
            time.sleep(0.05)
        self._kill()
        raise HarnessError(f"Orthanc {self.name} did not answer /system within "
                           f"{self.START_TIMEOUT}s; log:\n" + self.log_tail())

    def _kill(self):
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()

    def terminate(self):
        """Send SIGTERM without waiting (Orthanc needs 2-3 s to stop; the
        runner overlaps that with the next test).  stop() finishes the job."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)

    def stop(self):
        """SIGTERM, then SIGKILL if it has not exited after STOP_TIMEOUT s."""
        if self.proc is None:
            return
        self.terminate()
        try:
            self.proc.wait(timeout=self.STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, lines=40):
        try:
            with open(self.log_path, encoding="utf-8", errors="replace") as f:
                return tail(f.read(), lines)
        except OSError:
            return "(no log)"

    # -- REST ---------------------------------------------------------------
    def request(self, method, path, body=None, content_type=None, timeout=60, raw=False):
        url = self.url + path
        data = None
        headers = {}
        if body is not None:
            if isinstance(body, (bytes, bytearray)):
                data = bytes(body)
                headers["Content-Type"] = content_type or "application/octet-stream"
            elif isinstance(body, str):
                data = body.encode("utf-8")
                headers["Content-Type"] = content_type or "text/plain"
            else:
                data = json.dumps(body).encode("utf-8")
                headers["Content-Type"] = "application/json"
        if self.auth:
            token = base64.b64encode(f"{self.auth[0]}:{self.auth[1]}".encode()).decode()
            headers["Authorization"] = "Basic " + token
        req = urllib.request.Request(url, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                payload = resp.read()
        except urllib.error.HTTPError as e:
            raise HttpError(method, url, e.code, e.read().decode("utf-8", "replace")) from None
        if raw:
            return payload
        if not payload:
            return None
        return json.loads(payload.decode("utf-8"))

    def get(self, path, **kw):
        return self.request("GET", path, **kw)

    def post(self, path, body=None, **kw):
        return self.request("POST", path, body if body is not None else b"", **kw)

    def put(self, path, body=None, **kw):
        return self.request("PUT", path, body if body is not None else b"", **kw)

    def delete(self, path, **kw):
        return self.request("DELETE", path, **kw)

    # -- content --------------------------------------------------------------
    def create_instance(self, tags, content=None):
        """POST /tools/create-dicom with Force (explicit UIDs); returns Orthanc's answer."""
        body = {"Tags": tags, "Force": True}
        if content is not None:
            body["Content"] = content
        return self.post("/tools/create-dicom", body)

    def create_study(self, patient_id, patient_name, study_id, series, study_tags=None,
                     patient_tags=None, sop_class=SECONDARY_CAPTURE):
        """Create one study instance by instance.

        series: list of dicts of series-level tags plus
          'instances': how many (default 1),
          'content': a data URI for every instance (e.g. png_data_uri(64, 64)),
          'instance_tags': a function i -> dict of extra instance tags,
          'sop_class': SOPClassUID for this series.
        A None patient_id/patient_name/study_id leaves the tag out (Orthanc then
        invents a PatientID); "" sets it empty.  Give study_tags
        {'StudyInstanceUID': uid} and a series 'SeriesInstanceUID' to add
        instances to an existing study/series.

        Returns {'study', 'patient', 'study_uid', 'series': [{'id', 'uid', 'instances':
        [{'id', 'sop'}]}], 'instances': [all instance ids]}.
        """
        study_tags = dict(study_tags or {})
        study_uid = study_tags.pop("StudyInstanceUID", None) or new_uid()
        base = {"SpecificCharacterSet": "ISO_IR 192", "StudyInstanceUID": study_uid}
        if patient_id is not None:
            base["PatientID"] = patient_id
        if patient_name is not None:
            base["PatientName"] = patient_name
        if study_id is not None:
            base["StudyID"] = study_id
        base.update(patient_tags or {})
        base.update(study_tags)
        out = {"study": None, "patient": None, "study_uid": study_uid, "series": [],
               "instances": []}
        for s in series:
            s = dict(s)
            count = s.pop("instances", 1)
            content = s.pop("content", None)
            per_instance = s.pop("instance_tags", None)
            cls = s.pop("sop_class", sop_class)
            series_uid = s.pop("SeriesInstanceUID", None) or new_uid()
            first_number = int(s.pop("first_instance_number", 1))
            entry = {"id": None, "uid": series_uid, "instances": []}
            for i in range(count):
                tags = dict(base)
                tags.update(s)
                tags["SeriesInstanceUID"] = series_uid
                tags["SOPInstanceUID"] = new_uid()
                tags["InstanceNumber"] = str(first_number + i)
                if cls:
                    tags["SOPClassUID"] = cls
                if per_instance:
                    tags.update(per_instance(i))
                ans = self.create_instance(tags, content)
                entry["id"] = ans["ParentSeries"]
                out["study"] = ans["ParentStudy"]
                out["patient"] = ans["ParentPatient"]
                entry["instances"].append({"id": ans["ID"], "sop": tags["SOPInstanceUID"]})
                out["instances"].append(ans["ID"])
            out["series"].append(entry)
        return out

    def upload(self, path):
        """POST a DICOM file to /instances; returns the instance id."""
        with open(path, "rb") as f:
            ans = self.post("/instances", f.read(), content_type="application/dicom")
        return ans["ID"]

    def storescu(self, files, calling_aet="ARTEST", timeout=120):
        """Send DICOM files to this Orthanc over DICOM (dcmtk storescu, TCP_NODELAY=1)."""
        if not self.dicom:
            raise HarnessError(f"Orthanc {self.name} has no DICOM server")
        env = dict(os.environ)
        env["TCP_NODELAY"] = "1"
        args = ["storescu", "-aet", calling_aet, "-aec", self.aet, "127.0.0.1",
                str(self.dicom_port)] + list(files)
        p = subprocess.run(args, stdin=subprocess.DEVNULL, capture_output=True, env=env,
                           timeout=timeout)
        if p.returncode != 0:
            raise HarnessError(f"storescu failed ({p.returncode}): "
                               f"{p.stdout.decode(errors='replace')}{p.stderr.decode(errors='replace')}")
        return p

    def instance_file(self, instance_id):
        """The bytes Orthanc stores for one instance (cached)."""
        if instance_id not in self._file_cache:
            self._file_cache[instance_id] = self.get(f"/instances/{instance_id}/file", raw=True)
        return self._file_cache[instance_id]

    def study_instances(self, study_id):
        return self.get(f"/studies/{study_id}/instances")

    def study_series(self, study_id):
        return self.get(f"/studies/{study_id}/series")

    # -- change log ----------------------------------------------------------------
    def changes(self, since=0):
        """Every change after `since`, following Last/Done."""
        out = []
        while True:
            ans = self.get(f"/changes?since={since}&limit=1000")
            out.extend(ans["Changes"])
            if ans["Done"] or ans["Last"] <= since:
                return out
            since = ans["Last"]

    def last_change(self):
        return self.get("/changes?last")["Last"]

    def wait_change(self, change_type, timeout=30, resource_id=None, since=0):
        """Wait until a change of that type (for that resource, with Seq > since)
        is in the log; return it."""
        def find():
            for c in self.changes(since):
                if c["ChangeType"] == change_type and (resource_id is None
                                                       or c["ID"] == resource_id):
                    return c
            return None
        what = f"{change_type}" + (f" of {resource_id}" if resource_id else "") + \
               f" after change {since} in Orthanc {self.name}"
        return wait_for(find, timeout, what, interval=0.1)

    def wait_stable(self, study_id, timeout=30, since=0, series=True):
        """Wait until /studies/{id} says IsStable and the log holds a StableStudy
        change for it after `since`; with series=True also until each of its
        series is stable and has a StableSeries change in the log.  (Orthanc
        pops its stability timers oldest first, so a series that got new
        instances is logged stable before its study is.)  Returns the Seq of
        the newest StableStudy."""
        def ready():
            st = self.get(f"/studies/{study_id}")
            if not st["IsStable"]:
                return None
            log = self.changes(since)
            seqs = [c["Seq"] for c in log
                    if c["ChangeType"] == "StableStudy" and c["ID"] == study_id]
            if not seqs:
                return None
            if series:
                logged = {c["ID"] for c in self.changes(0) if c["ChangeType"] == "StableSeries"}
                for sid in st["Series"]:
                    if sid not in logged or not self.get(f"/series/{sid}")["IsStable"]:
                        return None
            return max(seqs)
        return wait_for(ready, timeout,
                        f"study {study_id} to be stable in Orthanc {self.name} "
                        f"(after change {since})", interval=0.1)


# --------------------------------------------------------------------------
# an HTTP proxy in front of Orthanc that counts (and can spoil) requests

class CountingProxy:
    """A loopback HTTP/1.1 proxy to `orthanc` (keep-alive, Content-Length
    answers).  Every request is recorded as (method, path) in .requests.
    `fault(method, path)` may return None (pass through), ("status", code)
    to answer that code instead, or ("truncate", n) to announce the full
    length but send only n bytes of the body and close.  Use as a context
    manager or start()/stop(); .url is what autorthanc should be pointed at."""

    def __init__(self, orthanc, fault=None):
        import http.server
        import threading
        self.orthanc = orthanc
        self.fault = fault
        self.requests = []
        self._lock = threading.Lock()
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def setup(self):
                super().setup()
                # headers and body leave in two writes: without this, Nagle
                # plus delayed ACK costs 40 ms per request
                self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

            def _relay(self):
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n) if n else None
                with proxy._lock:
                    proxy.requests.append((self.command, self.path))
                action = proxy.fault(self.command, self.path) if proxy.fault else None
                if action and action[0] == "status":
                    payload = b'{"HttpStatus": %d}' % action[1]
                    self.send_response(action[1])
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                    return
                import http.client
                up = http.client.HTTPConnection("127.0.0.1", proxy.orthanc.http_port, timeout=60)
                headers = {k: v for k, v in self.headers.items()
                           if k.lower() not in ("host", "connection", "keep-alive",
                                                "proxy-connection", "accept-encoding")}
                try:
                    up.request(self.command, self.path, body=body, headers=headers)
                    resp = up.getresponse()
                    data = resp.read()
                    status, rheaders = resp.status, resp.getheaders()
                finally:
                    up.close()
                self.send_response(status)
                for k, v in rheaders:
                    if k.lower() not in ("connection", "keep-alive", "transfer-encoding",
                                         "content-length"):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                if action and action[0] == "truncate":
                    self.send_header("Connection", "close")
                    self.end_headers()
                    self.wfile.write(data[:action[1]])
                    self.close_connection = True
                    return
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_DELETE = _relay

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = None

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}"

    def start(self):
        import threading
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self):
        if self._thread:
            self._server.shutdown()
            self._thread.join()
            self._thread = None
        self._server.server_close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
        return False

    def take(self):
        """The requests recorded so far, and forget them."""
        with self._lock:
            out, self.requests = self.requests, []
        return out


# --------------------------------------------------------------------------
# autorthanc

Result = collections.namedtuple("Result", "rc stdout stderr")

_RUN_LOG = []  # the runs of the current test, for failure reports


def binary():
    b = os.environ.get("AR_BINARY")
    if b:
        return b
    return os.path.join(SOURCE_DIR, "build", "autorthanc")


def run_autorthanc(args, env=None, cwd=None, timeout=120, stdin_data=None):
    """Run $AR_BINARY with args; the environment is PATH/HOME (and sanitizer
    settings) plus `env`.  Returns Result(rc, stdout, stderr) as text."""
    exe = binary()
    if not os.path.exists(exe):
        raise HarnessError(f"autorthanc binary not found at {exe} (set AR_BINARY)")
    clean = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"),
             "HOME": cwd or tempfile.gettempdir()}
    for k in _PASSTHROUGH:
        if k in os.environ:
            clean[k] = os.environ[k]
    for k, v in (env or {}).items():
        if v is None:
            clean.pop(k, None)
        else:
            clean[k] = str(v)
    started = time.monotonic()
    try:
        p = subprocess.run([exe] + list(args), cwd=cwd, env=clean, capture_output=True,
                           timeout=timeout,
                           input=stdin_data.encode() if stdin_data is not None else None,
                           stdin=None if stdin_data is not None else subprocess.DEVNULL)
    except subprocess.TimeoutExpired as e:
        out = (e.stdout or b"").decode("utf-8", "replace")
        err = (e.stderr or b"").decode("utf-8", "replace")
        _RUN_LOG.append((list(args), None, out, err))
        raise HarnessError(f"autorthanc {' '.join(args)} did not finish within {timeout}s; "
                           f"stderr so far:\n{tail(err)}") from None
    r = Result(p.returncode, p.stdout.decode("utf-8", "replace"),
               p.stderr.decode("utf-8", "replace"))
    _RUN_LOG.append((list(args), r.rc, r.stdout, r.stderr,
                     round(time.monotonic() - started, 2)))
    return r


def start_autorthanc(args, env=None, cwd=None):
    """Start the daemon in the background (for tests of `run` without --once).
    Output goes to files in cwd (or a temp dir); returns a Daemon."""
    return Daemon(args, env, cwd)


class Daemon:
    def __init__(self, args, env, cwd):
        self.dir = cwd or tempfile.mkdtemp(prefix="ar-daemon-")
        exe = binary()
        if not os.path.exists(exe):
            raise HarnessError(f"autorthanc binary not found at {exe} (set AR_BINARY)")
        clean = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": self.dir}
        for k in _PASSTHROUGH:
            if k in os.environ:
                clean[k] = os.environ[k]
        clean.update({k: str(v) for k, v in (env or {}).items() if v is not None})
        self.out_path = os.path.join(self.dir, "daemon.stdout")
        self.err_path = os.path.join(self.dir, "daemon.stderr")
        self.args = list(args)
        with open(self.out_path, "wb") as o, open(self.err_path, "wb") as e:
            self.proc = subprocess.Popen([exe] + self.args, cwd=self.dir, env=clean,
                                         stdin=subprocess.DEVNULL, stdout=o, stderr=e,
                                         preexec_fn=_die_with_parent)
        _RUN_LOG.append(self)

    def stderr(self):
        with open(self.err_path, encoding="utf-8", errors="replace") as f:
            return f.read()

    def stdout(self):
        with open(self.out_path, encoding="utf-8", errors="replace") as f:
            return f.read()

    def alive(self):
        return self.proc.poll() is None

    def stop(self, sig=signal.SIGTERM, timeout=15):
        """Send sig and wait for exit; returns the exit code (None if it had to be killed)."""
        if self.proc.poll() is not None:
            return self.proc.returncode
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            return None


# --------------------------------------------------------------------------
# rules and workspaces

def rule_json(check_on="Study", action="DOWNLOAD", tags=(), active=True, destination=None,
              comment=None):
    """A rule in the original JSON format.  tags: (TagName, Level, Value) triples."""
    r = {"CheckOn": check_on, "IsActive": active, "Action": action,
         "Tags": [{"TagName": n, "Level": lvl, "Value": v} for (n, lvl, v) in tags]}
    if destination is not None:
        r["DestinationModality"] = destination
    if comment is not None:
        r["Comment"] = comment
    return r


def write_rule(rules_dir, name, rule):
    """Write rules_dir/<name> (".json" added unless name has an extension);
    rule is a dict (dumped as JSON) or text written verbatim."""
    os.makedirs(rules_dir, exist_ok=True)
    if not os.path.splitext(name)[1]:
        name += ".json"
    path = os.path.join(rules_dir, name)
    with open(path, "w", encoding="utf-8") as f:
        if isinstance(rule, str):
            f.write(rule)
        else:
            json.dump(rule, f, indent=2)
    return path


class Workspace:
    """rules/, storage/ and state/ for one autorthanc, pointed at one Orthanc."""

    def __init__(self, root, orthanc=None):
        self.root = os.path.abspath(root)
        self.orthanc = orthanc
        self.rules = os.path.join(self.root, "rules")
        self.storage = os.path.join(self.root, "storage")
        self.state = os.path.join(self.root, "state")
        for d in (self.rules, self.storage, self.state):
            os.makedirs(d, exist_ok=True)

    def env(self, **extra):
        e = {"AUTORTHANC_RULES_DIR": self.rules,
             "AUTORTHANC_STORAGE_DIR": self.storage,
             "AUTORTHANC_STATE_DIR": self.state,
             "AUTORTHANC_POLL_INTERVAL": "0.2"}
        if self.orthanc is not None:
            e["AUTORTHANC_ORTHANC_URL"] = self.orthanc.url
            if self.orthanc.auth:
                e["AUTORTHANC_ORTHANC_USERNAME"] = self.orthanc.auth[0]
                e["AUTORTHANC_ORTHANC_PASSWORD"] = self.orthanc.auth[1]
        e.update(extra)
        return e

    def rule(self, name, **kw):
        return write_rule(self.rules, name, rule_json(**kw))

    def write(self, name, content):
        return write_rule(self.rules, name, content)

    def run(self, args, env=None, timeout=120, expect_rc=None):
        r = run_autorthanc(args, env=self.env(**(env or {})), cwd=self.root, timeout=timeout)
        if expect_rc is not None and r.rc != expect_rc:
            raise AssertionError(f"autorthanc {' '.join(args)} exited {r.rc}, expected "
                                 f"{expect_rc}; stderr:\n{tail(r.stderr, 30)}")
        return r

    def run_once(self, env=None, expect_rc=0, timeout=120):
        return self.run(["run", "--once"], env=env, timeout=timeout, expect_rc=expect_rc)

    def check(self, args=(), env=None, expect_rc=None):
        return self.run(["check"] + list(args), env=env, expect_rc=expect_rc)

    def path(self, *parts):
        return os.path.join(self.storage, *parts)


# --------------------------------------------------------------------------
# what the export must look like

def _parts(s, default):
    return s if s else default


def default_series_folder(series_tags):
    """SE<SeriesNumber or XX>-<SeriesDate or UNKNOWN>-<SeriesInstanceUID>, for
    tag values that need no sanitising (the tests choose them so)."""
    return (f"SE{_parts(series_tags.get('SeriesNumber', '').strip(), 'XX')}-"
            f"{_parts(series_tags.get('SeriesDate', '').strip(), 'UNKNOWN')}-"
            f"{series_tags['SeriesInstanceUID']}")


def expected_files(orthanc, study_id, prefix, series_ids=None):
    """{ "<prefix>/<series folder>/<SOPInstanceUID>.dcm": instance id } for every
    instance of the study (or of the listed series), with the default series
    folder and file names."""
    series = {s["ID"]: s for s in orthanc.study_series(study_id)}
    out = {}
    for inst in orthanc.study_instances(study_id):
        sid = inst["ParentSeries"]
        if series_ids is not None and sid not in series_ids:
            continue
        folder = default_series_folder(series[sid]["MainDicomTags"])
        sop = inst["MainDicomTags"]["SOPInstanceUID"]
        out[f"{prefix}/{folder}/{sop}.dcm"] = inst["ID"]
    return out


def walk_tree(root):
    """(files, dirs): every file and folder under root, relative, '/'-joined."""
    files, dirs = [], []
    for dirpath, dirnames, filenames in os.walk(root):
        rel = os.path.relpath(dirpath, root)
        for d in dirnames:
            dirs.append(d if rel == "." else f"{rel}/{d}")
        for f in filenames:
            files.append(f if rel == "." else f"{rel}/{f}")
    return sorted(files), sorted(dirs)


def assert_no_working(storage_root):
    files, dirs = walk_tree(storage_root)
    left = [p for p in files + dirs if p.endswith(".WORKING") or ".WORKING/" in p]
    if left:
        raise AssertionError(f".WORKING left behind under {storage_root}: {left[:5]}")


def assert_tree_matches(orthanc, storage_root, expected, exact=True, under=None):
    """expected: {relative path: Orthanc instance id}.  Every expected file
    exists and equals /instances/{id}/file byte for byte; no *.WORKING remains;
    with exact=True no other file exists under storage_root (or under the
    sub-folder `under`, when given)."""
    assert_no_working(storage_root)
    files, _ = walk_tree(storage_root)
    if under is not None:
        files = [f for f in files if f.startswith(under.rstrip("/") + "/")]
    have = set(files)
    want = set(expected)
    problems = []
    missing = sorted(want - have)
    if missing:
        problems.append(f"{len(missing)} missing, e.g. {missing[:3]}")
    if exact:
        extra = sorted(have - want)
        if extra:
            problems.append(f"{len(extra)} unexpected, e.g. {extra[:3]}")
    for rel in sorted(want & have):
        with open(os.path.join(storage_root, rel), "rb") as f:
            got = f.read()
        ref = orthanc.instance_file(expected[rel])
        if got != ref:
            problems.append(f"{rel}: {len(got)} bytes differ from /instances/"
                            f"{expected[rel]}/file ({len(ref)} bytes)")
    if problems:
        listing = "\n  ".join(files[:20]) or "(empty)"
        raise AssertionError("export tree mismatch: " + "; ".join(problems)
                             + f"\n  tree under {storage_root}:\n  {listing}")


def snapshot_tree(root):
    """{relative file: (inode, mtime_ns, size)} for 'nothing changed' checks."""
    out = {}
    files, _ = walk_tree(root)
    for rel in files:
        st = os.stat(os.path.join(root, rel))
        out[rel] = (st.st_ino, st.st_mtime_ns, st.st_size)
    return out


def read_tree(root):
    """{relative file: bytes}."""
    out = {}
    for rel in walk_tree(root)[0]:
        with open(os.path.join(root, rel), "rb") as f:
            out[rel] = f.read()
    return out


# --------------------------------------------------------------------------
# the runner

class TestContext:
    """Handed to each test function: t.tmp (own directory), t.orthanc(...)
    (started, stopped after the test), t.workspace(orthanc)."""

    def __init__(self, name):
        self.name = name
        self.tmp = tempfile.mkdtemp(prefix=f"ar-{name}-")
        self.orthancs = []
        self._cleanups = []

    def orthanc(self, name="ORTHANC", **kw):
        o = Orthanc(os.path.join(self.tmp, "orthanc-" + name.lower()), name, **kw)
        self.orthancs.append(o)
        o.start()
        return o

    def workspace(self, orthanc=None, name="ar"):
        return Workspace(os.path.join(self.tmp, name), orthanc)

    def daemon(self, args, env=None, cwd=None):
        d = Daemon(args, env, cwd or self.tmp)
        self._cleanups.append(lambda: d.stop(signal.SIGKILL, timeout=5))
        return d

    def proxy(self, orthanc, fault=None):
        """A started CountingProxy in front of orthanc, stopped after the test."""
        p = CountingProxy(orthanc, fault).start()
        self._cleanups.append(p.stop)
        return p

    def dead_port(self):
        """A port that refuses connections for the whole test (see DeadPort)."""
        d = DeadPort()
        self._cleanups.append(d.close)
        return d.port

    def defer(self, fn):
        self._cleanups.append(fn)

    def close(self, wait=True):
        for fn in reversed(self._cleanups):
            with contextlib.suppress(Exception):
                fn()
        self._cleanups = []
        for o in self.orthancs:
            with contextlib.suppress(Exception):
                o.terminate()
        if wait:
            self.finish()

    def finished(self):
        return all(not o.alive() for o in self.orthancs)

    def finish(self):
        for o in self.orthancs:
            with contextlib.suppress(Exception):
                o.stop()

    def report(self):
        """Context for a failure: the autorthanc runs and the Orthanc logs."""
        out = [f"# temporary directory: {self.tmp}"]
        for entry in _RUN_LOG[-3:]:
            if isinstance(entry, Daemon):
                out.append(f"# daemon {' '.join(entry.args)} stderr:\n" + tail(entry.stderr(), 30))
                continue
            args, rc = entry[0], entry[1]
            out.append(f"# autorthanc {' '.join(args)} -> rc {rc}")
            if entry[2].strip():
                out.append("# stdout:\n" + tail(entry[2], 15))
            if entry[3].strip():
                out.append("# stderr:\n" + tail(entry[3], 30))
        for o in self.orthancs:
            out.append(f"# Orthanc {o.name} log tail:\n" + o.log_tail(15))
        return "\n".join(out)


def main(tests=None):
    """Run the test_* functions of __main__ (definition order), or `tests`.
    Command-line arguments select tests whose name contains one of them."""
    if tests is None:
        mod = sys.modules["__main__"]
        tests = [v for k, v in vars(mod).items() if k.startswith("test_") and callable(v)]
    wanted = sys.argv[1:]
    if wanted:
        tests = [t for t in tests if any(w in t.__name__ for w in wanted)]
    keep = os.environ.get("AR_KEEP_TMP") == "1"
    passed = failed = 0
    stopping = []  # contexts whose Orthancs were sent SIGTERM

    def reap(block):
        for c, remove in list(stopping):
            if block or c.finished():
                c.finish()
                if remove:
                    shutil.rmtree(c.tmp, ignore_errors=True)
                stopping.remove((c, remove))

    for fn in tests:
        name = fn.__name__
        reap(block=False)
        ctx = TestContext(name)
        del _RUN_LOG[:]
        started = time.monotonic()
        try:
            fn(ctx)
        except Exception as e:  # AssertionError, HarnessError, HttpError, ...
            failed += 1
            reason = str(e).splitlines()[0] if str(e) else type(e).__name__
            print(f"not ok - {name}: {reason}", flush=True)
            detail = "".join(traceback.format_exception(type(e), e, e.__traceback__))
            print("  " + detail.replace("\n", "\n  "), flush=True)
            print("  " + ctx.report().replace("\n", "\n  "), flush=True)
            ctx.close(wait=False)
            stopping.append((ctx, False))
            continue
        ctx.close(wait=False)
        stopping.append((ctx, not keep))
        passed += 1
        print(f"ok - {name} ({time.monotonic() - started:.1f}s)", flush=True)
    reap(block=True)
    print(f"{passed} passed, {failed} failed", flush=True)
    sys.exit(1 if failed else 0)
