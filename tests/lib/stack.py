"""stack.py - the deployment stack of docker-compose.yml, run natively for tests.

What this module promises:
  * read_env_file() and interpolate() read env_example and expand ${VAR},
    ${VAR:-default}, ${VAR-default}, ${VAR:?err}, ${VAR:+alt} and nested
    forms the way Docker Compose does, so the tests can see the values the
    compose file would produce without a Docker engine.
  * Postgres, Orthanc and Nginx start the same software the containers run
    (Debian's postgresql, orthanc + orthanc-postgresql, nginx) on loopback
    ports chosen at run time, with every file (data, sockets, logs, pid) in
    a temporary folder the caller owns.  Orthanc reads docker/orthanc.json
    itself, unmodified; nginx includes docker/nginx-orthanc.conf itself.
  * Readiness is always a polled condition with a deadline, never a sleep.
  * stop() ends only the process this module started (by pid), politely
    first, and is safe to call twice.

It never touches system services, system paths or other processes.
"""

import base64
import glob
import json
import os
import pwd
import re
import shutil
import signal
import socket
import struct
import subprocess
import time
import urllib.error
import urllib.request

SOURCE_DIR = os.environ.get("AR_SOURCE_DIR") or os.path.abspath(
    os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
DOCKER_DIR = os.path.join(SOURCE_DIR, "docker")

# Debian packages each component comes from, for error messages.
PACKAGES = {
    "postgres": "postgresql",
    "orthanc": "orthanc",
    "orthanc-postgresql": "orthanc-postgresql",
    "nginx": "nginx-light (or nginx)",
}


class StackError(Exception):
    pass


# ---------------------------------------------------------------------------
# Small helpers
# ---------------------------------------------------------------------------

def free_port():
    """A loopback TCP port free right now (the caller retries on a race)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(predicate, timeout, what, proc=None, log=None):
    """Poll predicate() until it returns a true value or `timeout` seconds
    pass.  If `proc` exits meanwhile, fail at once with the tail of `log`."""
    deadline = time.monotonic() + timeout
    delay = 0.02
    while True:
        value = predicate()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            raise StackError("%s: process exited with status %s while waiting"
                             "%s" % (what, proc.returncode, log_tail(log)))
        if time.monotonic() >= deadline:
            raise StackError("timed out after %.0f s waiting for %s%s"
                             % (timeout, what, log_tail(log)))
        time.sleep(delay)
        delay = min(delay * 2, 0.25)


def log_tail(path, lines=15):
    if not path or not os.path.exists(path):
        return ""
    with open(path, "rb") as f:
        data = f.read().decode("utf-8", "replace").splitlines()
    return "\n  --- last lines of %s ---\n  %s" % (path, "\n  ".join(data[-lines:]))


def stop_process(proc, sig=signal.SIGTERM, timeout=15):
    """Stop one child process we started: `sig`, then SIGKILL after timeout."""
    if proc is None or proc.poll() is not None:
        return
    try:
        proc.send_signal(sig)
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=timeout)
    except ProcessLookupError:
        pass


def find_program(name, extra_dirs=()):
    path = shutil.which(name)
    if path:
        return path
    for d in list(extra_dirs) + ["/usr/sbin", "/sbin", "/usr/local/sbin"]:
        cand = os.path.join(d, name)
        if os.access(cand, os.X_OK):
            return cand
    return None


def dpkg_files(package):
    try:
        out = subprocess.run(["dpkg", "-L", package], capture_output=True,
                             text=True, check=False).stdout
    except FileNotFoundError:
        return []
    return [line.strip() for line in out.splitlines() if line.strip()]


def postgres_bindir():
    """Directory of Debian's PostgreSQL server binaries (newest version)."""
    best = None
    for d in glob.glob("/usr/lib/postgresql/*/bin"):
        if os.access(os.path.join(d, "postgres"), os.X_OK) and \
           os.access(os.path.join(d, "initdb"), os.X_OK):
            ver = os.path.basename(os.path.dirname(d))
            key = tuple(int(x) for x in re.findall(r"\d+", ver)) or (0,)
            if best is None or key > best[0]:
                best = (key, d)
    return best[1] if best else None


def orthanc_postgresql_plugins():
    """The index and storage plugin libraries shipped by orthanc-postgresql,
    found through `dpkg -L` (the same two libraries the orthancteam image
    enables when the configuration has a "PostgreSQL" section)."""
    found = {}
    for path in dpkg_files("orthanc-postgresql"):
        base = os.path.basename(path)
        for kind in ("Index", "Storage"):
            if base.startswith("libOrthancPostgreSQL%s.so" % kind) and os.path.isfile(path):
                # Prefer the real file over the plugin-folder symlink.
                real = os.path.realpath(path)
                found.setdefault(kind, real)
    if "Index" not in found:
        return None
    return [found["Index"]] + ([found["Storage"]] if "Storage" in found else [])


def missing_prerequisites():
    """Names of the Debian packages the native stack needs but lacks."""
    missing = []
    if not postgres_bindir():
        missing.append(PACKAGES["postgres"])
    if not find_program("Orthanc"):
        missing.append(PACKAGES["orthanc"])
    if not orthanc_postgresql_plugins():
        missing.append(PACKAGES["orthanc-postgresql"])
    if not find_program("nginx"):
        missing.append(PACKAGES["nginx"])
    return missing


def service_user():
    """(uid, gid, name) to run PostgreSQL as: ourselves, or when we are root
    a throwaway system account (initdb refuses to run as root)."""
    if os.geteuid() != 0:
        pw = pwd.getpwuid(os.geteuid())
        return pw.pw_uid, pw.pw_gid, pw.pw_name
    for name in ("postgres", "nobody"):
        try:
            pw = pwd.getpwnam(name)
            return pw.pw_uid, pw.pw_gid, pw.pw_name
        except KeyError:
            continue
    raise StackError("running as root and no 'postgres' or 'nobody' account "
                     "to run PostgreSQL as")


def _demote(uid, gid):
    """preexec_fn dropping to uid/gid when we are root (no-op otherwise)."""
    if os.geteuid() != 0:
        return None

    def fn():
        os.setgroups([])
        os.setgid(gid)
        os.setuid(uid)
    return fn


# ---------------------------------------------------------------------------
# Compose-style .env reading and ${VAR} interpolation
# ---------------------------------------------------------------------------

_ENV_LINE = re.compile(r"^\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*)$")
_ENV_COMMENTED = re.compile(r"^\s*#\s*([A-Z_][A-Z0-9_]*)=(.*)$")


def _env_value(value):
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        return value[1:-1]
    if " #" in value:
        return value.split(" #", 1)[0].rstrip()
    return value


def read_env_file(path):
    """Parse a .env-style file (KEY=VALUE lines, # comments, optional quotes).

    Returns (values, documented): `values` maps each active KEY to its value;
    `documented` maps every key, active or commented out ("# KEY=value"), to
    the explanatory comment lines of its block (the comments written just
    above a run of assignment lines, up to the previous blank line)."""
    values, documented = {}, {}
    pending, block = [], []
    with open(path, encoding="utf-8") as f:
        for lineno, raw in enumerate(f, 1):
            line = raw.rstrip("\n")
            stripped = line.strip()
            if not stripped:
                pending, block = [], []
                continue
            active = None if stripped.startswith("#") else _ENV_LINE.match(line)
            commented = _ENV_COMMENTED.match(line) if stripped.startswith("#") else None
            if stripped.startswith("#") and not commented:
                text = stripped.lstrip("#").strip()
                if any(c.isalnum() for c in text):
                    pending.append(text)
                continue
            m = active or commented
            if not m:
                raise StackError("%s:%d: cannot parse %r" % (path, lineno, line))
            if pending:
                block, pending = pending, []
            key = m.group(1)
            documented[key] = list(block)
            if active:
                values[key] = _env_value(m.group(2))
    return values, documented


def _find_close(s, start):
    """Index of the '}' closing the '${' whose body starts at `start`."""
    depth = 1
    i = start
    while i < len(s):
        if s.startswith("${", i):
            depth += 1
            i += 2
            continue
        if s[i] == "}":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    raise StackError("unterminated ${ in %r" % s)


_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def referenced_variables(s):
    """Every variable name a compose string refers to, nested ones included."""
    names = []
    i = 0
    while i < len(s):
        if s.startswith("$$", i):
            i += 2
            continue
        if s.startswith("${", i):
            end = _find_close(s, i + 2)
            body = s[i + 2:end]
            m = _NAME.match(body)
            if not m:
                raise StackError("bad variable reference ${%s}" % body)
            names.append(m.group(0))
            rest = body[m.end():]
            for op in (":-", ":?", ":+", "-", "?", "+"):
                if rest.startswith(op):
                    names.extend(referenced_variables(rest[len(op):]))
                    break
            i = end + 1
            continue
        if s[i] == "$":
            m = _NAME.match(s, i + 1)
            if m:
                names.append(m.group(0))
                i = m.end()
                continue
        i += 1
    return names


def interpolate(s, env):
    """Expand a compose string with the variables in `env` (a dict)."""
    out = []
    i = 0
    while i < len(s):
        if s.startswith("$$", i):
            out.append("$")
            i += 2
            continue
        if s.startswith("${", i):
            end = _find_close(s, i + 2)
            body = s[i + 2:end]
            m = _NAME.match(body)
            if not m:
                raise StackError("bad variable reference ${%s}" % body)
            name, rest = m.group(0), body[m.end():]
            value = env.get(name)
            if rest == "":
                out.append(value or "")
            elif rest.startswith(":-"):
                out.append(value if value else interpolate(rest[2:], env))
            elif rest.startswith("-"):
                out.append(value if value is not None else interpolate(rest[1:], env))
            elif rest.startswith(":?"):
                if not value:
                    raise StackError("required variable %s: %s" % (name, interpolate(rest[2:], env)))
                out.append(value)
            elif rest.startswith("?"):
                if value is None:
                    raise StackError("required variable %s: %s" % (name, interpolate(rest[1:], env)))
                out.append(value)
            elif rest.startswith(":+"):
                out.append(interpolate(rest[2:], env) if value else "")
            elif rest.startswith("+"):
                out.append(interpolate(rest[1:], env) if value is not None else "")
            else:
                raise StackError("unsupported form ${%s}" % body)
            i = end + 1
            continue
        if s[i] == "$":
            m = _NAME.match(s, i + 1)
            if m:
                out.append(env.get(m.group(0)) or "")
                i = m.end()
                continue
        out.append(s[i])
        i += 1
    return "".join(out)


def interpolate_tree(node, env):
    """interpolate() applied to every string value of a parsed YAML tree."""
    if isinstance(node, str):
        return interpolate(node, env)
    if isinstance(node, list):
        return [interpolate_tree(x, env) for x in node]
    if isinstance(node, dict):
        return {k: interpolate_tree(v, env) for k, v in node.items()}
    return node


def service_environment(service):
    """A compose service's `environment` as a dict (list or map form)."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        result = {}
        for item in env:
            key, _, value = str(item).partition("=")
            result[key] = value
        return result
    return {k: ("" if v is None else str(v)) for k, v in env.items()}


def strip_json_comments(text):
    """Remove whole-line // comments (the only kind docker/orthanc.json uses;
    Orthanc and the orthancteam image both accept them)."""
    return "\n".join("" if line.lstrip().startswith("//") else line
                     for line in text.splitlines())


def substitute_like_orthanc(text, env):
    """Orthanc replaces ${VAR} in a configuration file's raw text before it
    parses the JSON; do the same (unset variables become empty)."""
    return re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}",
                  lambda m: env.get(m.group(1), ""), text)


# ---------------------------------------------------------------------------
# HTTP
# ---------------------------------------------------------------------------

def http(method, url, body=None, auth=None, headers=None, timeout=30):
    """(status, headers, body bytes); HTTP errors are answers, not raised."""
    req = urllib.request.Request(url, data=body, method=method)
    if auth:
        token = base64.b64encode(("%s:%s" % auth).encode()).decode()
        req.add_header("Authorization", "Basic " + token)
    for k, v in (headers or {}).items():
        req.add_header(k, v)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def http_json(method, url, body=None, auth=None):
    status, _, data = http(method, url, body, auth)
    if status != 200:
        raise StackError("%s %s: HTTP %d: %s" % (method, url, status, data[:200]))
    return json.loads(data)


# ---------------------------------------------------------------------------
# Minimal DICOM files (Part 10, explicit VR little endian)
# ---------------------------------------------------------------------------

_SHORT_VR = {"AE", "AS", "CS", "DA", "DS", "DT", "IS", "LO", "PN", "SH", "TM", "UI", "US", "UL"}


def _element(group, elem, vr, value):
    if isinstance(value, str):
        raw = value.encode("utf-8")
        if len(raw) % 2:
            raw += b"\0" if vr == "UI" else b" "
    else:
        raw = value
    if vr in _SHORT_VR:
        return struct.pack("<HH2sH", group, elem, vr.encode(), len(raw)) + raw
    return struct.pack("<HH2sHI", group, elem, vr.encode(), 0, len(raw)) + raw


def make_dicom(patient_id, patient_name, study_uid, series_uid, sop_uid,
               study_id="1", series_number=1, instance_number=1,
               study_date="20240131", modality="OT", study_description="",
               size=64):
    """A small but valid Secondary Capture image (size x size, 16 bits)."""
    sop_class = "1.2.840.10008.5.1.4.1.1.7"
    tsyntax = "1.2.840.10008.1.2.1"
    meta_body = (_element(0x0002, 0x0001, "OB", b"\0\1") +
                 _element(0x0002, 0x0002, "UI", sop_class) +
                 _element(0x0002, 0x0003, "UI", sop_uid) +
                 _element(0x0002, 0x0010, "UI", tsyntax) +
                 _element(0x0002, 0x0012, "UI", "1.2.826.0.1.3680043.10.1455.1"))
    meta = _element(0x0002, 0x0000, "UL", struct.pack("<I", len(meta_body))) + meta_body
    # Pixel values depend on the instance so every file differs.
    seed = sum(sop_uid.encode()) & 0xFFFF
    pixels = b"".join(struct.pack("<H", (seed + i * 7) & 0xFFFF) for i in range(size * size))
    ds = b"".join([
        _element(0x0008, 0x0016, "UI", sop_class),
        _element(0x0008, 0x0018, "UI", sop_uid),
        _element(0x0008, 0x0020, "DA", study_date),
        _element(0x0008, 0x0021, "DA", study_date),
        _element(0x0008, 0x0060, "CS", modality),
        _element(0x0008, 0x1030, "LO", study_description),
        _element(0x0010, 0x0010, "PN", patient_name),
        _element(0x0010, 0x0020, "LO", patient_id),
        _element(0x0020, 0x000D, "UI", study_uid),
        _element(0x0020, 0x000E, "UI", series_uid),
        _element(0x0020, 0x0010, "SH", study_id),
        _element(0x0020, 0x0011, "IS", str(series_number)),
        _element(0x0020, 0x0013, "IS", str(instance_number)),
        _element(0x0028, 0x0002, "US", struct.pack("<H", 1)),
        _element(0x0028, 0x0004, "CS", "MONOCHROME2"),
        _element(0x0028, 0x0010, "US", struct.pack("<H", size)),
        _element(0x0028, 0x0011, "US", struct.pack("<H", size)),
        _element(0x0028, 0x0100, "US", struct.pack("<H", 16)),
        _element(0x0028, 0x0101, "US", struct.pack("<H", 16)),
        _element(0x0028, 0x0102, "US", struct.pack("<H", 15)),
        _element(0x0028, 0x0103, "US", struct.pack("<H", 0)),
        _element(0x7FE0, 0x0010, "OW", pixels),
    ])
    return b"\0" * 128 + b"DICM" + meta + ds


# ---------------------------------------------------------------------------
# PostgreSQL (the index-db service)
# ---------------------------------------------------------------------------

class Postgres:
    """A private PostgreSQL cluster: initdb into tmp, password auth over TCP
    on 127.0.0.1:<port>, unix socket in tmp.  Like the postgres image, it
    creates `user` with `password` and the database `db`."""

    def __init__(self, tmp, user, password, db):
        self.tmp, self.user, self.password, self.db = tmp, user, password, db
        self.bindir = postgres_bindir()
        if not self.bindir:
            raise StackError("PostgreSQL server not installed (Debian package %s)"
                             % PACKAGES["postgres"])
        self.uid, self.gid, self.account = service_user()
        self.root = os.path.join(tmp, "postgres")
        self.data = os.path.join(self.root, "data")
        self.sockdir = os.path.join(self.root, "sock")
        self.log = os.path.join(self.root, "postgres.log")
        self.port = None
        self.proc = None

    def _bin(self, name):
        return os.path.join(self.bindir, name)

    def client_env(self):
        env = dict(os.environ)
        env.update(PGPASSWORD=self.password, PGCONNECT_TIMEOUT="5")
        return env

    def start(self, timeout=60):
        os.makedirs(self.sockdir)
        pwfile = os.path.join(self.root, "pwfile")
        with open(pwfile, "w") as f:
            f.write(self.password + "\n")
        for path in (self.root, self.sockdir, pwfile):
            os.chown(path, self.uid, self.gid)
        os.chmod(self.root, 0o700)
        init = subprocess.run(
            [self._bin("initdb"), "-D", self.data, "-U", self.user,
             "--pwfile=" + pwfile, "--auth-host=scram-sha-256",
             "--auth-local=trust", "-E", "UTF8", "--locale=C", "--no-sync"],
            capture_output=True, text=True, preexec_fn=_demote(self.uid, self.gid))
        if init.returncode != 0:
            raise StackError("initdb failed (%d): %s" % (init.returncode, init.stderr[-800:]))
        # A port can be taken between free_port() and bind(): retry.
        for _attempt in range(3):
            self.port = free_port()
            with open(self.log, "ab") as logf:
                self.proc = subprocess.Popen(
                    [self._bin("postgres"), "-D", self.data, "-p", str(self.port),
                     "-c", "listen_addresses=127.0.0.1",
                     "-c", "unix_socket_directories=" + self.sockdir,
                     "-c", "fsync=off", "-c", "full_page_writes=off",
                     "-c", "synchronous_commit=off"],
                    stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT,
                    preexec_fn=_demote(self.uid, self.gid))
            try:
                # The same probe as the compose healthcheck: over TCP, so a
                # half-started server does not count.
                wait_until(self.is_ready, timeout, "PostgreSQL on port %d" % self.port,
                           proc=self.proc, log=self.log)
                break
            except StackError:
                if self.proc.poll() is not None and "could not bind" in log_tail(self.log, 40):
                    continue
                raise
        else:
            raise StackError("PostgreSQL: no free port after 3 attempts")
        # The postgres image creates POSTGRES_DB at first start; so do we.
        created = subprocess.run(
            [self._bin("createdb"), "-h", "127.0.0.1", "-p", str(self.port),
             "-U", self.user, self.db],
            capture_output=True, text=True, env=self.client_env())
        if created.returncode != 0 and "already exists" not in created.stderr:
            raise StackError("createdb %s failed: %s" % (self.db, created.stderr.strip()))
        return self

    def is_ready(self):
        r = subprocess.run([self._bin("pg_isready"), "-q", "-h", "127.0.0.1",
                            "-p", str(self.port), "-U", self.user],
                           stdin=subprocess.DEVNULL, env=self.client_env())
        return r.returncode == 0

    def query(self, sql):
        """Run one SQL statement through psql over TCP with the password;
        returns the unaligned, tuples-only output."""
        r = subprocess.run(
            [self._bin("psql"), "-h", "127.0.0.1", "-p", str(self.port),
             "-U", self.user, "-d", self.db, "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1",
             "-c", sql],
            capture_output=True, text=True, env=self.client_env())
        if r.returncode != 0:
            raise StackError("psql %r: %s" % (sql, r.stderr.strip()))
        return r.stdout.strip()

    def stop(self):
        # SIGINT is PostgreSQL's "fast shutdown".
        stop_process(self.proc, signal.SIGINT)


# ---------------------------------------------------------------------------
# Orthanc with docker/orthanc.json and the PostgreSQL plugin
# ---------------------------------------------------------------------------

class Orthanc:
    """Orthanc started on a configuration folder holding an unmodified copy
    of docker/orthanc.json plus local.json with the keys that only depend on
    where it runs (StorageDirectory, HttpPort, Plugins).  The ${VAR}s of
    orthanc.json are substituted by Orthanc itself from `env`."""

    def __init__(self, tmp, env, config_source=None):
        self.tmp = tmp
        self.env = dict(env)
        self.config_source = config_source or os.path.join(DOCKER_DIR, "orthanc.json")
        self.binary = find_program("Orthanc")
        if not self.binary:
            raise StackError("Orthanc not installed (Debian package orthanc)")
        self.plugins = orthanc_postgresql_plugins()
        if not self.plugins:
            raise StackError("PostgreSQL plugin not installed (Debian package orthanc-postgresql)")
        self.root = os.path.join(tmp, "orthanc")
        self.config_dir = os.path.join(self.root, "config")
        self.log = os.path.join(self.root, "orthanc.log")
        self.port = None
        self.proc = None

    @property
    def auth(self):
        return (self.env["ORTHANC_USERNAME"], self.env["ORTHANC_PASSWORD"])

    @property
    def url(self):
        return "http://127.0.0.1:%d" % self.port

    def start(self, timeout=60):
        os.makedirs(self.config_dir)
        shutil.copyfile(self.config_source, os.path.join(self.config_dir, "orthanc.json"))
        for _attempt in range(3):
            self.port = free_port()
            local = {
                "StorageDirectory": os.path.join(self.root, "db"),
                "HttpPort": self.port,
                "Plugins": self.plugins,
            }
            with open(os.path.join(self.config_dir, "local.json"), "w") as f:
                json.dump(local, f, indent=2)
            env = dict(os.environ)
            env.update(self.env)
            env["TCP_NODELAY"] = "1"
            with open(self.log, "ab") as logf:
                self.proc = subprocess.Popen(
                    [self.binary, "--verbose", self.config_dir],
                    stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT,
                    env=env, cwd=self.root)
            try:
                wait_until(self.is_ready, timeout, "Orthanc on port %d" % self.port,
                           proc=self.proc, log=self.log)
                return self
            except StackError:
                tail = log_tail(self.log, 40)
                if self.proc.poll() is not None and ("bind" in tail.lower() or "port" in tail.lower()
                                                     and "in use" in tail.lower()):
                    continue
                raise
        raise StackError("Orthanc: no free port after 3 attempts")

    def is_ready(self):
        try:
            status, _, _ = http("GET", self.url + "/system", auth=self.auth, timeout=2)
        except OSError:
            return False
        return status == 200

    def stop(self):
        stop_process(self.proc, signal.SIGTERM, timeout=30)


# ---------------------------------------------------------------------------
# nginx with docker/nginx-orthanc.conf
# ---------------------------------------------------------------------------

class Nginx:
    """nginx run in the foreground from a temporary main configuration that
    defines `upstream orthanc` (pointing at the test Orthanc) and includes
    docker/nginx-orthanc.conf unmodified, listening on 127.0.0.1:<port>."""

    def __init__(self, tmp, upstream_port, include=None):
        self.binary = find_program("nginx")
        if not self.binary:
            raise StackError("nginx not installed (Debian package %s)" % PACKAGES["nginx"])
        self.root = os.path.join(tmp, "nginx")
        self.upstream_port = upstream_port
        self.include = include or os.path.join(DOCKER_DIR, "nginx-orthanc.conf")
        self.conf = os.path.join(self.root, "nginx.conf")
        self.log = os.path.join(self.root, "error.log")
        self.port = None
        self.proc = None

    @property
    def url(self):
        return "http://127.0.0.1:%d" % self.port

    def main_config(self, port):
        r = self.root
        return "\n".join([
            "daemon off;",
            "worker_processes 1;",
            "pid %s/nginx.pid;" % r,
            "error_log %s/error.log info;" % r,
            "events { worker_connections 256; }",
            "http {",
            "    access_log %s/access.log;" % r,
            "    client_body_temp_path %s/tmp/body;" % r,
            "    proxy_temp_path %s/tmp/proxy;" % r,
            "    fastcgi_temp_path %s/tmp/fastcgi;" % r,
            "    uwsgi_temp_path %s/tmp/uwsgi;" % r,
            "    scgi_temp_path %s/tmp/scgi;" % r,
            "    upstream orthanc { server 127.0.0.1:%d; }" % self.upstream_port,
            "    server {",
            "        listen 127.0.0.1:%d;" % port,
            "        include %s;" % self.include,
            "    }",
            "}",
            ""])

    def check_config(self, text, name="check.conf"):
        """`nginx -t` on a main configuration text; (ok, output)."""
        os.makedirs(os.path.join(self.root, "tmp"), exist_ok=True)
        path = os.path.join(self.root, name)
        with open(path, "w") as f:
            f.write(text)
        r = subprocess.run([self.binary, "-t", "-p", self.root + "/", "-e",
                            os.path.join(self.root, "check-error.log"), "-c", path],
                           capture_output=True, text=True)
        return r.returncode == 0, (r.stdout + r.stderr).strip()

    def start(self, timeout=30):
        os.makedirs(os.path.join(self.root, "tmp"), exist_ok=True)
        # Workers may run as another user (www-data when we are root).
        os.chmod(self.root, 0o755)
        for _attempt in range(3):
            self.port = free_port()
            with open(self.conf, "w") as f:
                f.write(self.main_config(self.port))
            with open(os.path.join(self.root, "stderr.log"), "ab") as logf:
                self.proc = subprocess.Popen(
                    [self.binary, "-p", self.root + "/", "-e", self.log, "-c", self.conf],
                    stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT)
            try:
                wait_until(self.is_listening, timeout, "nginx on port %d" % self.port,
                           proc=self.proc, log=self.log)
                return self
            except StackError:
                if self.proc.poll() is not None and "Address already in use" in log_tail(self.log, 40):
                    continue
                raise
        raise StackError("nginx: no free port after 3 attempts")

    def is_listening(self):
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                return True
        except OSError:
            return False

    def stop(self):
        # SIGQUIT is nginx's graceful shutdown.
        stop_process(self.proc, signal.SIGQUIT)


# ---------------------------------------------------------------------------
# The whole stack, configured from docker-compose.yml + env_example
# ---------------------------------------------------------------------------

def compose_service_environment(service, dotenv):
    """The environment docker-compose.yml gives `service`, with `dotenv` as
    the .env file.  Needs PyYAML (Debian python3-yaml)."""
    import yaml
    with open(os.path.join(SOURCE_DIR, "docker-compose.yml"), encoding="utf-8") as f:
        doc = yaml.safe_load(f)
    return interpolate_tree(service_environment(doc["services"][service]), dotenv)


class Stack:
    """index-db, orthanc and nginx of docker-compose.yml, natively.

    The orthanc environment is the compose file's, interpolated with
    env_example plus `overrides` (what a user's .env would change); only the
    compose-network address of the database (POSTGRES_HOST/PORT) is replaced
    by the local server's."""

    def __init__(self, tmp, overrides=None):
        self.tmp = tmp
        dotenv, _ = read_env_file(os.path.join(SOURCE_DIR, "env_example"))
        dotenv.update(overrides or {})
        self.dotenv = dotenv
        self.env = compose_service_environment("orthanc", dotenv)
        self.postgres = self.orthanc = self.nginx = None

    def start_postgres(self):
        e = self.env
        self.postgres = Postgres(self.tmp, e["POSTGRES_USER"], e["POSTGRES_PASSWORD"],
                                 e["POSTGRES_DB"]).start()
        self.env.update(POSTGRES_HOST="127.0.0.1", POSTGRES_PORT=str(self.postgres.port))
        return self.postgres

    def start_orthanc(self):
        self.orthanc = Orthanc(self.tmp, self.env).start()
        return self.orthanc

    def start_nginx(self):
        self.nginx = Nginx(self.tmp, self.orthanc.port).start()
        return self.nginx

    def stop(self):
        for part in (self.nginx, self.orthanc, self.postgres):
            if part is not None:
                try:
                    part.stop()
                except Exception:  # keep stopping the others
                    pass


_CLIENT_CLASS = []


def orthanc_client(base_url, auth, name="STACK"):
    """tests/lib/harness.py's Orthanc REST helpers (get, post, changes,
    wait_stable, instance_file, ...) aimed at an Orthanc already running at
    base_url (for instance nginx's http://127.0.0.1:P/orthanc).  It starts
    and stops nothing."""
    if not _CLIENT_CLASS:
        import harness

        class Client(harness.Orthanc):
            @property
            def url(self):
                return self._base_url

            def start(self):
                raise StackError("orthanc_client() does not start servers")

            def stop(self):
                pass

            def terminate(self):
                pass

            def alive(self):
                return True
        _CLIENT_CLASS.append(Client)
    client = _CLIENT_CLASS[0](os.path.join(SOURCE_DIR, "unused"), name, auth=auth)
    client._base_url = base_url.rstrip("/")
    return client
