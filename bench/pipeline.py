#!/usr/bin/env python3
"""bench/pipeline.py - the pipeline's speed: backlog throughput and latency.

  backlog   N one-instance studies, already stable, then `run --once`:
            studies/s with fsync off and on, next to plain curl fetching the
            same N files with the same concurrency (the reference, measured in
            the same run): ratio = autorthanc's studies/s / curl's files/s.
  plan      a big study from a fixture (20,000 and 100,000 instances) with a
            FileNaming template: seconds and peak RSS per instance, at the
            default rule_memory_mb (64) and with the cap out of the way.
  big study a 20,000-instance study stored in Orthanc, exported end to end.
  latency   M small studies arriving one after another while the daemon runs:
            seconds from the moment their StableStudy change is in Orthanc's
            log to the moment their export folder exists, p50 and p99, first
            with nothing else going on (the reference), then while a big
            export runs and a FORWARD target that never answers is queued.
            Target: p99 <= poll interval + 1 s under load.

Times are printed, never asserted.  Orthanc runs on loopback ports chosen at
run time; every process started here ends with this script.

    python3 bench/pipeline.py --binary build/autorthanc [--quick]
        [--backlog 1000] [--latency 50] [--big-mb 1024] [--poll-interval 1]
"""

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

here = os.path.dirname(os.path.abspath(__file__))
repo = os.path.dirname(here)
sys.path.insert(0, os.path.join(repo, "tests", "lib"))
sys.path.insert(0, here)
import harness as h  # noqa: E402
import faults  # noqa: E402  (FaultProxy: the big export's slow link)
import bench as B  # noqa: E402  (make_dicom: CT images of any size)


def log(msg):
    print(f"pipeline: {msg}", file=sys.stderr, flush=True)


def upload_study(o, pid, n, rows=16, cols=16, desc="PIPEBENCH"):
    study_uid, series_uid = h.new_uid(), h.new_uid()
    pixels = os.urandom(rows * cols * 2)
    for k in range(n):
        tags = {"SOPInstanceUID": h.new_uid(), "StudyDate": "20241201", "SeriesDate": "20241201",
                "AccessionNumber": pid, "StudyDescription": desc, "SeriesDescription": "S",
                "PatientName": "BENCH^PIPE", "PatientID": pid, "StudyInstanceUID": study_uid,
                "SeriesInstanceUID": series_uid, "StudyID": "1", "SeriesNumber": "1",
                "InstanceNumber": str(k + 1)}
        r = o.post("/instances", body=B.make_dicom(tags, rows, cols, pixels),
                   content_type="application/dicom")
    return r["ParentStudy"]


def stable_studies(o):
    return {c["ID"] for c in o.changes(0) if c["ChangeType"] == "StableStudy"}


def pctl(values, p):
    v = sorted(values)
    if not v:
        return float("nan")
    k = min(len(v) - 1, max(0, int(round(p / 100 * (len(v) - 1)))))
    return v[k]


def rule(ws, name, action="DOWNLOAD", destination=None):
    ws.rule(name, action=action, destination=destination,
            tags=[("StudyDescription", "Study", "pipebench")])


def env_for(ws, **kw):
    e = ws.env(AUTORTHANC_LOG_FORMAT="json")
    e.update({k: str(v) for k, v in kw.items()})
    return e


def backlog(t, binary, n, conns):
    o = t.orthanc("BACKLOG", dicom=False)
    log(f"backlog: storing {n} one-instance studies")
    ids = [upload_study(o, f"BL{k:05d}", 1) for k in range(n)]
    h.wait_for(lambda: len(stable_studies(o) & set(ids)) == n, 120 + n / 5, "stable backlog",
               interval=0.5)
    files = [i["ID"] for s in ids for i in o.get(f"/studies/{s}/instances")]
    # reference: one curl, `conns` transfers at once, every file to disk
    ref_dir = os.path.join(t.tmp, "curl")
    os.makedirs(ref_dir)
    cfg = os.path.join(t.tmp, "curl.cfg")
    with open(cfg, "w") as f:
        for k, i in enumerate(files):
            f.write(f'url = "{o.url}/instances/{i}/file"\noutput = "{ref_dir}/{k}.dcm"\n')
    t0 = time.monotonic()
    subprocess.run(["curl", "-sS", "--no-progress-meter", "--fail", "-Z", "--parallel-max", str(conns), "-K", cfg],
                   check=True)
    ref = n / (time.monotonic() - t0)
    rows = []
    for fsync in ("off", "on"):
        ws = t.workspace(o, name=f"bl-{fsync}")
        rule(ws, "all")
        env = env_for(ws, AUTORTHANC_FSYNC="true" if fsync == "on" else "false",
                      AUTORTHANC_MAX_CONNECTIONS=conns)
        t0 = time.monotonic()
        r = h.run_autorthanc(["run", "--once"], env=env, cwd=ws.root, timeout=1800)
        dt = time.monotonic() - t0
        if r.rc != 0:
            raise SystemExit(f"backlog run failed ({r.rc}):\n{h.tail(r.stderr)}")
        got = len(os.listdir(ws.path("all")))
        if got != n:
            raise SystemExit(f"backlog: {got} of {n} studies exported")
        rows.append((fsync, n / dt))
        shutil.rmtree(ws.storage)
    print(f"\nbacklog: {n} one-instance studies already stable, `run --once`, "
          f"{conns} connections per export")
    print(f"  {'fsync':6} {'studies/s':>10} {'curl files/s':>13} {'ratio':>6}")
    for fsync, rate in rows:
        print(f"  {fsync:6} {rate:10.1f} {ref:13.1f} {rate / ref:6.2f}")
    return rows


class SilentListener:
    """Accepts DICOM associations and never answers (a hung PACS)."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.held = []
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self):
        while True:
            try:
                self.held.append(self.sock.accept()[0])
            except OSError:
                return

    def close(self):
        self.sock.close()
        for c in self.held:
            c.close()


def slow_link(t, o, slow_ids, rate_mb, loaded):
    """The URL autorthanc reaches Orthanc through, with the files of
    slow_ids paced at rate_mb MB/s each (a slow link) and everything else
    passed as it comes.  nginx (`limit_rate`) when installed: it adds
    milliseconds, so the latency is absolute; otherwise the suite's Python
    fault proxy, which by itself adds about a second per study (compare the
    ratio then).  The reference run goes through the same kind of link."""
    global LINK
    try:
        import stack  # noqa: E402  (nginx runner of the deployment tests)
        conf = os.path.join(t.tmp, f"slowlink-{'load' if loaded else 'idle'}.conf")
        with open(conf, "w") as f:
            if slow_ids:
                # every file is paced (per connection): the small studies' files
                # are a few KB, so only the big study's feel the slow link
                f.write("location ~ ^/instances/[^/]+/file$ {\n"
                        "    limit_rate %dm;\n    proxy_pass http://orthanc;\n}\n" % rate_mb)
            f.write("location / {\n    proxy_pass http://orthanc;\n"
                    "    proxy_read_timeout 3600s;\n}\n")
        n = stack.Nginx(os.path.join(t.tmp, "nginx-" + ("load" if loaded else "idle")),
                        int(o.url.rsplit(":", 1)[1]), include=conf).start()
        t.defer(n.stop)
        LINK = "nginx limit_rate"
        return n.url
    except Exception as e:  # no nginx here: the Python proxy
        log(f"latency: nginx unavailable ({e}); pacing with the Python proxy")
        proxy = faults.FaultProxy(o.url).start()
        t.defer(proxy.stop)
        if slow_ids:
            proxy.add(rf"/instances/({'|'.join(slow_ids)})/file", "slow",
                      rate=rate_mb * 1024 * 1024)
        LINK = "Python fault proxy (adds ~1 s per study)"
        return proxy.url


LINK = ""


def latency(t, m, big_mb, poll, loaded, fsync="true", big_rate_mb=6):
    listener = SilentListener()
    t.defer(listener.close)
    o = t.orthanc("LAT" + ("LOAD" if loaded else "IDLE"), dicom=False,
                  modalities={"HUNG": ["HUNG", "127.0.0.1", listener.port]},
                  extra_config={"DicomScuTimeout": 30})
    ws = t.workspace(o, name="lat-" + ("load" if loaded else "idle"))
    rule(ws, "keep")
    if loaded:
        rule(ws, "send", action="FORWARD", destination="HUNG")
        # the big study: 512x512 16-bit CT images, big_mb in all
        per = 512 * 512 * 2
        count = max(1, big_mb * 1024 * 1024 // per)
        log(f"latency: storing a {big_mb} MB study ({count} images)")
        big = upload_study(o, "LBIG", count, rows=512, cols=512)
        h.wait_for(lambda: big in stable_studies(o), 300, "the big study stable", interval=0.5)
    env = env_for(ws, AUTORTHANC_POLL_INTERVAL=poll, AUTORTHANC_STABLE_AGE=2,
                  AUTORTHANC_FSYNC=fsync)
    ids = o.get(f"/studies/{big}/instances") if loaded else []
    env["AUTORTHANC_ORTHANC_URL"] = slow_link(t, o, [i["ID"] for i in ids], big_rate_mb, loaded)
    d = t.daemon(["run"], env=env, cwd=ws.root)
    if loaded:
        h.wait_for(lambda: os.path.isdir(ws.path("keep")) and any(
            p.endswith(".WORKING") for p in os.listdir(ws.path("keep"))), 120,
            "the big export under way", interval=0.01)
    seen_stable, exported = {}, {}
    stop = threading.Event()

    def watch():
        since = 0
        while not stop.is_set():
            for c in o.changes(since):
                since = max(since, c["Seq"])
                if c["ChangeType"] == "StableStudy":
                    seen_stable.setdefault(c["ID"], time.monotonic())
            time.sleep(0.02)

    def folders():
        while not stop.is_set():
            if os.path.isdir(ws.path("keep")):
                for p in os.listdir(ws.path("keep")):
                    if not p.endswith(".WORKING"):
                        exported.setdefault(p, time.monotonic())
            time.sleep(0.005)

    threads = [threading.Thread(target=watch, daemon=True),
               threading.Thread(target=folders, daemon=True)]
    for th in threads:
        th.start()
    smalls = {}
    for k in range(m):
        pid = f"LS{k:03d}"
        smalls[upload_study(o, pid, 1)] = f"{pid}-BENCH-EX1"
        time.sleep(0.3)  # arrivals spaced like a modality's, not a synchronisation
    h.wait_for(lambda: all(f in exported for f in smalls.values()), 120 + m,
               "every small study exported", interval=0.1)
    stop.set()
    still_big = loaded and not os.path.isdir(ws.path("keep", "LBIG-BENCH-EX1"))
    d.stop()
    lat = [exported[f] - seen_stable[s] for s, f in smalls.items() if s in seen_stable]
    return lat, still_big


def fixture(path, n):
    """A study fixture (the shape `autorthanc snapshot` writes) with n instances."""
    import json
    inst = [{"ID": f"{i:08x}-0000-0000-0000-000000000000", "FileSize": 500000, "IndexInSeries": i + 1,
             "ParentSeries": "s1", "Type": "Instance",
             "MainDicomTags": {"InstanceNumber": str(i + 1),
                               "SOPInstanceUID": f"1.2.826.0.1.3680043.10.1047.1.1.{i + 1}",
                               "InstanceCreationDate": "20241201", "InstanceCreationTime": "101500"}}
            for i in range(n)]
    d = {"study": {"ID": "st", "MainDicomTags": {"StudyInstanceUID": "1.2.3", "StudyDate": "20241201",
                                                  "StudyID": "7", "StudyDescription": "PIPEBENCH"},
                   "PatientMainDicomTags": {"PatientID": "BIG", "PatientName": "BIG^STUDY"},
                   "Series": ["s1"]},
         "series": [{"ID": "s1", "MainDicomTags": {"SeriesInstanceUID": "1.2.3.1", "SeriesNumber": "1",
                                                    "Modality": "MR", "SeriesDate": "20241201"},
                     "ParentStudy": "st", "Instances": [x["ID"] for x in inst]}],
         "instances": inst}
    with open(path, "w") as f:
        json.dump(d, f)


def peak_rss_kb(args, env):
    """(exit code, seconds, peak RSS in kB) of one run under GNU time."""
    out = tempfile.mktemp()
    t0 = time.monotonic()
    r = subprocess.run(["/usr/bin/time", "-f", "%M", "-o", out] + args, env=env,
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    dt = time.monotonic() - t0
    with open(out) as f:
        kb = int(f.read().strip().splitlines()[-1])
    os.unlink(out)
    return r.returncode, dt, kb, r.stderr


def plans(t, binary, sizes):
    """Deciding and planning a big study from a fixture with a FileNaming
    template (`autorthanc test --fixture`): time and peak RSS per instance, at
    the default rule_memory_mb and with the cap out of the way."""
    rules = os.path.join(t.tmp, "plan-rules")
    os.makedirs(rules, exist_ok=True)
    with open(os.path.join(rules, "named.json"), "w") as f:
        f.write('{"CheckOn": "Study", "IsActive": true, "Action": "DOWNLOAD", "Tags": [], '
                '"FileNaming": "IM{InstanceNumber:06}-{SOPInstanceUID}.dcm"}')
    base = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "AUTORTHANC_RULES_DIR": rules}
    print("\nplan: one study from a fixture, a FileNaming template (`autorthanc test --fixture`)")
    print(f"  {'instances':>9} {'cap MB':>7} {'result':>7} {'seconds':>8} {'peak RSS MiB':>13} "
          f"{'KB/instance':>12}")
    for n in sizes:
        fx = os.path.join(t.tmp, f"fx{n}.json")
        fixture(fx, n)
        for cap in (64, 4096):
            env = dict(base, AUTORTHANC_RULE_MEMORY_MB=str(cap))
            rc, dt, kb, _ = peak_rss_kb([binary, "test", "named", "--fixture", fx], env)
            print(f"  {n:9d} {cap:7d} {'ok' if rc == 0 else 'refused':>7} {dt:8.2f} "
                  f"{kb / 1024:13.1f} {kb / n:12.2f}")
        os.unlink(fx)


def big_export(t, binary, n, conns):
    """A study of n small instances stored in Orthanc, exported end to end by
    `run --once` (decision, plan, transfer, rename): seconds and peak RSS."""
    o = t.orthanc("BIGSTUDY", dicom=False)
    log(f"big study: storing {n} instances")
    study = upload_study(o, "BS00001", n)
    h.wait_for(lambda: study in stable_studies(o), 600, "the big study stable", interval=0.5)
    ws = t.workspace(o, name="bigstudy")
    ws.rule("all", tags=[("StudyDescription", "Study", "pipebench")])
    env = env_for(ws, AUTORTHANC_FSYNC="false", AUTORTHANC_MAX_CONNECTIONS=conns)
    env["PATH"] = os.environ.get("PATH", "/usr/bin:/bin")
    rc, dt, kb, err = peak_rss_kb([binary, "run", "--once"], env)
    got = sum(len(fs) for _, _, fs in os.walk(ws.storage))
    print(f"\nbig study: {n} instances stored in Orthanc, `run --once`: exit {rc}, {got} files, "
          f"{dt:.1f} s, peak RSS {kb / 1024:.1f} MiB")
    if rc != 0:
        print(h.tail(err, 10))
    shutil.rmtree(ws.storage, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--binary", required=True)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--backlog", type=int, default=None)
    ap.add_argument("--latency", type=int, default=None)
    ap.add_argument("--big-mb", type=int, default=None)
    ap.add_argument("--connections", type=int, default=4)
    ap.add_argument("--poll-interval", type=float, default=1.0)
    ap.add_argument("--plan-sizes", default=None, help="instances per fixture, e.g. 20000,100000")
    ap.add_argument("--big-study", type=int, default=None, help="instances of the stored study")
    ap.add_argument("--parts", default="plan,big,backlog,latency")
    ap.add_argument("--latency-fsync", default="true", help="fsync in the latency runs")
    a = ap.parse_args()
    os.environ["AR_BINARY"] = os.path.abspath(a.binary)
    n = a.backlog or (30 if a.quick else 1000)
    m = a.latency or (6 if a.quick else 50)
    big = a.big_mb or (20 if a.quick else 1024)
    sizes = [int(x) for x in (a.plan_sizes or ("2000" if a.quick else "20000,100000")).split(",")]
    bign = a.big_study or (300 if a.quick else 20000)
    t = h.TestContext("pipebench")
    try:
        parts = a.parts.split(",")
        if "plan" in parts:
            plans(t, os.path.abspath(a.binary), sizes)
        if "big" in parts:
            big_export(t, os.path.abspath(a.binary), bign, a.connections)
        if "backlog" in parts:
            backlog(t, a.binary, n, a.connections)
        if "latency" not in parts:
            return 0
        idle, _ = latency(t, m, big, a.poll_interval, loaded=False, fsync=a.latency_fsync)
        load, overlapped = latency(t, m, big, a.poll_interval, loaded=True, fsync=a.latency_fsync)
        print(f"\nlatency: {m} small studies, StableStudy in Orthanc's log -> export folder, "
              f"poll_interval {a.poll_interval} s, fsync {a.latency_fsync}, through {LINK}")
        print(f"  {'':34} {'p50 s':>7} {'p99 s':>7}")
        print(f"  {'nothing else running (reference)':34} {pctl(idle, 50):7.2f} "
              f"{pctl(idle, 99):7.2f}")
        print(f"  {f'{big} MB export + a hung FORWARD':34} {pctl(load, 50):7.2f} "
              f"{pctl(load, 99):7.2f}")
        print(f"  ratio p99 loaded / reference: {pctl(load, 99) / max(pctl(idle, 99), 1e-3):.2f}; "
              f"target p99 <= {a.poll_interval + 1:.1f} s; the big export "
              f"{'was still running' if overlapped else 'had finished'} when the last small "
              f"one was exported")
    finally:
        t.close()
        shutil.rmtree(t.tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
