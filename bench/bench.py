#!/usr/bin/env python3
"""bench.py - autorthanc's export benchmark (run it through bench/run.sh).

What it does (python3 standard library only, plus Debian's Orthanc and curl):
  - writes DICOM Part-10 files itself (explicit VR little endian, CT Image
    Storage, real pixel data) and uploads them once with POST /instances to a
    private Orthanc per data set (loopback, ports chosen at run time,
    StableAge 1, storage in the work folder, TCP_NODELAY=1), then waits until
    Orthanc reports every study stable;
  - for each case and each run: `autorthanc run --once` with one JSON DOWNLOAD
    rule, a fresh state and storage folder (whole-run wall time, the
    export.done line's duration, peak RSS from wait4), then the reference:
    plain `curl --parallel --parallel-max N -K urls.cfg` fetching the same
    /instances/{id}/file URLs into the same layout; the two alternate within
    each run so drift hits both; the page cache is flushed (sync) before each;
  - one extra, untimed autorthanc run per case goes through a counting HTTP
    proxy to count the requests a study costs;
  - peak RSS for a 100 MB and a 1 GB study (memory must not grow with size);
  - idle cost: the daemon (no --once) with nothing arriving, for a bounded
    time: CPU seconds per hour from /proc/<pid>/stat and /changes requests;
  - every export is checked against the expected layout (file list and
    sizes); any failure makes the exit status 1.  Times are printed, never
    asserted.

Every child process it starts is recorded as WORK/pids/<pid> so bench/run.sh's
trap can end it even if this script is killed.
"""

import argparse
import http.client
import http.server
import json
import os
import random
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import threading
import time
import urllib.request
import uuid

ORTHANC_BIN = os.environ.get("AR_ORTHANC") or shutil.which("Orthanc") or "/usr/sbin/Orthanc"
CURL_BIN = shutil.which("curl") or "/usr/bin/curl"
CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
EXPLICIT_VR_LE = "1.2.840.10008.1.2.1"
IMPLEMENTATION_UID = "1.2.826.0.1.3680043.9.7433.1.1"  # a fixed UID for "autorthanc bench"
RULE_NAME = "bench"
CLK_TCK = os.sysconf("SC_CLK_TCK")


class BenchError(Exception):
    pass


# ---------------------------------------------------------------------------
# small utilities

def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(cond, timeout, what, interval=0.05):
    """Poll cond() until truthy; return its value, or raise naming `what`."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        try:
            v = cond()
            if v:
                return v
        except Exception as e:  # not ready yet
            last = e
        if time.monotonic() >= deadline:
            raise BenchError(f"timed out after {timeout:g}s waiting for {what}"
                             + (f" (last error: {last!r})" if last else ""))
        time.sleep(interval)


def new_uid():
    return "2.25." + str(uuid.uuid4().int)


_log_lock = threading.Lock()


def log(msg):
    with _log_lock:
        sys.stderr.write(msg + "\n")
        sys.stderr.flush()


class Pids:
    """WORK/pids/<pid> files for run.sh's trap."""

    def __init__(self, work):
        self.dir = os.path.join(work, "pids")
        os.makedirs(self.dir, exist_ok=True)

    def add(self, pid):
        open(os.path.join(self.dir, str(pid)), "w").close()

    def remove(self, pid):
        try:
            os.unlink(os.path.join(self.dir, str(pid)))
        except FileNotFoundError:
            pass


# ---------------------------------------------------------------------------
# DICOM Part-10 writer (explicit VR little endian)

_LONG_VRS = {"OB", "OW", "OF", "OD", "OL", "SQ", "UT", "UN", "UC", "UR"}


def _element(group, element, vr, value):
    if isinstance(value, str):
        value = value.encode("ascii")
    if len(value) % 2:
        value += b"\0" if vr in ("UI", "OB") else b" "
    head = struct.pack("<HH", group, element) + vr.encode("ascii")
    if vr in _LONG_VRS:
        return head + b"\0\0" + struct.pack("<I", len(value)) + value
    if len(value) > 0xFFFF:
        raise BenchError(f"value too long for VR {vr}")
    return head + struct.pack("<H", len(value)) + value


def _us(v):
    return struct.pack("<H", v)


def make_dicom(tags, rows, cols, pixels):
    """One CT image as Part-10 bytes.  tags: patient/study/series/instance
    values (strings); pixels: rows*cols*2 bytes of 16-bit data."""
    sop = tags["SOPInstanceUID"]
    meta_body = b"".join([
        _element(0x0002, 0x0001, "OB", b"\x00\x01"),
        _element(0x0002, 0x0002, "UI", CT_IMAGE_STORAGE),
        _element(0x0002, 0x0003, "UI", sop),
        _element(0x0002, 0x0010, "UI", EXPLICIT_VR_LE),
        _element(0x0002, 0x0012, "UI", IMPLEMENTATION_UID),
        _element(0x0002, 0x0013, "SH", "ARBENCH_1"),
    ])
    meta = _element(0x0002, 0x0000, "UL", struct.pack("<I", len(meta_body))) + meta_body
    ds = b"".join([  # ascending tag order
        _element(0x0008, 0x0005, "CS", "ISO_IR 100"),
        _element(0x0008, 0x0008, "CS", "ORIGINAL\\PRIMARY\\AXIAL"),
        _element(0x0008, 0x0016, "UI", CT_IMAGE_STORAGE),
        _element(0x0008, 0x0018, "UI", sop),
        _element(0x0008, 0x0020, "DA", tags["StudyDate"]),
        _element(0x0008, 0x0021, "DA", tags["SeriesDate"]),
        _element(0x0008, 0x0030, "TM", "120000"),
        _element(0x0008, 0x0050, "SH", tags["AccessionNumber"]),
        _element(0x0008, 0x0060, "CS", "CT"),
        _element(0x0008, 0x1030, "LO", tags["StudyDescription"]),
        _element(0x0008, 0x103E, "LO", tags["SeriesDescription"]),
        _element(0x0010, 0x0010, "PN", tags["PatientName"]),
        _element(0x0010, 0x0020, "LO", tags["PatientID"]),
        _element(0x0010, 0x0030, "DA", "19700101"),
        _element(0x0010, 0x0040, "CS", "O"),
        _element(0x0018, 0x0050, "DS", "1.0"),
        _element(0x0020, 0x000D, "UI", tags["StudyInstanceUID"]),
        _element(0x0020, 0x000E, "UI", tags["SeriesInstanceUID"]),
        _element(0x0020, 0x0010, "SH", tags["StudyID"]),
        _element(0x0020, 0x0011, "IS", tags["SeriesNumber"]),
        _element(0x0020, 0x0013, "IS", tags["InstanceNumber"]),
        _element(0x0028, 0x0002, "US", _us(1)),
        _element(0x0028, 0x0004, "CS", "MONOCHROME2"),
        _element(0x0028, 0x0010, "US", _us(rows)),
        _element(0x0028, 0x0011, "US", _us(cols)),
        _element(0x0028, 0x0100, "US", _us(16)),
        _element(0x0028, 0x0101, "US", _us(16)),
        _element(0x0028, 0x0102, "US", _us(15)),
        _element(0x0028, 0x0103, "US", _us(0)),
        _element(0x7FE0, 0x0010, "OW", pixels),
    ])
    return b"\0" * 128 + b"DICM" + meta + ds


# ---------------------------------------------------------------------------
# Orthanc

class Orthanc:
    def __init__(self, work, name, pids):
        self.dir = os.path.join(work, "orthanc-" + name)
        self.name = name
        self.pids = pids
        self.proc = None
        self.port = None
        self.unique = f"arbench-{name}-{uuid.uuid4().hex[:8]}"

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}"

    def start(self):
        os.makedirs(self.dir, exist_ok=True)
        for _attempt in range(5):
            self.port = free_port()
            cfg = {
                "Name": self.unique,
                "StorageDirectory": os.path.join(self.dir, "storage"),
                "IndexDirectory": os.path.join(self.dir, "index"),
                "TemporaryDirectory": os.path.join(self.dir, "tmp"),
                "StorageCompression": False,
                "HttpServerEnabled": True,
                "HttpPort": self.port,
                "HttpCompressionEnabled": False,
                "KeepAlive": True,
                "TcpNoDelay": True,
                "HttpThreadsCount": 16,
                "RemoteAccessAllowed": False,
                "AuthenticationEnabled": False,
                "DicomServerEnabled": False,
                "StableAge": 1,
                "SaveJobs": False,
                "ExecuteLuaEnabled": False,
                "Plugins": [],
            }
            cfg_path = os.path.join(self.dir, "orthanc.json")
            with open(cfg_path, "w") as f:
                json.dump(cfg, f, indent=1)
            env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "TCP_NODELAY": "1",
                   "HOME": self.dir}
            with open(os.path.join(self.dir, "orthanc.log"), "ab") as lf:
                self.proc = subprocess.Popen([ORTHANC_BIN, cfg_path], stdin=subprocess.DEVNULL,
                                             stdout=lf, stderr=subprocess.STDOUT, cwd=self.dir,
                                             env=env, start_new_session=True)
            self.pids.add(self.proc.pid)
            if self._started():
                return self
            self.stop()
        raise BenchError(f"Orthanc {self.name} would not start; see {self.dir}/orthanc.log")

    def _started(self):
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            try:
                if self.get("/system", timeout=2).get("Name") == self.unique:
                    return True
                return False  # someone else holds the port
            except (OSError, ValueError, http.client.HTTPException):
                pass
            time.sleep(0.05)
        return False

    def stop(self):
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.pids.remove(self.proc.pid)
        self.proc = None

    def get(self, path, timeout=60):
        with urllib.request.urlopen(self.url + path, timeout=timeout) as r:
            return json.loads(r.read())


# ---------------------------------------------------------------------------
# data sets

class Dataset:
    """One study: `count` CT images of rows x cols, spread over `series`
    series, in its own Orthanc."""

    def __init__(self, name, count, rows, cols, series=1):
        self.name = name
        self.count = count
        self.rows = rows
        self.cols = cols
        self.series = series
        self.token = f"ARBENCH{name.upper()}X{uuid.uuid4().hex[:6].upper()}"
        self.orthanc = None
        self.study_id = None
        self.files = []          # [(instance_id, rel_path_under_storage, size)]
        self.bytes = 0

    def rel_folder(self, tags):
        family = tags["PatientName"].split("^")[0]
        return f"{RULE_NAME}/{tags['PatientID']}-{family}-EX{tags['StudyID']}"

    def upload(self, threads=4):
        """Generate every instance and POST it; fills files/bytes/study_id."""
        rng = random.Random(self.name)
        block = rng.randbytes(self.rows * self.cols * 2)
        study = {
            "PatientID": f"PB{self.name.upper()}",
            "PatientName": f"BENCH^{self.name.upper()}",
            "StudyID": "42",
            "StudyDate": "20240131",
            "SeriesDate": "20240131",
            "AccessionNumber": "ACC" + self.name.upper()[:10],
            "StudyDescription": f"BENCH {self.token}",
            "StudyInstanceUID": new_uid(),
        }
        series = []
        for s in range(self.series):
            series.append({"SeriesInstanceUID": new_uid(), "SeriesNumber": str(s + 1),
                           "SeriesDescription": f"BENCH SERIES {s + 1}"})
        jobs = []
        for i in range(self.count):
            se = series[i * self.series // self.count]
            tags = dict(study)
            tags.update(se)
            tags["SOPInstanceUID"] = new_uid()
            tags["InstanceNumber"] = str(i + 1)
            jobs.append(tags)

        lock = threading.Lock()
        results = []
        errors = []
        nxt = [0]
        port = self.orthanc.port

        def worker():
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
            try:
                while True:
                    with lock:
                        if nxt[0] >= len(jobs) or errors:
                            return
                        tags = jobs[nxt[0]]
                        idx = nxt[0]
                        nxt[0] += 1
                    pix = bytearray(block)
                    pix[0:8] = struct.pack("<Q", idx)
                    data = make_dicom(tags, self.rows, self.cols, bytes(pix))
                    conn.request("POST", "/instances", body=data,
                                 headers={"Content-Type": "application/dicom"})
                    resp = conn.getresponse()
                    body = resp.read()
                    if resp.status != 200:
                        raise BenchError(f"POST /instances: HTTP {resp.status}: {body[:300]!r}")
                    ans = json.loads(body)
                    if ans.get("Status") not in ("Success", None):
                        raise BenchError(f"POST /instances: {ans}")
                    rel = (f"{self.rel_folder(tags)}/SE{tags['SeriesNumber']}-"
                           f"{tags['SeriesDate']}-{tags['SeriesInstanceUID']}/"
                           f"{tags['SOPInstanceUID']}.dcm")
                    with lock:
                        results.append((idx, ans["ID"], ans["ParentStudy"], rel, len(data)))
            except Exception as e:
                with lock:
                    errors.append(e)
            finally:
                conn.close()

        ts = [threading.Thread(target=worker) for _ in range(threads)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        if errors:
            raise BenchError(f"upload of {self.name} failed: {errors[0]}")
        results.sort()
        studies = {r[2] for r in results}
        if len(studies) != 1:
            raise BenchError(f"{self.name}: instances landed in {len(studies)} studies")
        self.study_id = studies.pop()
        self.files = [(r[1], r[3], r[4]) for r in results]
        self.bytes = sum(r[4] for r in results)

    def wait_stable(self, timeout=120):
        wait_for(lambda: self.orthanc.get(f"/studies/{self.study_id}").get("IsStable"),
                 timeout, f"study {self.name} to become stable")

        # the StableStudy change must be in the log the daemon reads
        def logged():
            ch = self.orthanc.get("/changes?last")
            last = ch["Last"]
            since = max(0, last - 50)
            ch = self.orthanc.get(f"/changes?since={since}&limit=100")
            return any(c["ChangeType"] == "StableStudy" and c["ID"] == self.study_id
                       for c in ch["Changes"])
        wait_for(logged, timeout, f"StableStudy of {self.name} in /changes")

    def prepare(self, work, pids):
        self.orthanc = Orthanc(work, self.name, pids).start()
        t0 = time.monotonic()
        self.upload()
        self.wait_stable()
        log(f"  {self.name}: {self.count} instances, {self.bytes / 1e6:.1f} MB uploaded in "
            f"{time.monotonic() - t0:.1f} s (Orthanc on {self.orthanc.url})")


# ---------------------------------------------------------------------------
# counting proxy (for request counts only: never in a timed run)

_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te",
        "trailer", "trailers", "transfer-encoding", "upgrade"}


class CountingProxy:
    """A keep-alive HTTP/1.1 relay to one upstream that counts requests by
    (method, path shape)."""

    def __init__(self, upstream_port):
        self.upstream_port = upstream_port
        self.lock = threading.Lock()
        self.counts = {}
        self.log = []   # (monotonic time, method, path)
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def setup(self):
                super().setup()
                # headers and body leave in separate writes: without this,
                # Nagle + delayed ACK stall every answer by ~40 ms
                self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

            def _upstream(self):
                up = http.client.HTTPConnection("127.0.0.1", proxy.upstream_port, timeout=300)
                up.connect()
                up.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                self._up = up
                return up

            def _relay(self):
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n) if n else None
                up = getattr(self, "_up", None) or self._upstream()
                hdrs = {k: v for k, v in self.headers.items() if k.lower() not in _HOP}
                try:
                    up.request(self.command, self.path, body=body, headers=hdrs)
                    resp = up.getresponse()
                except (http.client.RemoteDisconnected, ConnectionResetError,
                        BrokenPipeError):
                    # Orthanc closes idle keep-alive connections: reconnect once
                    up.close()
                    up = self._upstream()
                    up.request(self.command, self.path, body=body, headers=hdrs)
                    resp = up.getresponse()
                proxy.count(self.command, self.path)
                data_len = resp.getheader("Content-Length")
                if data_len is None:
                    data = resp.read()
                    data_len = str(len(data))
                else:
                    data = None
                self.send_response_only(resp.status, resp.reason)
                for k, v in resp.getheaders():
                    if k.lower() not in _HOP and k.lower() != "content-length":
                        self.send_header(k, v)
                self.send_header("Content-Length", data_len)
                self.end_headers()
                if data is not None:
                    self.wfile.write(data)
                else:
                    while True:
                        chunk = resp.read(256 * 1024)
                        if not chunk:
                            break
                        self.wfile.write(chunk)
                resp.close()

            do_GET = do_POST = do_PUT = do_DELETE = _relay

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}"

    @staticmethod
    def shape(path):
        p = path.split("?")[0]
        parts = p.split("/")
        out = []
        for x in parts:
            if len(x) >= 32 and all(c in "0123456789abcdef-" for c in x):
                out.append("{id}")
            else:
                out.append(x)
        return "/".join(out)

    def count(self, method, path):
        key = f"{method} {self.shape(path)}"
        with self.lock:
            self.counts[key] = self.counts.get(key, 0) + 1
            self.log.append((time.monotonic(), method, path))

    def reset(self):
        with self.lock:
            self.counts = {}
            self.log = []

    def snapshot(self):
        with self.lock:
            return dict(self.counts), list(self.log)

    def close(self):
        self.server.shutdown()
        self.server.server_close()


# ---------------------------------------------------------------------------
# measured runs

TIME_BIN = "/usr/bin/time" if os.access("/usr/bin/time", os.X_OK) else None


def run_measured(args, env, stdout_path, stderr_path, cwd, pids, timeout=1800):
    """Run a command; return (exit code, wall s, peak RSS KiB, cpu s, start time).

    Peak RSS comes from GNU time (-f %M), which forks the command from its own
    small process.  wait4() on a child of this script is not usable for it:
    Linux carries the parent's high-water RSS over fork (and vfork) into the
    child's maxrss, so it would report this Python process's size.  Without
    /usr/bin/time the wait4 figure is returned and flagged by rss_exact()."""
    rss_file = stdout_path + ".rss"
    cmd = [TIME_BIN, "-f", "%M", "-o", rss_file] + list(args) if TIME_BIN else list(args)
    with open(stdout_path, "wb") as out, open(stderr_path, "wb") as err:
        t0 = time.monotonic()
        p = subprocess.Popen(cmd, env=env, stdout=out, stderr=err, stdin=subprocess.DEVNULL,
                             cwd=cwd)
        pids.add(p.pid)
        deadline = t0 + timeout
        while True:
            pid, status, ru = os.wait4(p.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > deadline:
                p.kill()
                pid, status, ru = os.wait4(p.pid, 0)
                break
            time.sleep(0.001)
        wall = time.monotonic() - t0
        pids.remove(p.pid)
        p.returncode = os.waitstatus_to_exitcode(status)
    rss = ru.ru_maxrss
    if TIME_BIN:
        try:
            with open(rss_file) as f:
                rss = int(f.read().split()[-1])
        except (OSError, ValueError, IndexError):
            rss = None
    return p.returncode, wall, rss, ru.ru_utime + ru.ru_stime, t0


def rss_exact():
    return TIME_BIN is not None


def export_seconds(stderr_text):
    """The export.done line's duration (JSON "duration"/"seconds", text
    seconds=/ms=), summed if there are several; None if absent."""
    total = None
    for line in stderr_text.splitlines():
        if "export.done" not in line:
            continue
        v = None
        s = line.strip()
        if s.startswith("{"):
            try:
                obj = json.loads(s)
            except ValueError:
                obj = {}
            if obj.get("event") == "export.done":
                for k in ("seconds", "duration"):
                    if isinstance(obj.get(k), (int, float)):
                        v = float(obj[k])
                        break
        else:
            for tok in s.split():
                if tok.startswith("seconds="):
                    v = float(tok[8:])
                elif tok.startswith("ms="):
                    v = float(tok[3:]) / 1000.0
        if v is not None:
            total = (total or 0.0) + v
    return total


def check_tree(root, ds):
    """'' when root holds exactly ds's files with their sizes, else what differs."""
    want = {rel: size for _id, rel, size in ds.files}
    got = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for d in dirnames:
            if d.endswith(".WORKING"):
                return f"leftover {os.path.join(dirpath, d)}"
        for f in filenames:
            full = os.path.join(dirpath, f)
            got[os.path.relpath(full, root)] = os.path.getsize(full)
    if got == want:
        return ""
    missing = sorted(set(want) - set(got))
    extra = sorted(set(got) - set(want))
    wrong = sorted(k for k in set(want) & set(got) if want[k] != got[k])
    msg = []
    if missing:
        msg.append(f"{len(missing)} missing (e.g. {missing[0]})")
    if extra:
        msg.append(f"{len(extra)} unexpected (e.g. {extra[0]})")
    if wrong:
        msg.append(f"{len(wrong)} of wrong size (e.g. {wrong[0]})")
    return "; ".join(msg)


def drop_dir(path):
    shutil.rmtree(path, ignore_errors=True)


class Bench:
    def __init__(self, opts):
        self.o = opts
        self.work = opts.workdir
        self.pids = Pids(self.work)
        self.failures = []

    # -- autorthanc ---------------------------------------------------------
    def ar_env(self, url, rules, storage, state, fsync, conns, extra=None):
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": self.work,
            "AUTORTHANC_ORTHANC_URL": url,
            "AUTORTHANC_RULES_DIR": rules,
            "AUTORTHANC_STORAGE_DIR": storage,
            "AUTORTHANC_STATE_DIR": state,
            "AUTORTHANC_FSYNC": "true" if fsync else "false",
            "AUTORTHANC_MAX_CONNECTIONS": str(conns),
            "AUTORTHANC_LOG_FORMAT": "json",
            "AUTORTHANC_LOG_LEVEL": "info",
            "AUTORTHANC_POLL_INTERVAL": str(self.o.poll_interval),
        }
        for k in ("LANG", "LC_ALL", "ASAN_OPTIONS", "UBSAN_OPTIONS", "LSAN_OPTIONS"):
            if k in os.environ:
                env[k] = os.environ[k]
        env.update(extra or {})
        return env

    def write_rule(self, rules, ds, decoys=0):
        os.makedirs(rules, exist_ok=True)
        for i in range(decoys):  # rules that look at the study and do not match
            decoy = {"CheckOn": "Study", "IsActive": True, "Action": "DOWNLOAD",
                     "Tags": [{"TagName": "StudyDescription", "Level": "Study",
                               "Value": f"NOMATCH{i:05d}"},
                              {"TagName": "Modality", "Level": "Series", "Value": "MR"}]}
            with open(os.path.join(rules, f"decoy{i:05d}.json"), "w") as f:
                json.dump(decoy, f)
        rule = {"CheckOn": "Study", "IsActive": True, "Action": "DOWNLOAD",
                "Comment": "autorthanc benchmark",
                "Tags": [{"TagName": "StudyDescription", "Level": "Study", "Value": ds.token}]}
        with open(os.path.join(rules, RULE_NAME + ".json"), "w") as f:
            json.dump(rule, f, indent=1)

    def autorthanc_once(self, ds, fsync, conns, tag, url=None, decoys=0, binary=None):
        d = os.path.join(self.work, "runs", tag)
        drop_dir(d)
        rules, storage, state = (os.path.join(d, x) for x in ("rules", "storage", "state"))
        for x in (storage, state):
            os.makedirs(x)
        self.write_rule(rules, ds, decoys)
        env = self.ar_env(url or ds.orthanc.url, rules, storage, state, fsync, conns)
        os.sync()
        rc, wall, rss, cpu, t_start = run_measured([binary or self.o.binary, "run", "--once"], env,
                                          os.path.join(d, "stdout"), os.path.join(d, "stderr"),
                                          d, self.pids)
        with open(os.path.join(d, "stderr"), encoding="utf-8", errors="replace") as f:
            errtext = f.read()
        problem = ""
        if rc != 0:
            problem = f"autorthanc exited {rc}: " + " | ".join(errtext.strip().splitlines()[-3:])
        else:
            problem = check_tree(storage, ds)
        exp = export_seconds(errtext)
        result = {"rc": rc, "wall": wall, "t_start": t_start, "export": exp, "rss_kib": rss,
                  "cpu": cpu,
                  "problem": problem, "dir": d}
        if not problem and not self.o.keep:
            drop_dir(d)
        return result

    # -- curl reference -------------------------------------------------------
    def curl_once(self, ds, conns, tag, fsync):
        d = os.path.join(self.work, "runs", tag)
        drop_dir(d)
        out = os.path.join(d, "storage")
        os.makedirs(out)
        cfg = os.path.join(d, "urls.cfg")
        with open(cfg, "w") as f:
            for iid, rel, _size in ds.files:
                f.write(f'url = "{ds.orthanc.url}/instances/{iid}/file"\n')
                f.write(f'output = "{os.path.join(out, rel)}"\n')
        args = [CURL_BIN, "--silent", "--show-error", "--fail", "--create-dirs",
                "--parallel", "--parallel-max", str(conns)]
        if self.o.parallel_immediate:
            args.append("--parallel-immediate")
        args += ["-K", cfg]
        if fsync:
            # curl cannot fsync: the reference is curl, then coreutils `sync
            # FILE...` (one fsync per file, then per folder, as autorthanc
            # promises), timed together.
            lst = os.path.join(d, "fsync.list")
            dirs = set()
            with open(lst, "wb") as f:
                for _iid, rel, _size in ds.files:
                    f.write(os.path.join(out, rel).encode() + b"\0")
                    parts = rel.split("/")
                    for k in range(1, len(parts)):
                        dirs.add(os.path.join(out, *parts[:k]))
                for p in sorted(dirs, key=len, reverse=True):
                    f.write(p.encode() + b"\0")
            args = ["/bin/sh", "-c", '"$@" && exec xargs -0 sync -- < "$0"', lst] + args
        os.sync()
        rc, wall, rss, cpu, t_start = run_measured(args, {"PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                                                 "HOME": self.work},
                                          os.path.join(d, "stdout"), os.path.join(d, "stderr"),
                                          d, self.pids)
        problem = ""
        if rc != 0:
            with open(os.path.join(d, "stderr"), errors="replace") as f:
                problem = f"curl exited {rc}: {f.read()[-300:]}"
        else:
            problem = check_tree(out, ds)
        res = {"rc": rc, "wall": wall, "rss_kib": rss, "cpu": cpu, "problem": problem}
        if not problem and not self.o.keep:
            drop_dir(d)
        return res

    # -- core/export alone (bench/export_probe.c) -------------------------------
    def probe_once(self, ds, fsync, conns, tag):
        d = os.path.join(self.work, "runs", tag)
        drop_dir(d)
        storage = os.path.join(d, "storage")
        os.makedirs(storage)
        final = "/".join(ds.files[0][1].split("/")[:2])
        lines = "".join(f"{iid} {rel.split('/', 2)[2]} {size}\n" for iid, rel, size in ds.files)
        listing = os.path.join(d, "files.txt")
        with open(listing, "w") as f:
            f.write(lines)
        os.sync()
        with open(listing) as stdin:
            t0 = time.monotonic()
            p = subprocess.run([self.o.probe, ds.orthanc.url, storage, final, str(conns),
                                "1" if fsync else "0"], stdin=stdin, capture_output=True,
                               text=True)
            wall = time.monotonic() - t0
        secs = None
        for tok in p.stdout.split():
            if tok.startswith("seconds="):
                secs = float(tok[8:])
        problem = ""
        if p.returncode != 0 or secs is None:
            problem = f"export_probe exited {p.returncode}: {p.stderr.strip()[-300:]}"
        else:
            problem = check_tree(storage, ds)
        if not problem and not self.o.keep:
            drop_dir(d)
        return {"wall": wall, "export": secs, "problem": problem}

    # -- request count ------------------------------------------------------
    def count_requests(self, ds, conns, decoys=0):
        proxy = CountingProxy(ds.orthanc.port)
        try:
            r = self.autorthanc_once(ds, False, conns, f"{ds.name}-count", url=proxy.url,
                                     decoys=decoys)
            t0 = r["t_start"]
            t_end = t0 + r["wall"]
            counts, reqlog = proxy.snapshot()
        finally:
            proxy.close()
        if r["problem"]:
            self.failures.append(f"{ds.name} (through the counting proxy): {r['problem']}")
        changes = sum(v for k, v in counts.items() if k.startswith("GET /changes"))
        files = sum(v for k, v in counts.items() if k.endswith("/file"))
        meta = sum(counts.values()) - changes - files
        # phases, from the proxy's clock (answers relayed through Python: rough)
        file_t = [t for t, _m, p in reqlog if p.endswith("/file")]
        meta_t = [t for t, _m, p in reqlog if not p.endswith("/file")
                  and not p.startswith("/changes")]
        phases = None
        if file_t:
            phases = {"first_file_ms": (min(file_t) - t0) * 1000,
                      "files_ms": (max(file_t) - min(file_t)) * 1000,
                      "after_last_file_ms": (t_end - max(file_t)) * 1000,
                      "meta_before_files": sum(1 for t in meta_t if t < min(file_t))}
        return {"changes": changes, "files": files, "meta": meta, "counts": counts,
                "phases": phases}

    # -- one case -------------------------------------------------------------
    def run_case(self, ds, fsync, conns, runs):
        label = f"{ds.name} N={conns} fsync={'on' if fsync else 'off'}"
        ar, ref, core, arb = [], [], [], []
        for i in range(runs):
            # alternate who goes first so a slow phase of the machine is shared
            order = ("ar", "ref", "core", "b") if i % 2 == 0 else ("b", "core", "ref", "ar")
            for who in order:
                if who == "b":
                    if self.o.binary_b:
                        r = self.autorthanc_once(ds, fsync, conns, f"{ds.name}-b",
                                                 binary=self.o.binary_b)
                        if r["problem"]:
                            self.failures.append(f"{label} binary B run {i + 1}: "
                                                 f"{r['problem']} (kept in {r['dir']})")
                        else:
                            arb.append(r)
                    continue
                if who == "core":
                    if self.o.probe:
                        r = self.probe_once(ds, fsync, conns, f"{ds.name}-core")
                        if r["problem"]:
                            self.failures.append(f"{label} core run {i + 1}: {r['problem']}")
                        else:
                            core.append(r)
                    continue
                if who == "ar" and self.o.reference_only:
                    continue
                if who == "ar":
                    r = self.autorthanc_once(ds, fsync, conns, f"{ds.name}-ar")
                    if r["problem"]:
                        self.failures.append(f"{label} run {i + 1}: {r['problem']} "
                                             f"(kept in {r['dir']})")
                    else:
                        ar.append(r)
                else:
                    r = self.curl_once(ds, conns, f"{ds.name}-ref", fsync)
                    if r["problem"]:
                        self.failures.append(f"{label} reference run {i + 1}: {r['problem']}")
                    else:
                        ref.append(r)
        log(f"  {label}: " + ", ".join(
            f"ar {a['wall']:.3f}s/{a['export'] if a['export'] is not None else float('nan'):.3f}s"
            for a in ar) + " | curl " + ", ".join(f"{c['wall']:.3f}s" for c in ref)
            + (" | core " + ", ".join(f"{c['wall']:.3f}s" for c in core) if core else "")
            + (" | B " + ", ".join(f"{a['wall']:.3f}s/{a['export'] or float('nan'):.3f}s"
                                   for a in arb) if arb else ""))
        return {"label": label, "ds": ds, "fsync": fsync, "conns": conns, "ar": ar, "ref": ref,
                "core": core, "arb": arb}


def rules_cost(bench, ds, decoys, conns, runs):
    """Whole `run --once` with 1 rule vs 1 + decoys rules (same export)."""
    one, many = [], []
    for i in range(runs):
        for n, acc in ((0, one), (decoys, many)) if i % 2 == 0 else ((decoys, many), (0, one)):
            r = bench.autorthanc_once(ds, False, conns, f"{ds.name}-rules{n}", decoys=n)
            if r["problem"]:
                bench.failures.append(f"{ds.name} with {n + 1} rules: {r['problem']}")
            else:
                acc.append(r["wall"])
    reqs = bench.count_requests(ds, conns, decoys=decoys)
    return {"one": med(one), "many": med(many), "reqs": reqs}


# ---------------------------------------------------------------------------
# report

def human_bytes(n):
    for unit, div in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= div:
            return f"{n / div:.1f} {unit}" if n < 100 * div else f"{n / div:.0f} {unit}"
    return f"{n} B"


def med(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def fmt(v, spec, none="-"):
    return none if v is None else format(v, spec)


def print_table(headers, rows):
    widths = [max(len(str(h)), *(len(str(r[i])) for r in rows)) if rows else len(str(h))
              for i, h in enumerate(headers)]
    line = "  ".join(str(h).ljust(w) for h, w in zip(headers, widths))
    print(line)
    print("  ".join("-" * w for w in widths))
    for r in rows:
        print("  ".join(str(c).rjust(w) if i else str(c).ljust(w)
                        for i, (c, w) in enumerate(zip(r, widths))))


def summarize(case, reqs):
    ds = case["ds"]
    ar_export = med([a["export"] for a in case["ar"]])
    ar_wall = med([a["wall"] for a in case["ar"]])
    ref = med([c["wall"] for c in case["ref"]])
    rss = med([a["rss_kib"] for a in case["ar"]])
    core = med([c["wall"] for c in case.get("core", [])])
    base = ar_export if ar_export is not None else ar_wall
    req = reqs.get(ds.name)
    return [
        case["label"].split(" ")[0],
        case["conns"],
        "on" if case["fsync"] else "off",
        ds.count,
        human_bytes(ds.bytes),
        fmt(ar_export, ".3f"),
        fmt(ar_wall, ".3f"),
        fmt(ref, ".3f") + ("+fsync" if case["fsync"] and ref is not None else ""),
        fmt(base / ref if base is not None and ref else None, ".2f"),
        fmt(ar_wall / ref if ar_wall is not None and ref else None, ".2f"),
        fmt(core, ".3f"),
        fmt(core / ref if core is not None and ref else None, ".2f"),
        fmt(ds.bytes / 1e6 / base if base else None, ".0f"),
        fmt(ds.bytes / 1e6 / ref if ref else None, ".0f"),
        fmt(rss / 1024 if rss else None, ".1f"),
        f"{req['meta']}+{req['files']}f" if req else "-",
    ]


HEADERS_B = ["case", "N", "fsync", "ar export s", "B export s", "ar run s", "B run s",
             "curl s", "ratio", "B ratio", "ratio run", "B ratio run", "ar RSS MiB",
             "B RSS MiB"]


def summarize_b(case):
    """A against B (--binary-b), same alternated runs."""
    def m(runs, key):
        return med([r[key] for r in runs])
    ref = med([c["wall"] for c in case["ref"]])
    a_exp, b_exp = m(case["ar"], "export"), m(case["arb"], "export")
    a_run, b_run = m(case["ar"], "wall"), m(case["arb"], "wall")
    a_rss, b_rss = m(case["ar"], "rss_kib"), m(case["arb"], "rss_kib")

    def ratio(x):
        return fmt(x / ref if x is not None and ref else None, ".2f")
    return [case["label"].split(" ")[0], case["conns"], "on" if case["fsync"] else "off",
            fmt(a_exp, ".3f"), fmt(b_exp, ".3f"), fmt(a_run, ".3f"), fmt(b_run, ".3f"),
            fmt(ref, ".3f"), ratio(a_exp), ratio(b_exp), ratio(a_run), ratio(b_run),
            fmt(a_rss / 1024 if a_rss else None, ".1f"),
            fmt(b_rss / 1024 if b_rss else None, ".1f")]


HEADERS = ["case", "N", "fsync", "instances", "bytes", "ar export s", "ar run s",
           "curl s", "ratio", "ratio run", "core s", "core ratio", "ar MB/s", "curl MB/s", "peak RSS MiB",
           "requests/study"]


def idle_cost(bench, ds, seconds):
    """Daemon with nothing arriving: CPU s/hour and /changes requests."""
    proxy = CountingProxy(ds.orthanc.port)
    d = os.path.join(bench.work, "runs", "idle")
    drop_dir(d)
    rules, storage, state = (os.path.join(d, x) for x in ("rules", "storage", "state"))
    for x in (storage, state):
        os.makedirs(x)
    bench.write_rule(rules, ds)
    env = bench.ar_env(proxy.url, rules, storage, state, False, 4,
                       {"AUTORTHANC_START_AT": "now"})
    errf = open(os.path.join(d, "stderr"), "wb")
    p = subprocess.Popen([bench.o.binary, "run"], env=env, stdout=errf, stderr=errf,
                         stdin=subprocess.DEVNULL, cwd=d)
    bench.pids.add(p.pid)

    def cpu():
        with open(f"/proc/{p.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime

    try:
        # the window opens once the daemon has made its first /changes call
        wait_for(lambda: p.poll() is None and any(k.startswith("GET /changes")
                                                  for k in proxy.snapshot()[0]),
                 30, "the idle daemon's first /changes request")
        if p.poll() is not None:
            raise BenchError(f"idle daemon exited {p.returncode}")
        c0, t0 = cpu(), time.monotonic()
        n0 = len(proxy.snapshot()[1])
        deadline = t0 + seconds
        while time.monotonic() < deadline and p.poll() is None:
            time.sleep(min(0.2, max(0.0, deadline - time.monotonic())))
        if p.poll() is not None:
            raise BenchError(f"idle daemon exited {p.returncode} during the window")
        c1, t1 = cpu(), time.monotonic()
        counts, reqlog = proxy.snapshot()
        window = [r for r in reqlog[n0:] if r[0] <= t1]
        changes = sum(1 for r in window if r[2].startswith("/changes"))
        other = len(window) - changes
        p.send_signal(signal.SIGTERM)
        t_term = time.monotonic()
        try:
            rc = p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()
            rc = p.wait()
        stop_s = time.monotonic() - t_term
        return {"seconds": t1 - t0, "cpu": c1 - c0, "cpu_per_hour": (c1 - c0) / (t1 - t0) * 3600,
                "changes": changes, "other": other, "rc": rc, "stop_s": stop_s}
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        bench.pids.remove(p.pid)
        errf.close()
        proxy.close()


def main():
    ap = argparse.ArgumentParser(description="autorthanc export benchmark")
    ap.add_argument("--binary", required=True)
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--runs", type=int, default=None)
    ap.add_argument("--connections", default=None,
                    help="comma-separated values of N (default 1,4; --quick: 2)")
    ap.add_argument("--fsync", default=None, help="off,on (default both; --quick: off)")
    ap.add_argument("--idle-seconds", type=float, default=None)
    ap.add_argument("--poll-interval", type=float, default=1.0)
    ap.add_argument("--no-memory", action="store_true", help="skip the 100 MB / 1 GB study")
    ap.add_argument("--rules", type=int, default=None,
                    help="extra non-matching rules for the rule-count line (default 999; "
                         "--quick: 49; 0 = skip)")
    ap.add_argument("--cases", default=None, help="comma-separated subset: ct300,small2000")
    ap.add_argument("--parallel-immediate", action="store_true",
                    help="give curl --parallel-immediate")
    ap.add_argument("--keep", action="store_true", help="keep every export folder")
    ap.add_argument("--probe", default="",
                    help="bench/export_probe binary: also time core/export alone")
    ap.add_argument("--binary-b", default="",
                    help="a second autorthanc binary (a candidate change) run in the same "
                         "alternated runs; an A/B table is printed")
    ap.add_argument("--reference-only", action="store_true",
                    help="only the curl side (no autorthanc binary needed)")
    o = ap.parse_args()

    if o.quick:
        runs = o.runs or 1
        conns = [int(x) for x in (o.connections or "2").split(",")]
        fsyncs = (o.fsync or "off").split(",")
        idle_s = o.idle_seconds if o.idle_seconds is not None else 2.0
        if o.poll_interval == 1.0:
            o.poll_interval = 0.5
        main_sets = [Dataset("ct", 8, 64, 64), Dataset("small", 30, 16, 16, series=2)]
        mem_sets = [] if o.no_memory else [Dataset("memsmall", 5, 64, 64),
                                           Dataset("membig", 40, 64, 64),
                                           Dataset("membigfiles", 5, 256, 256)]
    else:
        runs = o.runs or 5
        conns = [int(x) for x in (o.connections or "1,4").split(",")]
        fsyncs = (o.fsync or "off,on").split(",")
        idle_s = o.idle_seconds if o.idle_seconds is not None else 20.0
        main_sets = [Dataset("ct300", 300, 512, 512), Dataset("small2000", 2000, 32, 32, series=4)]
        # 100 MB of CT slices; 1 GB of CT slices (10x the instances); 1 GB
        # in the same 200 instances (5 MB each): bytes alone x10
        mem_sets = [] if o.no_memory else [Dataset("mem100m", 200, 512, 512),
                                           Dataset("mem1g", 2000, 512, 512),
                                           Dataset("mem1g200", 200, 1600, 1600)]
    if o.rules is None:
        o.rules = 49 if o.quick else 999
    if o.cases:
        keep = set(o.cases.split(","))
        main_sets = [d for d in main_sets if d.name in keep]
    for f in fsyncs:
        if f not in ("on", "off"):
            ap.error("--fsync takes on, off or on,off")

    bench = Bench(o)
    sets = main_sets + mem_sets
    started = time.monotonic()
    load_start = os.getloadavg()
    try:
        log(f"autorthanc benchmark: binary {o.binary}, work folder {o.workdir}")
        log(f"machine: {os.cpu_count()} CPU(s), Orthanc {ORTHANC_BIN}, {CURL_BIN}")
        log("preparing data sets (generate + upload once):")
        errs = []

        def prep(ds):
            try:
                ds.prepare(o.workdir, bench.pids)
            except Exception as e:  # reported below, after the others finish
                errs.append(e)
        threads = [threading.Thread(target=prep, args=(ds,)) for ds in sets]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errs:
            raise BenchError(f"preparing the data sets: {errs[0]}")
        if not o.reference_only and not os.access(o.binary, os.X_OK):
            raise BenchError(f"no autorthanc binary at {o.binary}")

        reqs = {}
        for ds in ([] if o.reference_only else sets):
            if not reqs:
                log("request counts (one untimed run per study through a counting proxy):")
            reqs[ds.name] = bench.count_requests(ds, conns[-1])
            log(f"  {ds.name}: " + ", ".join(f"{k} x{v}"
                                             for k, v in sorted(reqs[ds.name]["counts"].items())))
            ph = reqs[ds.name]["phases"]
            if ph:
                log(f"    (through the proxy: first file request {ph['first_file_ms']:.0f} ms "
                    f"after start, after {ph['meta_before_files']} metadata requests; files "
                    f"{ph['files_ms']:.0f} ms; exit {ph['after_last_file_ms']:.0f} ms after "
                    f"the last file request)")

        log(f"timed runs ({runs} each, median reported):")
        cases = []
        for ds in main_sets:
            for f in fsyncs:
                for n in conns:
                    cases.append(bench.run_case(ds, f == "on", n, runs))
        mem_cases = []
        for ds in mem_sets:
            mem_cases.append(bench.run_case(ds, False, conns[-1], min(runs, 3)))

        rc_info = None
        if o.rules > 0 and not o.reference_only and main_sets:
            log(f"rule count: {main_sets[0].name} with 1 rule vs {o.rules + 1} rules:")
            rc_info = rules_cost(bench, main_sets[0], o.rules, conns[-1], runs)

        idle = None
        if idle_s > 0 and not o.reference_only:
            log(f"idle cost ({idle_s:g} s window, poll interval {o.poll_interval:g} s):")
            idle = idle_cost(bench, main_sets[0] if main_sets else sets[0], idle_s)
            if idle["rc"] != 0:
                bench.failures.append(f"idle daemon exited {idle['rc']} on SIGTERM")

        load_end = os.getloadavg()
        print()
        print(f"autorthanc export benchmark - {time.strftime('%Y-%m-%d')}, "
              f"{os.cpu_count()} CPUs, runs={runs} (median), "
              f"Orthanc {sets[0].orthanc.get('/system').get('Version')}, "
              f"curl {subprocess.run([CURL_BIN, '--version'], capture_output=True, text=True).stdout.split()[1]}; "
              f"load average {load_start[0]:.1f} at the start, {load_end[0]:.1f} at the end")
        print()
        print_table(HEADERS, [summarize(c, reqs) for c in cases + mem_cases])
        print()
        if o.binary_b:
            print()
            print(f"A = {o.binary}, B = {o.binary_b} (same alternated runs):")
            print_table(HEADERS_B, [summarize_b(c) for c in cases + mem_cases])
            print()
        print("ratio = ar export s / curl s (the target is <= 1.15); ratio run = whole "
              "`run --once` / curl s;")
        if o.probe:
            print("core s = core/export alone, process wall time (bench/export_probe.c: ar_export_download of "
                  "the file list given), core ratio = core s / curl s;")
        if not rss_exact():
            print("peak RSS: /usr/bin/time is missing (Debian package `time`): the figures are "
                  "wait4() maxrss, which includes this script's own size (an upper bound)")
        print("requests/study = metadata requests + file downloads, /changes excluded "
              "(see the counts above).")
        if len(mem_cases) == 3:
            rs = [med([a["rss_kib"] for a in c["ar"]]) for c in mem_cases]
            if all(rs):
                base, many, big = rs
                d0, d1, d2 = (c["ds"] for c in mem_cases)
                print()
                print("memory (peak RSS of `autorthanc run --once`; target: <= 32 MiB for 1 GB, "
                      "and within 10 % of the 100 MB figure):")
                for ds, r in ((d0, base), (d1, many), (d2, big)):
                    print(f"  {ds.name:12s} {human_bytes(ds.bytes):>8s} in {ds.count:5d} "
                          f"instances: {r / 1024:5.1f} MiB ({(r / base - 1) * 100:+.1f} %)")
                print(f"  bytes x{d2.bytes / d0.bytes:.0f} at the same instance count: "
                      f"{(big / base - 1) * 100:+.1f} %; instances x{d1.count / d0.count:.0f}: "
                      f"{(many / base - 1) * 100:+.1f} % = "
                      f"{(many - base) * 1024 / (d1.count - d0.count):.0f} bytes per extra instance")
        if rc_info and rc_info["one"] and rc_info["many"]:
            r1 = reqs.get(main_sets[0].name)
            rn = rc_info["reqs"]
            print()
            print(f"rules: {main_sets[0].name}, whole `run --once` with 1 rule "
                  f"{rc_info['one']:.3f} s, with {o.rules + 1} rules {rc_info['many']:.3f} s "
                  f"({(rc_info['many'] - rc_info['one']) * 1000:+.0f} ms for loading, compiling "
                  f"and evaluating {o.rules} more); requests/study "
                  f"{r1['meta']}+{r1['files']}f vs {rn['meta']}+{rn['files']}f" if r1 else "")
        if idle:
            print()
            print(f"idle: {idle['seconds']:.1f} s window, poll interval {o.poll_interval:g} s: "
                  f"{idle['cpu']:.2f} CPU s = {idle['cpu_per_hour']:.1f} CPU s/hour, "
                  f"{idle['changes']} /changes request(s) "
                  f"({idle['changes'] / idle['seconds'] * o.poll_interval:.2f} per poll "
                  f"interval), {idle['other']} other request(s); "
                  f"SIGTERM -> exit {idle['rc']} in {idle['stop_s']:.2f} s")
        print()
        print(f"total bench time {time.monotonic() - started:.0f} s")
    except BenchError as e:
        bench.failures.append(str(e))
    except KeyboardInterrupt:
        bench.failures.append("interrupted")
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # let the cleanup finish
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        for ds in sets:  # SIGTERM all first: each Orthanc takes a few s to stop
            if ds.orthanc and ds.orthanc.proc and ds.orthanc.proc.poll() is None:
                ds.orthanc.proc.terminate()
        for ds in sets:
            if ds.orthanc:
                ds.orthanc.stop()
    if bench.failures:
        print("\nFAILURES:")
        for f in bench.failures:
            print("  " + f)
        return 1
    return 0


if __name__ == "__main__":
    def _term(signum, frame):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, _term)
    sys.exit(main())
