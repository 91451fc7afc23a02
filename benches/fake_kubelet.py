#!/usr/bin/env python3
"""A loopback HTTPS kubelet for benches/scrape.sh: serves GET /pods with a PodList for the
bench's pods (uid pod%08x-0000-4000-8000-%012x, 3 containers each with IDs %064x), checks
the bearer token. Usage: fake_kubelet.py PORT CERT KEY TOKEN N_CONTAINERS"""
import http.server, json, ssl, sys

port, cert, key, token, n = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
items = []
for p in range((n + 2) // 3):
    uid = "pod%08x-0000-4000-8000-%012x" % (p, p)
    uid = uid[3:]  # the cgroup is "pod<uid>"
    statuses = [{"name": "c%d" % c, "containerID": "containerd://%064x" % i, "image": "registry.example.com/team/app-%d:1.2.3" % c}
                for c, i in enumerate(range(p * 3, min(p * 3 + 3, n)))]
    items.append({"metadata": {"name": "app-%05x" % p, "namespace": "team-%d" % (p % 20), "uid": uid,
                               "labels": {"app": "app-%d" % (p % 50), "team": "t"}},
                  "status": {"phase": "Running", "containerStatuses": statuses}})
body = json.dumps({"kind": "PodList", "apiVersion": "v1", "items": items}).encode()

class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        ok = self.headers.get("Authorization") == "Bearer " + token
        self.send_response(200 if ok else 401)
        self.send_header("Content-Length", str(len(body) if ok else 0))
        self.end_headers()
        if ok:
            self.wfile.write(body)
    def log_message(self, *a):
        pass

srv = http.server.HTTPServer(("127.0.0.1", int(port)), H)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(cert, key)
srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
srv.serve_forever()
