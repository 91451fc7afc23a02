#!/usr/bin/env python3
"""The scraper for benches/scrape.sh: one kept-alive HTTP connection, as Prometheus (2.0 and
later) keeps one per target, so each scrape costs the agent a request, not a TCP handshake and
a new connection. Each line on stdin asks for one `GET /metrics` with `Accept-Encoding: gzip`;
the seconds it took are printed, one line per scrape, once the body has been read.
Usage: scrape_client.py HOST:PORT"""
import http.client, sys, time

conn = http.client.HTTPConnection(sys.argv[1], timeout=60)
for _ in sys.stdin:
    t0 = time.perf_counter()
    conn.request("GET", "/metrics", headers={"Accept-Encoding": "gzip"})
    resp = conn.getresponse()
    resp.read()
    print("%.6f" % (time.perf_counter() - t0), flush=True)
