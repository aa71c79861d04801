"""faults.py - fault injection for autorthanc's reliability tests (issue 6).

Stands on harness.py (imported as h; nothing there is changed) and adds:
  - FaultProxy: a loopback HTTP proxy (python stdlib, port chosen at run
    time) between autorthanc and Orthanc that forwards every request and, for
    the requests matching a Fault, answers an error status, a body of its
    choice (malformed JSON), a truncated body (full Content-Length, fewer
    bytes, then the connection closed), a short body with a consistent but
    wrong Content-Length, a body with one byte flipped, a body paced to a
    slow rate, closes the connection without answering, or runs a hook
    (e.g. delete the study in Orthanc) before forwarding;
  - stop_orthanc() / kill_orthanc() / start_orthanc_again() /
    restart_orthanc(): stop (SIGTERM) or crash (SIGKILL) an Orthanc and start
    it again on the same ports with the same configuration, storage and index
    (harness.Orthanc.start() picks new ports, which a running daemon would
    never find);
  - run_ar() / PrefixedDaemon: autorthanc (once, or in the background) with
    harness's clean environment plus a command prefix (nsenter, ...) and a
    preexec function (rlimits);
  - fsize_limit(): a preexec function setting RLIMIT_FSIZE with SIGXFSZ
    ignored, so an oversized write fails with EFBIG instead of killing;
  - MountNamespace (tmpfs_namespace(), readonly_namespace()): a small tmpfs
    or a read-only bind mount in a private mount namespace held by one
    process, commands run inside it with nsenter (run_ar(prefix=...),
    PrefixedDaemon), its files read from outside through /proc/<pid>/root;
    MountNamespace.unavailable() says when mounting is not allowed here;
  - JSON log parsing (events(), message()), `autorthanc jobs` parsing
    (jobs()), and tree checks that do not depend on the daemon
    (working_left(), RefFiles + folder_problem()).

Nothing here sleeps to synchronise: waits poll a condition under a deadline
(harness.wait_for).
"""

import hashlib
import http.client
import http.server
import json
import os
import re
import resource
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.parse

import harness as h

# ---------------------------------------------------------------------------
# the fault-injecting proxy


class Fault:
    """One fault: requests whose method is `method` (None = any) and whose
    path (with query) fully matches the regular expression `path` are
    affected, `times` times (None = every time), after the first `after`
    matching requests went through untouched, and only while the optional
    `when()` (a parameter) returns true.

    kind:
      "status"   answer `status` (default 500) with `body` (a JSON error);
      "body"     answer `status` (default 200) with `body` verbatim
                 (content type `content_type`, default application/json);
      "truncate" forward, then send Orthanc's status and full Content-Length
                 but only `keep` of the body (a fraction < 1 or a byte count)
                 and close the connection;
      "short"    forward, then send `keep` of the body with a Content-Length
                 saying exactly that (the size lie only FileSize can catch);
      "corrupt"  forward, then send the body with one byte changed in its
                 middle (same size: only a checksum can catch it);
      "slow"     forward, then send the body at about `rate` bytes/s (a slow
                 link; the pacing is the fault, not a synchronisation);
      "close"    close the connection without answering;
      "hook"     call fn(method, path) and then forward normally.
    """

    def __init__(self, path, kind, times=None, method="GET", after=0, **params):
        self.path = re.compile(path)
        self.kind = kind
        self.times = times
        self.method = method
        self.after = after
        self.params = params
        self.seen = 0   # matching requests so far
        self.hits = 0   # of those, affected by the fault

    def take(self, method, path):
        """Count a request; True when the fault applies to it."""
        if self.method is not None and method != self.method:
            return False
        if self.path.fullmatch(path) is None:
            return False
        if self.times is not None and self.hits >= self.times:
            return False
        when = self.params.get("when")
        if when is not None and not when():
            return False
        self.seen += 1
        if self.seen <= self.after:
            return False
        self.hits += 1
        return True


class _Upstream(threading.local):
    conn = None


class FaultProxy:
    """Forward http://127.0.0.1:<port>/... to target_url.  Use as a context
    manager or start()/stop().  proxy.log holds (method, path, status sent,
    fault kind or None) for every request, in arrival order."""

    def __init__(self, target_url):
        u = urllib.parse.urlsplit(target_url)
        self.target_host = u.hostname
        self.target_port = u.port or 80
        self.faults = []
        self.log = []
        self.lock = threading.Lock()
        self.server = None
        self.thread = None
        self._up = _Upstream()

    # -- configuration --------------------------------------------------------
    def add(self, path, kind, times=None, method="GET", after=0, **params):
        f = Fault(path, kind, times, method, after, **params)
        with self.lock:
            self.faults.append(f)
        return f

    def clear(self):
        with self.lock:
            self.faults = []

    def count(self, path, method="GET", fault=None):
        """How many requests matched `path` (regex, full match); with fault
        set, only those answered with that fault kind ("" = forwarded)."""
        rx = re.compile(path)
        with self.lock:
            return sum(1 for (m, p, _s, k) in self.log
                       if (method is None or m == method) and rx.fullmatch(p)
                       and (fault is None or (k or "") == fault))

    # -- lifecycle --------------------------------------------------------------
    @property
    def url(self):
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def start(self):
        proxy = self

        class Handler(_ProxyHandler):
            owner = proxy

        self.server = _QuietServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever,
                                       kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()
        return self

    def stop(self):
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
        return False

    # -- used by the handler ----------------------------------------------------
    def _pick(self, method, path):
        with self.lock:
            for f in self.faults:
                if f.take(method, path):
                    return f
        return None

    def _record(self, method, path, status, kind):
        with self.lock:
            self.log.append((method, path, status, kind))

    def _forward(self, method, path, headers, body):
        """(status, headers list, body bytes) from the target; a fresh
        connection is tried once when a kept-alive one was closed."""
        for attempt in (1, 2):
            conn = self._up.conn
            fresh = conn is None
            if fresh:
                conn = http.client.HTTPConnection(self.target_host, self.target_port,
                                                  timeout=60)
                self._up.conn = conn
            try:
                conn.request(method, path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                hdrs = [(k, v) for (k, v) in resp.getheaders()
                        if k.lower() in ("content-type",)]
                if resp.will_close:
                    conn.close()
                    self._up.conn = None
                return resp.status, hdrs, data
            except (http.client.HTTPException, OSError):
                conn.close()
                self._up.conn = None
                if fresh or attempt == 2:
                    raise
        raise OSError("unreachable")


class _QuietServer(http.server.ThreadingHTTPServer):
    def handle_error(self, request, client_address):
        pass  # a client hanging up mid-answer is part of the game


class _ProxyHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    owner = None  # FaultProxy, set by the subclass made in start()

    def log_message(self, fmt, *args):  # quiet
        pass

    def do_GET(self):
        self._handle()

    def do_POST(self):
        self._handle()

    def do_PUT(self):
        self._handle()

    def do_DELETE(self):
        self._handle()

    def _send(self, status, body, content_type="application/json", length=None):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body) if length is None else length))
        self.end_headers()
        self.wfile.write(body)
        self.wfile.flush()

    def _hang_up(self):
        self.close_connection = True
        try:
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _handle(self):
        p = self.owner
        method, path = self.command, self.path
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(n) if n else None
        f = p._pick(method, path)
        kind = f.kind if f else None
        if kind == "close":
            p._record(method, path, 0, kind)
            self._hang_up()
            return
        if kind == "status":
            status = f.params.get("status", 500)
            msg = f.params.get("body", json.dumps({"Message": "injected fault"}).encode())
            p._record(method, path, status, kind)
            self._send(status, msg)
            return
        if kind == "body":
            status = f.params.get("status", 200)
            data = f.params["body"]
            if isinstance(data, str):
                data = data.encode("utf-8")
            p._record(method, path, status, kind)
            self._send(status, data, f.params.get("content_type", "application/json"))
            return
        if kind == "hook":
            f.params["fn"](method, path)
        headers = {k: v for (k, v) in self.headers.items()
                   if k.lower() in ("authorization", "content-type", "accept")}
        try:
            status, hdrs, data = p._forward(method, path, headers, body)
        except (http.client.HTTPException, OSError) as e:
            p._record(method, path, 502, "upstream-down")
            self._send(502, json.dumps({"Message": f"proxy: {e}"}).encode())
            return
        ctype = dict((k.lower(), v) for k, v in hdrs).get("content-type",
                                                           "application/octet-stream")
        if kind == "corrupt" and status == 200 and data:
            mid = len(data) // 2
            data = data[:mid] + bytes([data[mid] ^ 0xFF]) + data[mid + 1:]
            p._record(method, path, status, kind)
            self._send(status, data, ctype)
            return
        if kind == "slow" and status == 200:
            rate = max(1, int(f.params.get("rate", 65536)))
            step = max(1, rate // 20)
            p._record(method, path, status, kind)
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            try:
                for off in range(0, len(data), step):
                    self.wfile.write(data[off:off + step])
                    self.wfile.flush()
                    time.sleep(step / rate)
            except OSError:
                self.close_connection = True
            return
        if kind in ("truncate", "short") and status == 200 and data:
            keep = f.params.get("keep", 0.5)
            cut = int(len(data) * keep) if isinstance(keep, float) else int(keep)
            cut = max(0, min(cut, len(data) - 1))
            p._record(method, path, status, kind)
            if kind == "truncate":
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                try:
                    self.wfile.write(data[:cut])
                except OSError:
                    pass
                self._hang_up()
            else:
                self._send(status, data[:cut], ctype)
            return
        p._record(method, path, status, None if kind in (None, "hook") else kind)
        try:
            self._send(status, data, ctype)
        except OSError:
            self.close_connection = True


# ---------------------------------------------------------------------------
# Orthanc: stop and start again on the same ports


def restart_orthanc(o, down_for=0.0):
    """Stop Orthanc o (SIGTERM, waited for), keep it down for `down_for`
    seconds (the outage is the fault being injected, not a synchronisation),
    then start it again with the same configuration file: same HTTP/DICOM
    ports, storage and index.  Waits (with a deadline) until it answers
    /system with its own name."""
    stop_orthanc(o)
    if down_for > 0:
        time.sleep(down_for)
    start_orthanc_again(o)


def stop_orthanc(o):
    o.stop()


def start_orthanc_again(o, timeout=30):
    """Start o again from its existing configuration file (same ports); a
    port that some other process took meanwhile is a HarnessError."""
    if o.proc is not None:
        raise h.HarnessError(f"Orthanc {o.name} is still running")
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "TCP_NODELAY": "1",
           "HOME": o.tmpdir}
    with open(o.log_path, "ab") as log:
        log.write(f"---- restart on http {o.http_port}\n".encode())
        log.flush()
        o.proc = subprocess.Popen([h.ORTHANC_BIN, o.config_path], stdin=subprocess.DEVNULL,
                                  stdout=log, stderr=subprocess.STDOUT, cwd=o.tmpdir, env=env,
                                  start_new_session=True,
                                  preexec_fn=getattr(h, "_die_with_parent", None))

    def up():
        if o.proc.poll() is not None:
            raise h.HarnessError(f"Orthanc {o.name} exited {o.proc.returncode} on restart "
                                 f"(port {o.http_port} taken?); log:\n{o.log_tail()}")
        try:
            return o.get("/system", timeout=2).get("Name") == o.unique_name
        except (OSError, h.HttpError, ValueError):
            return False

    try:
        h.wait_for(up, timeout, f"Orthanc {o.name} to answer again on port {o.http_port}")
    except h.HarnessError:
        o._kill()
        o.proc = None
        raise


# ---------------------------------------------------------------------------
# running autorthanc with a prefix / rlimits


def _clean_env(env, home):
    clean = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": home}
    for k in h._PASSTHROUGH:
        if k in os.environ:
            clean[k] = os.environ[k]
    for k, v in (env or {}).items():
        if v is None:
            clean.pop(k, None)
        else:
            clean[k] = str(v)
    return clean


def fsize_limit(max_bytes):
    """A preexec_fn: no file may grow past max_bytes (RLIMIT_FSIZE); SIGXFSZ
    ignored (inherited across exec), so the write fails with EFBIG."""
    def apply():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (max_bytes, max_bytes))
    return apply


def run_ar(args, env=None, cwd=None, timeout=120, prefix=(), preexec_fn=None):
    """Like harness.run_autorthanc, plus a command prefix and a preexec_fn.
    Returns harness.Result."""
    exe = h.binary()
    if not os.path.exists(exe):
        raise h.HarnessError(f"autorthanc binary not found at {exe} (set AR_BINARY)")
    clean = _clean_env(env, cwd or tempfile.gettempdir())
    try:
        p = subprocess.run(list(prefix) + [exe] + list(args), cwd=cwd, env=clean,
                           capture_output=True, timeout=timeout, stdin=subprocess.DEVNULL,
                           preexec_fn=preexec_fn)
    except subprocess.TimeoutExpired as e:
        err = (e.stderr or b"").decode("utf-8", "replace")
        h._RUN_LOG.append((list(args), None, "", err))
        raise h.HarnessError(f"autorthanc {' '.join(args)} did not finish within "
                             f"{timeout}s; stderr so far:\n{h.tail(err)}") from None
    r = h.Result(p.returncode, p.stdout.decode("utf-8", "replace"),
                 p.stderr.decode("utf-8", "replace"))
    h._RUN_LOG.append((list(args), r.rc, r.stdout, r.stderr, 0))
    return r


# ---------------------------------------------------------------------------
# logs and the job ledger


def events(stderr_text, event=None):
    """The JSON log lines (AUTORTHANC_LOG_FORMAT=json) as dicts, optionally
    only those of one event (or any of a tuple of events)."""
    out = []
    for line in stderr_text.splitlines():
        line = line.strip()
        if not line.startswith("{"):
            continue
        try:
            ev = json.loads(line)
        except ValueError:
            continue
        if event is None or ev.get("event") == event or (
                isinstance(event, tuple) and ev.get("event") in event):
            out.append(ev)
    return out


def message(ev):
    """The free text of a JSON log line (whatever the key is called)."""
    for k in ("msg", "message"):
        if k in ev:
            return ev[k]
    return json.dumps(ev)


JOB_FIELDS = ("id", "status", "attempts", "rule", "action", "level", "resource", "detail")


def jobs(ws, env=None):
    """`autorthanc jobs` of workspace ws as a list of dicts (JOB_FIELDS); []
    when the daemon never got as far as creating its ledger (`jobs` says
    so and exits 2, creating nothing)."""
    r = ws.run(["jobs"], env=env)
    if r.rc == 2 and "no state database in" in r.stderr:
        return []
    if r.rc != 0:
        raise AssertionError(f"autorthanc jobs exited {r.rc}; stderr:\n{r.stderr[-2000:]}")
    out = []
    for line in r.stdout.splitlines():
        if not line.strip():
            continue
        parts = line.split("\t")
        if len(parts) < len(JOB_FIELDS):
            raise AssertionError(f"odd `autorthanc jobs` line: {line!r}")
        d = dict(zip(JOB_FIELDS, parts[:len(JOB_FIELDS) - 1]))
        d["detail"] = "\t".join(parts[len(JOB_FIELDS) - 1:])
        d["id"] = int(d["id"])
        d["attempts"] = int(d["attempts"])
        out.append(d)
    return out


# ---------------------------------------------------------------------------
# trees


def working_left(storage_root):
    """Every *.WORKING path under storage_root (folders or files)."""
    files, dirs = h.walk_tree(storage_root)
    return [p for p in dirs + files if p.endswith(".WORKING") or ".WORKING/" in p]


class RefFiles:
    """sha256 and size of /instances/{id}/file, fetched once per instance."""

    def __init__(self, orthanc):
        self.o = orthanc
        self.cache = {}

    def get(self, instance_id):
        if instance_id not in self.cache:
            data = self.o.get(f"/instances/{instance_id}/file", raw=True)
            self.cache[instance_id] = (len(data), hashlib.sha256(data).hexdigest())
        return self.cache[instance_id]


def _digest(path):
    d = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while True:
            chunk = f.read(1 << 20)
            if not chunk:
                break
            size += len(chunk)
            d.update(chunk)
    return size, d.hexdigest()


def folder_problem(refs, storage_root, folder, expected):
    """None when storage_root/folder holds exactly the files of `expected`
    ({path relative to storage: instance id}, all under folder), each byte for
    byte equal to Orthanc's; else a short description of the difference."""
    root = os.path.join(storage_root, folder)
    files, _ = h.walk_tree(root)
    have = {f"{folder}/{f}" for f in files}
    want = set(expected)
    if have != want:
        missing = sorted(want - have)
        extra = sorted(have - want)
        return (f"{folder}: {len(have)} files, {len(missing)} missing (e.g. {missing[:2]}), "
                f"{len(extra)} unexpected (e.g. {extra[:2]})")
    for rel in sorted(want):
        if _digest(os.path.join(storage_root, rel)) != refs.get(expected[rel]):
            return f"{rel}: differs from /instances/{expected[rel]}/file"
    return None


# ---------------------------------------------------------------------------
# mounts in a private mount namespace (a small tmpfs, a read-only bind)


class MountNamespace:
    """A private mount namespace held by one process (`cat`, waiting on its
    stdin; it ends when close() closes that pipe or when the test process
    dies).  `setup` is a shell script run inside first (the mounts).  The
    host never sees those mounts: run commands inside with prefix() or sh(),
    read files from outside through path().  MountNamespace.unavailable()
    says why it can't work here (None when it can)."""

    @staticmethod
    def unavailable():
        for tool in ("unshare", "nsenter", "mount"):
            if not any(os.access(os.path.join(d, tool), os.X_OK)
                       for d in os.environ.get("PATH", "/usr/bin:/bin").split(":") if d):
                return f"{tool} not found"
        probe = tempfile.mkdtemp(prefix="ar-mntns-probe-")
        try:
            p = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c",
                                f"mount -t tmpfs -o size=64k tmpfs '{probe}' && "
                                f"mount -o remount,ro '{probe}'"],
                               capture_output=True, timeout=20)
            if p.returncode != 0:
                return ("cannot mount in a private mount namespace here (needs root or "
                        "CAP_SYS_ADMIN): " + (p.stderr.decode(errors="replace").strip()
                                              or f"exit {p.returncode}"))
        except (OSError, subprocess.SubprocessError) as e:
            return f"unshare failed: {e}"
        finally:
            os.rmdir(probe)
        return None

    def __init__(self, setup):
        script = f"{setup} && echo mounted && exec cat"
        self.proc = subprocess.Popen(["unshare", "-m", "--propagation", "private", "sh", "-c",
                                      script], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE)
        line = self.proc.stdout.readline().decode().strip()
        if line != "mounted":
            self.proc.stdin.close()
            self.proc.wait()
            err = self.proc.stderr.read().decode(errors="replace")
            raise h.HarnessError(f"mount namespace setup failed ({setup!r}): {err.strip()}")

    def prefix(self):
        return ["nsenter", f"--mount=/proc/{self.proc.pid}/ns/mnt", "--"]

    def sh(self, script):
        """Run a shell script inside the namespace; HarnessError if it fails."""
        p = subprocess.run(self.prefix() + ["sh", "-c", script], capture_output=True,
                           timeout=30)
        if p.returncode != 0:
            raise h.HarnessError(f"{script!r} in the mount namespace failed: "
                                 f"{p.stderr.decode(errors='replace').strip()}")
        return p.stdout.decode(errors="replace")

    def path(self, abs_path, *parts):
        """abs_path (or a path under it) as seen inside the namespace, from outside."""
        return os.path.join(f"/proc/{self.proc.pid}/root{os.path.abspath(abs_path)}", *parts)

    def close(self):
        if self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def tmpfs_namespace(mountpoint, size):
    """A MountNamespace with a tmpfs of `size` (e.g. "1m") on mountpoint."""
    os.makedirs(mountpoint, exist_ok=True)
    return MountNamespace(f"mount -t tmpfs -o size={size},mode=0755 tmpfs '{mountpoint}'")


def readonly_namespace(folder):
    """A MountNamespace in which `folder` is a read-only bind mount of itself
    (writes fail with EROFS, even for root)."""
    return MountNamespace(f"mount --bind '{folder}' '{folder}' && "
                          f"mount -o remount,bind,ro '{folder}'")


class PrefixedDaemon(h.Daemon):
    """`autorthanc ARGS` in the background behind a command prefix (nsenter)
    and/or a preexec_fn; harness.Daemon's interface (stderr, stdout, alive,
    stop) is inherited, only the start differs."""

    def __init__(self, args, env, cwd, prefix=(), preexec_fn=None):
        self.dir = cwd
        os.makedirs(cwd, exist_ok=True)
        exe = h.binary()
        self.args = list(args)
        self.out_path = os.path.join(cwd, "daemon.stdout")
        self.err_path = os.path.join(cwd, "daemon.stderr")
        die = getattr(h, "_die_with_parent", None)

        def pre():
            if die:
                die()
            if preexec_fn:
                preexec_fn()
        with open(self.out_path, "wb") as o, open(self.err_path, "wb") as e:
            self.proc = subprocess.Popen(list(prefix) + [exe] + self.args, cwd=cwd,
                                         env=_clean_env(env, cwd), stdin=subprocess.DEVNULL,
                                         stdout=o, stderr=e, preexec_fn=pre)


def kill_orthanc(o):
    """SIGKILL Orthanc o (a crash: instant, mid-request) and reap it."""
    if o.proc is not None:
        if o.proc.poll() is None:
            o.proc.kill()
        o.proc.wait()
        o.proc = None
