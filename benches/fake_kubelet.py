#!/usr/bin/env python3
"""A loopback HTTPS kubelet for benches/scrape.sh: serves GET /pods with a PodList for the
bench's pods (3 containers each), checks the bearer token. Also names the bench's cgroups, so
both agree. IDs are random-looking hex as runtimes make them (sha256 of the index), or with
IDS=sequential the index in hex (which gzip compresses ~1.8x better: flattering).
Usage: fake_kubelet.py PORT CERT KEY TOKEN N_CONTAINERS | fake_kubelet.py --names N_CONTAINERS"""
import hashlib, http.server, json, os, ssl, sys

SEQUENTIAL = os.environ.get("IDS", "random") == "sequential"

def pod_uid(p):
    if SEQUENTIAL:
        return "%08x-0000-4000-8000-%012x" % (p, p)
    h = hashlib.sha256(b"pod%d" % p).hexdigest()
    return "%s-%s-4%s-8%s-%s" % (h[:8], h[8:12], h[13:16], h[17:20], h[20:32])

def container_id(i):
    return "%064x" % i if SEQUENTIAL else hashlib.sha256(b"container%d" % i).hexdigest()

if sys.argv[1] == "--names":
    # One cgroup path per container, below kubepods/burstable (cgroupfs driver).
    for i in range(int(sys.argv[2])):
        print("pod%s/%s" % (pod_uid(i // 3), container_id(i)))
    sys.exit(0)

port, cert, key, token, n = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
items = []
for p in range((n + 2) // 3):
    uid = pod_uid(p)
    statuses = [{"name": "c%d" % c, "containerID": "containerd://%s" % container_id(i), "image": "registry.example.com/team/app-%d:1.2.3" % c}
                for c, i in enumerate(range(p * 3, min(p * 3 + 3, n)))]
    items.append({"metadata": {"name": "app-%05x" % p, "namespace": "team-%d" % (p % 20), "uid": uid,
                               "labels": {"app": "app-%d" % (p % 50), "team": "t"}},
                  "status": {"phase": "Running", "containerStatuses": statuses}})
body = json.dumps({"kind": "PodList", "apiVersion": "v1", "items": items}).encode()

# FAULTS=1 (benches/soak.sh): the answer changes every 10 s through a cycle of what broken
# kubelets do: ok, HTTP 500, an answer slower than podstat's timeout, a truncated body, ok, a
# connection closed without an answer.
FAULTS = os.environ.get("FAULTS") == "1"

class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if FAULTS:
            import time
            slot = int(time.time() // 10) % 6
            if slot == 1:
                self.send_response(500); self.send_header("Content-Length", "0"); self.end_headers(); return
            if slot == 2:
                time.sleep(15)
            if slot == 3:
                self.send_response(200); self.send_header("Content-Length", str(len(body))); self.end_headers()
                self.wfile.write(body[: len(body) // 2]); return
            if slot == 5:
                self.close_connection = True; return
        ok = self.headers.get("Authorization") == "Bearer " + token
        self.send_response(200 if ok else 401)
        self.send_header("Content-Length", str(len(body) if ok else 0))
        self.end_headers()
        if ok:
            self.wfile.write(body)
    def log_message(self, *a):
        pass

srv = http.server.ThreadingHTTPServer(("127.0.0.1", int(port)), H)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(cert, key)
srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
srv.serve_forever()
