#!/usr/bin/env python3
"""test_compose.py - the deployment files read the way Docker would read them.

No Docker engine runs here, so this test parses what `docker compose up`
and `docker build` would parse and checks that the pieces fit:
  * docker-compose.yml: the four services, their healthchecks, depends_on
    with condition service_healthy, named volumes declared, ports and paths
    from .env; every ${VAR} documented in env_example, and env_example's
    values equal the defaults written in the compose file;
  * an .env written for the original Python autorthanc still lands where it
    did (its variable names are honoured);
  * docker/orthanc.json, after the substitution Orthanc performs, is JSON
    with the PostgreSQL index, StableAge and authentication from the
    environment the compose file gives the orthanc service;
  * nginx files are mounted where docker/nginx.conf includes them, and the
    location block streams (no buffering, no body size limit);
  * docker/Dockerfile: multi-stage, non-root, HEALTHCHECK, ENTRYPOINT, its
    shell steps parse, its packages exist in Debian, and the runtime stage
    installs the library of every NEEDED entry of the built binary;
  * docker/autorthanc.service passes `systemd-analyze verify` cleanly.
Prints "ok - name" / "not ok - name: why" / "skip - name: why", then
"N passed, N failed, N skipped"; exits 1 on any failure.
"""

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

try:
    import yaml
except ImportError:  # a python3 without PyYAML: Debian's has python3-yaml
    if os.path.realpath(sys.executable) != os.path.realpath("/usr/bin/python3") \
            and os.path.exists("/usr/bin/python3"):
        os.execv("/usr/bin/python3", ["/usr/bin/python3"] + sys.argv)
    print("not ok - prerequisites: PyYAML missing (Debian package python3-yaml)")
    print("0 passed, 1 failed")
    sys.exit(1)

SOURCE_DIR = os.environ.get("AR_SOURCE_DIR") or os.path.abspath(
    os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
sys.path.insert(0, os.path.join(SOURCE_DIR, "tests", "lib"))
import stack  # noqa: E402

COMPOSE = os.path.join(SOURCE_DIR, "docker-compose.yml")
ENV_EXAMPLE = os.path.join(SOURCE_DIR, "env_example")
DOCKER = os.path.join(SOURCE_DIR, "docker")
SERVICES = ("nginx", "orthanc", "index-db", "autorthanc")
# Who must wait for whom (all with condition: service_healthy).
DEPENDS = {"nginx": ["orthanc"], "orthanc": ["index-db"], "autorthanc": ["orthanc"]}
RUNTIME_PACKAGES = {"liblua5.4-0", "lua-cjson", "libcurl4", "libyaml-0-2", "libssl3",
                    "libsqlite3-0", "libreadline8", "libjansson4", "libyajl2", "ca-certificates"}
BUILD_PACKAGES = {"cmake", "liblua5.4-dev", "lua-cjson-dev", "libcurl4-openssl-dev",
                  "libyaml-dev", "libsqlite3-dev", "libjansson-dev"}
# Variable names of the original Python autorthanc's env_example that the
# new files must keep honouring, with made-up values.
ORIGINAL_ENV = {
    "ORTAHNC_DB_STORAGE_PATH": "/srv/original/dicom",
    "ORTHANC_STABLE_AGE": "300",
    "ORTHANC_AET_NAME": "ORIGINALAET",
    "ORTHANC_AET_PORT": "4106",
    "ORTHANC_AUTOMATION_JSON_SCRIPTS_PATH": "/srv/original/scripts",
    "ORTHANC_AUTOMATION_STORAGE_PATH": "/srv/original/output",
}


class Skip(Exception):
    pass


# ---------------------------------------------------------------------------
# loading

def load_compose():
    with open(COMPOSE, encoding="utf-8") as f:
        return yaml.safe_load(f)


def all_strings(node):
    if isinstance(node, str):
        yield node
    elif isinstance(node, list):
        for x in node:
            yield from all_strings(x)
    elif isinstance(node, dict):
        for k, v in node.items():
            yield from all_strings(k)
            yield from all_strings(v)


def compose_variables(doc):
    names = set()
    for s in all_strings(doc):
        names.update(stack.referenced_variables(s))
    return names


def defaults_in(s, out):
    """Collect name -> [default, ...] for every ${NAME:-default} in s."""
    i = 0
    while True:
        i = s.find("${", i)
        if i < 0:
            return
        end = stack._find_close(s, i + 2)
        body = s[i + 2:end]
        m = re.match(r"([A-Za-z_][A-Za-z0-9_]*):-(.*)$", body, re.S)
        if m:
            out.setdefault(m.group(1), []).append(m.group(2))
            defaults_in(m.group(2), out)
        i = end + 1


def volume_source_target(entry):
    """(source, target) of a short- or long-syntax volume entry."""
    if isinstance(entry, dict):
        return entry.get("source"), entry.get("target")
    parts = entry.split(":")
    if len(parts) == 1:
        return None, parts[0]
    return parts[0], parts[1]


def is_path(source):
    return source.startswith(("/", "./", "../", "~")) or source in (".", "..")


def parse_dockerfile(path):
    """[(instruction, arguments)] with continuation lines joined."""
    out, current = [], ""
    with open(path, encoding="utf-8") as f:
        for raw in f:
            line = raw.rstrip("\n")
            if not current and (not line.strip() or line.lstrip().startswith("#")):
                continue
            if current and line.lstrip().startswith("#"):
                continue  # comment inside a continued instruction
            if line.endswith("\\"):
                current += line[:-1] + " "
                continue
            current += line
            word, _, rest = current.strip().partition(" ")
            out.append((word.upper(), rest.strip()))
            current = ""
    return out


def stages(instructions):
    """Split into stages: [{'from': args, 'name': alias, 'body': [(ins, args)]}]."""
    result = []
    for ins, args in instructions:
        if ins == "FROM":
            m = re.match(r"(\S+)(?:\s+AS\s+(\S+))?", args, re.I)
            result.append({"from": m.group(1), "name": m.group(2), "body": []})
        elif result:
            result[-1]["body"].append((ins, args))
    return result


def apt_packages(run_args):
    m = re.search(r"apt-get install(.*?)(?:&&|$)", run_args)
    if not m:
        return set()
    return {w for w in m.group(1).split() if not w.startswith("-")}


# ---------------------------------------------------------------------------
# checks

def check_services(doc):
    services = doc.get("services") or {}
    missing = [s for s in SERVICES if s not in services]
    assert not missing, "services missing: %s" % missing
    for name in SERVICES:
        hc = services[name].get("healthcheck")
        assert hc and not hc.get("disable"), "%s has no healthcheck" % name
        test = hc.get("test")
        assert test, "%s healthcheck has no test" % name
        if isinstance(test, list):
            assert test[0] in ("CMD", "CMD-SHELL") and len(test) > 1, \
                "%s healthcheck test %r" % (name, test)


def check_depends_on(doc):
    services = doc["services"]
    for name, wanted in DEPENDS.items():
        dep = services[name].get("depends_on")
        assert isinstance(dep, dict), "%s: depends_on must be a mapping with conditions" % name
        for target in wanted:
            assert target in dep, "%s does not depend on %s" % (name, target)
    for name, svc in services.items():
        dep = svc.get("depends_on") or {}
        assert isinstance(dep, dict), "%s: depends_on without condition" % name
        for target, spec in dep.items():
            cond = (spec or {}).get("condition")
            assert cond == "service_healthy", \
                "%s -> %s: condition %r, want service_healthy" % (name, target, cond)
            assert services[target].get("healthcheck"), \
                "%s waits for %s, which has no healthcheck" % (name, target)


def check_volumes(doc, env):
    """With env as the .env, every non-path volume source is a declared
    named volume, and every repository file mounted exists."""
    declared = set((doc.get("volumes") or {}).keys())
    for name, svc in doc["services"].items():
        for entry in svc.get("volumes") or []:
            src, target = volume_source_target(stack.interpolate_tree(entry, env))
            assert target and target.startswith("/"), "%s: bad volume %r" % (name, entry)
            if not src:
                raise AssertionError("%s: anonymous volume %r" % (name, entry))
            if is_path(src):
                if src.startswith("./docker/"):
                    assert os.path.isfile(os.path.join(SOURCE_DIR, src)), \
                        "%s mounts %s, which does not exist" % (name, src)
                continue
            assert src in declared, \
                "%s uses volume %r, not declared under top-level volumes" % (name, src)


def test_compose_services_and_healthchecks():
    check_services(load_compose())


def test_compose_depends_on_healthy():
    check_depends_on(load_compose())


def test_every_variable_documented():
    doc = load_compose()
    values, documented = stack.read_env_file(ENV_EXAMPLE)
    used = compose_variables(doc)
    undocumented = sorted(v for v in used if v not in documented)
    assert not undocumented, "used in docker-compose.yml but not in env_example: %s" % undocumented
    uncommented = sorted(k for k, text in documented.items() if not text)
    assert not uncommented, "env_example variables without an explaining comment: %s" % uncommented
    unused = sorted(k for k in documented if k not in used)
    assert not unused, "documented in env_example but used nowhere: %s" % unused


def test_env_example_matches_compose_defaults():
    doc = load_compose()
    values, _ = stack.read_env_file(ENV_EXAMPLE)
    defaults = {}
    for s in all_strings(doc):
        defaults_in(s, defaults)
    problems = []
    for name, value in values.items():
        for d in defaults.get(name, []):
            if d != value:
                problems.append("%s: env_example says %r, compose default %r" % (name, value, d))
    assert not problems, "; ".join(problems)
    # Every variable has a default: an older .env lacking new names works.
    no_default = sorted(v for v in compose_variables(doc) if v not in defaults)
    assert not no_default, "variables without a default in docker-compose.yml: %s" % no_default


def test_named_volumes_declared():
    doc = load_compose()
    values, _ = stack.read_env_file(ENV_EXAMPLE)
    check_volumes(doc, {})          # no .env at all: defaults only
    check_volumes(doc, values)      # cp env_example .env
    check_volumes(doc, ORIGINAL_ENV)
    assert doc.get("volumes"), "no named volumes declared"


def test_ports_paths_and_ids_from_env():
    doc = load_compose()
    for name, svc in doc["services"].items():
        for p in svc.get("ports") or []:
            p = str(p)
            host = p.rsplit(":", 1)[0]
            assert "${" in host, "%s publishes a fixed host port: %r" % (name, p)
        for entry in svc.get("volumes") or []:
            src, _ = volume_source_target(entry)
            if src and not src.startswith("./docker/"):
                assert "${" in src, "%s: volume source %r not from .env" % (name, src)
    ar = doc["services"]["autorthanc"]
    args = ar["build"]["args"]
    assert "USERID" in args.get("AR_UID", "") and "GROUPID" in args.get("AR_GID", ""), \
        "autorthanc build args must take AR_UID/AR_GID from USERID/GROUPID: %r" % args
    assert "USERID" in ar.get("user", "") and "GROUPID" in ar.get("user", ""), \
        "autorthanc user: must be USERID:GROUPID"
    assert os.path.isfile(os.path.join(SOURCE_DIR, ar["build"].get("context", "."),
                                       ar["build"]["dockerfile"])), "build.dockerfile missing"


def test_original_env_names_still_work():
    doc = stack.interpolate_tree(load_compose(), ORIGINAL_ENV)
    svc = doc["services"]
    mounts = {name: dict(volume_source_target(v)[::-1] for v in s.get("volumes") or [])
              for name, s in svc.items()}
    for service, target, var in (("orthanc", "/var/lib/orthanc/db", "ORTAHNC_DB_STORAGE_PATH"),
                                 ("autorthanc", "/rules", "ORTHANC_AUTOMATION_JSON_SCRIPTS_PATH"),
                                 ("autorthanc", "/storage", "ORTHANC_AUTOMATION_STORAGE_PATH")):
        got = mounts[service].get(target)
        assert got == ORIGINAL_ENV[var], "%s:%s mounts %r, want the original's %s (%r)" % (
            service, target, got, var, ORIGINAL_ENV[var])
    env = stack.service_environment(svc["orthanc"])
    assert env["ORTHANC_AET_NAME"] == "ORIGINALAET", env
    assert env["ORTHANC_STABLE_AGE"] == "300", env
    assert "4106:4106" in [str(p) for p in svc["orthanc"]["ports"]], svc["orthanc"]["ports"]
    # The correctly spelled name wins over the original's misspelling.
    both = dict(ORIGINAL_ENV, ORTHANC_DB_STORAGE_PATH="/srv/new/dicom")
    doc2 = stack.interpolate_tree(load_compose(), both)
    src = [volume_source_target(v)[0] for v in doc2["services"]["orthanc"]["volumes"]
           if volume_source_target(v)[1] == "/var/lib/orthanc/db"]
    assert src == ["/srv/new/dicom"], src


def orthanc_environment(dotenv):
    doc = load_compose()
    return stack.interpolate_tree(stack.service_environment(doc["services"]["orthanc"]), dotenv)


def test_orthanc_json_with_compose_environment():
    with open(os.path.join(DOCKER, "orthanc.json"), encoding="utf-8") as f:
        text = f.read()
    values, _ = stack.read_env_file(ENV_EXAMPLE)
    env = orthanc_environment(values)
    needed = set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", text))
    assert needed, "docker/orthanc.json uses no environment variable"
    missing = sorted(needed - set(env))
    assert not missing, "orthanc.json needs %s, not set in the orthanc service" % missing
    leftovers = re.findall(r"\$\{[^}]*[^A-Za-z0-9_}][^}]*\}", text)
    assert not leftovers, "forms Orthanc does not substitute: %s" % leftovers
    cfg = json.loads(stack.strip_json_comments(stack.substitute_like_orthanc(text, env)))
    pg = cfg.get("PostgreSQL") or {}
    assert pg.get("EnableIndex") is True, "PostgreSQL index must be on"
    assert pg.get("EnableStorage") is False, "DICOM files stay on disk (EnableStorage false)"
    assert pg.get("Host") == "index-db" and pg.get("Port") == 5432, pg
    assert pg.get("Database") == values["POSTGRES_DB"] and pg.get("Username") == values["POSTGRES_USER"]
    assert cfg.get("StableAge") == int(values["ORTHANC_STABLE_AGE"]), \
        "StableAge is %r, want the number %s (Orthanc rejects a string)" % (
            cfg.get("StableAge"), values["ORTHANC_STABLE_AGE"])
    assert cfg.get("DicomAet") == values["ORTHANC_AET_NAME"]
    assert cfg.get("DicomPort") == int(values["ORTHANC_AET_PORT"])
    assert cfg.get("AuthenticationEnabled") is True
    assert cfg.get("RegisteredUsers") == {values["ORTHANC_USERNAME"]: values["ORTHANC_PASSWORD"]}
    # Left to the image (and to the native test's second file).
    for key in ("StorageDirectory", "HttpPort", "Plugins"):
        assert key not in cfg, "%s must not be in docker/orthanc.json" % key
    # Different values really flow through.
    env2 = orthanc_environment(dict(values, ORTHANC_STABLE_AGE="7", ORTHANC_AET_NAME="OTHER"))
    cfg2 = json.loads(stack.strip_json_comments(stack.substitute_like_orthanc(text, env2)))
    assert cfg2["StableAge"] == 7 and cfg2["DicomAet"] == "OTHER"
    # The image turns ORTHANC__* and some legacy names into settings; ours
    # must not collide with them.
    legacy = {"NAME", "DICOM_AET", "DICOM_PORT", "STABLE_AGE", "HTTP_PORT", "PG_PASSWORD",
              "PG_USER", "PG_HOST", "PG_PORT", "PG_DB", "PLUGINS", "STORAGE_DIR"}
    clash = sorted(k for k in env if k in legacy or k.startswith("ORTHANC__"))
    assert not clash, "orthanc environment names the image would reinterpret: %s" % clash
    mounts = [volume_source_target(v) for v in load_compose()["services"]["orthanc"]["volumes"]]
    assert ("./docker/orthanc.json", "/etc/orthanc/orthanc.json") in mounts, mounts


def test_nginx_files_fit_together():
    doc = load_compose()
    mounts = dict(volume_source_target(v) for v in doc["services"]["nginx"]["volumes"])
    with open(os.path.join(DOCKER, "nginx.conf"), encoding="utf-8") as f:
        main = re.sub(r"#[^\n]*", "", f.read())
    with open(os.path.join(DOCKER, "nginx-orthanc.conf"), encoding="utf-8") as f:
        loc = re.sub(r"#[^\n]*", "", f.read())
    assert mounts.get("./docker/nginx.conf") == "/etc/nginx/conf.d/default.conf", mounts
    includes = re.findall(r"^\s*include\s+([^;]+);", main, re.M)
    target = mounts.get("./docker/nginx-orthanc.conf")
    assert target and includes == [target], \
        "nginx.conf includes %s but compose mounts nginx-orthanc.conf at %s" % (includes, target)
    assert re.search(r"upstream\s+orthanc\s*\{[^}]*server\s+orthanc:8042\s*;", main), \
        "nginx.conf must define upstream orthanc -> orthanc:8042"
    assert "upstream" not in loc, "the include must not define the upstream (tests replace it)"
    dep = doc["services"]["nginx"]["depends_on"]["orthanc"]
    assert dep.get("restart") is True, \
        "nginx resolves the upstream at start: depends_on orthanc needs restart: true"

    def directive(name):
        return re.findall(r"^\s*%s\s+([^;]+);" % re.escape(name), loc, re.M)
    assert re.search(r"location\s+/orthanc/\s*\{", loc), "no location /orthanc/"
    assert directive("proxy_pass") == ["http://orthanc/"], directive("proxy_pass")
    for name, value in (("client_max_body_size", "0"), ("proxy_request_buffering", "off"),
                        ("proxy_buffering", "off"), ("proxy_http_version", "1.1")):
        assert directive(name) == [value], "%s is %r, want %s" % (name, directive(name), value)
    for name in ("proxy_read_timeout", "proxy_send_timeout"):
        vals = directive(name)
        assert vals and int(re.match(r"(\d+)", vals[0]).group(1)) >= 600, \
            "%s too short: %r" % (name, vals)


def test_dockerfile_shape():
    path = os.path.join(DOCKER, "Dockerfile")
    ins = parse_dockerfile(path)
    st = stages(ins)
    assert len(st) >= 2, "not multi-stage"
    args = {}
    for i, a in ins:
        if i == "ARG" and "=" in a:
            k, _, v = a.partition("=")
            args[k] = v
    release = args.get("DEBIAN_RELEASE", "")

    def base(s):
        return s["from"].replace("${DEBIAN_RELEASE}", release)
    build, final = st[0], st[-1]
    assert base(build) == "debian:bookworm" and build["name"], base(build)
    assert base(final) == "debian:bookworm-slim", base(final)
    body = final["body"]
    kinds = [i for i, _ in body]
    assert any(i == "COPY" and a.startswith("--from=%s " % build["name"]) for i, a in body), \
        "final stage does not copy the binary from the build stage"
    users = [a for i, a in body if i == "USER"]
    assert users, "final stage has no USER"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0", ""), "runs as root: USER %s" % users[-1]
    final_args = [a.partition("=")[0] for i, a in body if i == "ARG"]
    assert "AR_UID" in final_args and "AR_GID" in final_args, "AR_UID/AR_GID build args missing"
    hc = [a for i, a in body if i == "HEALTHCHECK"]
    assert hc and re.search(r'CMD\s+\["autorthanc",\s*"status"\]', hc[-1]), hc
    ep = [a for i, a in body if i == "ENTRYPOINT"]
    cmd = [a for i, a in body if i == "CMD"]
    assert ep and json.loads(ep[-1]) == ["autorthanc"], ep
    assert cmd and json.loads(cmd[-1]) == ["run"], cmd
    assert kinds.index("USER") < kinds.index("ENTRYPOINT")
    runtime = set().union(*[apt_packages(a) for i, a in body if i == "RUN"])
    assert runtime == RUNTIME_PACKAGES, "runtime packages %s, want %s" % (
        sorted(runtime), sorted(RUNTIME_PACKAGES))
    buildpk = set().union(*[apt_packages(a) for i, a in build["body"] if i == "RUN"])
    assert BUILD_PACKAGES <= buildpk, "build stage lacks %s" % sorted(BUILD_PACKAGES - buildpk)
    # The build context is limited by docker/Dockerfile.dockerignore; each
    # source the build stage copies must be let through, and exist.
    with open(path + ".dockerignore", encoding="utf-8") as f:
        ignore = [l.strip() for l in f if l.strip() and not l.startswith("#")]
    assert ignore and ignore[0] == "*", "Dockerfile.dockerignore should start with *"
    allowed = {l[1:].rstrip("/") for l in ignore if l.startswith("!")}
    for i, a in build["body"]:
        if i == "COPY" and not a.startswith("--"):
            for src in a.split()[:-1]:
                src = src.rstrip("/")
                assert src in allowed, "COPY %s is excluded by Dockerfile.dockerignore" % src
                assert os.path.exists(os.path.join(SOURCE_DIR, src)), "COPY %s: missing" % src


def test_dockerfile_shell_steps_parse():
    sh = shutil.which("sh")
    if not sh:
        raise Skip("no sh")
    for i, a in parse_dockerfile(os.path.join(DOCKER, "Dockerfile")):
        if i == "RUN":
            r = subprocess.run([sh, "-n", "-c", a], capture_output=True, text=True)
            assert r.returncode == 0, "RUN does not parse: %s: %s" % (a[:80], r.stderr.strip())


def test_dockerfile_packages_exist_in_debian():
    lists = [p for p in os.listdir("/var/lib/apt/lists") if "_Packages" in p] \
        if os.path.isdir("/var/lib/apt/lists") else []
    if not lists or not shutil.which("apt-cache"):
        raise Skip("no apt package lists here (run apt-get update)")
    ins = parse_dockerfile(os.path.join(DOCKER, "Dockerfile"))
    wanted = set().union(*[apt_packages(a) for i, a in ins if i == "RUN"])
    out = subprocess.run(["apt-cache", "policy"] + sorted(wanted),
                         capture_output=True, text=True).stdout
    candidates = dict(re.findall(r"^(\S+):\n(?:\s+Installed:.*\n)?\s+Candidate:\s*(\S+)",
                                 out, re.M))
    missing = [p for p in sorted(wanted) if candidates.get(p, "(none)") == "(none)"]
    assert not missing, "not in this machine's Debian release: %s" % missing


def test_runtime_packages_cover_binary():
    exe = os.environ.get("AR_BINARY") or ""
    if not (exe and os.access(exe, os.X_OK)):
        raise Skip("autorthanc binary not built (AR_BINARY=%r)" % exe)
    if not (shutil.which("objdump") and shutil.which("dpkg")):
        raise Skip("objdump or dpkg missing")
    dump = subprocess.run(["objdump", "-p", exe], capture_output=True, text=True).stdout
    needed = re.findall(r"^\s*NEEDED\s+(\S+)", dump, re.M)
    assert needed, "no NEEDED entries in %s" % exe
    ldd = subprocess.run(["ldd", exe], capture_output=True, text=True).stdout
    where = dict(re.findall(r"^\s*(\S+)\s+=>\s+(\S+)", ldd, re.M))
    problems = []
    for soname in needed:
        if re.match(r"lib(a|ub|t|l)san\.so", soname):
            continue  # a sanitizer build of the tests: the image is built without them
        path = where.get(soname)
        if not path:
            problems.append("%s not found by ldd" % soname)
            continue
        owner = None
        for cand in {path, os.path.realpath(path)}:
            for variant in (cand, cand.replace("/usr/lib/", "/lib/", 1),
                            cand.replace("/lib/", "/usr/lib/", 1)):
                r = subprocess.run(["dpkg", "-S", variant], capture_output=True, text=True)
                if r.returncode == 0:
                    owner = r.stdout.split(":")[0]
                    break
            if owner:
                break
        if owner is None:
            problems.append("%s (%s): no Debian package owns it" % (soname, path))
        elif owner not in RUNTIME_PACKAGES | {"libc6", "libgcc-s1"}:
            problems.append("%s comes from %s, not installed by the runtime stage" % (soname, owner))
    assert not problems, "; ".join(problems)


def test_systemd_unit():
    path = os.path.join(DOCKER, "autorthanc.service")
    with open(path, encoding="utf-8") as f:
        text = f.read()
    keys = {}
    for line in text.splitlines():
        m = re.match(r"^([A-Za-z]+)=(.*)$", line)
        if m:
            keys.setdefault(m.group(1), []).append(m.group(2))
    for k, v in (("EnvironmentFile", "/etc/autorthanc/env"), ("Restart", "on-failure"),
                 ("KillSignal", "SIGTERM"), ("TimeoutStopSec", "10"),
                 ("NoNewPrivileges", "yes"), ("ProtectSystem", "strict"),
                 ("ExecStart", "/usr/local/bin/autorthanc run")):
        assert v in keys.get(k, []), "%s=%s missing" % (k, v)
    assert keys.get("User") and keys["User"][-1] not in ("root", "0"), "must not run as root"
    tool = shutil.which("systemd-analyze")
    if not tool:
        raise Skip("systemd-analyze not installed; static checks passed")
    with tempfile.TemporaryDirectory(prefix="ar-unit-") as tmp:
        # verify insists ExecStart exists: point it at the built binary or true.
        exe = os.environ.get("AR_BINARY") or ""
        if not os.access(exe, os.X_OK):
            exe = shutil.which("true")
        unit = os.path.join(tmp, "autorthanc.service")
        with open(unit, "w", encoding="utf-8") as f:
            f.write(text.replace("/usr/local/bin/autorthanc", exe))
        r = subprocess.run([tool, "verify", unit], capture_output=True, text=True,
                           env=dict(os.environ, SYSTEMD_LOG_LEVEL="notice"))
        noise = [l for l in (r.stdout + r.stderr).splitlines() if l.strip()]
        assert r.returncode == 0 and not noise, "systemd-analyze verify: rc %d: %s" % (
            r.returncode, "; ".join(noise[:5]))


TESTS = [
    test_compose_services_and_healthchecks,
    test_compose_depends_on_healthy,
    test_every_variable_documented,
    test_env_example_matches_compose_defaults,
    test_named_volumes_declared,
    test_ports_paths_and_ids_from_env,
    test_original_env_names_still_work,
    test_orthanc_json_with_compose_environment,
    test_nginx_files_fit_together,
    test_dockerfile_shape,
    test_dockerfile_shell_steps_parse,
    test_dockerfile_packages_exist_in_debian,
    test_runtime_packages_cover_binary,
    test_systemd_unit,
]


def main():
    passed = failed = skipped = 0
    for fn in TESTS:
        name = fn.__name__[len("test_"):]
        try:
            fn()
        except Skip as e:
            skipped += 1
            print("skip - %s: %s" % (name, e), flush=True)
        except Exception as e:  # AssertionError, StackError, yaml errors...
            failed += 1
            msg = str(e).strip() or type(e).__name__
            print("not ok - %s: %s" % (name, msg.replace("\n", "\n  ")), flush=True)
        else:
            passed += 1
            print("ok - %s" % name, flush=True)
    print("%d passed, %d failed, %d skipped" % (passed, failed, skipped), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
