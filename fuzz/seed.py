#!/usr/bin/env python3
"""Builds the seed corpora of the fuzz targets (fuzz/seeds/<target>/) from the project's own
fixtures (tests/fixtures, copied from ../shared/fixtures with their sources) and, when it is
there, ../shared/fixtures itself. Seeds are deduplicated by content and kept small (AFL++
mutates small inputs far faster): files over 64 KiB are cut at a line end, PodLists over
64 KiB are also cut down to their first pods.
Usage: fuzz/seed.py [OUT_DIR (default fuzz/seeds)]"""
import hashlib, json, os, sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "fuzz", "seeds")
SOURCES = [os.path.join(ROOT, "tests", "fixtures"), os.path.join(ROOT, "..", "shared", "fixtures")]
CGROUP_FILES = ("cpu.stat", "cpuacct.stat", "cpuacct.usage", "cpu.max", "cpu.weight", "cpu.shares",
                "memory.stat", "memory.events", "memory.oom_control", "memory.max", "memory.current",
                "io.stat", "blkio.throttle.io_service_bytes_recursive", "blkio.throttle.io_serviced_recursive",
                "cpu.pressure", "memory.pressure", "io.pressure", "cgroup.procs", "pids.max", "pids.current",
                "memory.limit_in_bytes", "memory.usage_in_bytes", "cpu.cfs_quota_us")
PROC_FILES = ("mountinfo", "diskstats", "meminfo", "cpuinfo", "limits", "stat", "dev", "os-release")
MAX = 64 * 1024

def cut(data):
    if len(data) <= MAX:
        return data
    end = data.rfind(b"\n", 0, MAX)
    return data[: end + 1 if end > 0 else MAX]

def small_podlist(data):
    try:
        doc = json.loads(data)
    except ValueError:
        return cut(data)
    items = doc.get("items") or []
    while len(json.dumps(doc).encode()) > MAX and len(items) > 1:
        items = items[: len(items) // 2]
        doc["items"] = items
    return json.dumps(doc).encode()

seen = {}
def add(target, data):
    h = hashlib.sha1(data).hexdigest()[:16]
    if (target, h) in seen:
        return
    seen[(target, h)] = True
    d = os.path.join(OUT, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, h), "wb") as f:
        f.write(data)

for src in SOURCES:
    if not os.path.isdir(src):
        continue
    for dirpath, _, files in os.walk(src):
        for name in files:
            path = os.path.join(dirpath, name)
            if os.path.islink(path) or not os.path.isfile(path):
                continue
            try:
                data = open(path, "rb").read()
            except OSError:
                continue
            if name in CGROUP_FILES:
                add("cgroup", cut(data))
            elif name in PROC_FILES:
                add("procfs", cut(data))
            elif name.startswith("podlist") and name.endswith(".json") or name.endswith("_pods.json"):
                add("podlist", small_podlist(data))
# deflate: exposition text (the goldens) cut to 2 KiB at a line end, after a chunk-size byte.
golden = os.path.join(ROOT, "tests", "golden")
for name in sorted(os.listdir(golden)):
    data = open(os.path.join(golden, name), "rb").read()
    for size, at in ((255, 0), (16, len(data) // 2)):
        piece = data[at:at + 2048]
        end = piece.rfind(b"\n")
        add("deflate", bytes([size]) + piece[: end + 1 if end > 0 else len(piece)])
add("config", open(os.path.join(ROOT, "config", "podstat.toml"), "rb").read())
add("config", b"[server]\nlisten = \"127.0.0.1:9780\"\n[filters]\nexclude_cgroups = [\"**/x*\"]\n[kubernetes]\nsource = \"kubelet\"\nkubelet_url = \"https://127.0.0.1:10250/pods\"\n")
add("config", b"tls_server_config:\n  cert_file: a.crt\n  key_file: a.key\n  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: ca.crt\nbasic_auth_users:\n  prom: $2y$10$abcdefghijklmnopqrstuu5jDEsLNIrs2mfKwNvO0v4wQ1kLAH1Bm\nhttp_server_config:\n  headers:\n    X-Frame-Options: deny\n")
for req in (b"GET /metrics HTTP/1.1\r\nHost: x\r\nAccept-Encoding: gzip\r\n\r\n",
            b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\nGET /readyz HTTP/1.1\r\nHost: x\r\n\r\n",
            b"GET /cardinality?top=3 HTTP/1.0\r\n\r\n",
            b"HEAD / HTTP/1.1\r\nHost: x\r\nAuthorization: Basic cHJvbTpwYXNz\r\n\r\n",
            b"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"):
    add("http", req)
for target in ("cgroup", "procfs", "podlist", "config", "http"):
    n = len(os.listdir(os.path.join(OUT, target)))
    print(f"{target}: {n} seeds")
