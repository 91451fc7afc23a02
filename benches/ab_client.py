#!/usr/bin/env python3
"""The driver for benches/ab.sh: one kept-alive connection to each of two podstats, scrapes
(gzip) alternated in random order within each pair, and the CPU each podstat's cgroup was
charged, read around every block of 10 pairs. Prints CPU per scrape of each, B/A over the
whole run, and the spread of B/A over the blocks (a ratio between same-binary runs shows the
tool's own noise).
Usage: ab_client.py PORT_A PORT_B CPU_FILE_A CPU_FILE_B PAIRS [GAP_S]
(CPU_FILE: a cgroup's cpuacct.usage, in ns, or its cpu.stat, whose usage_usec is read)."""
import http.client, random, sys, time

port_a, port_b, file_a, file_b = sys.argv[1:5]
pairs = int(sys.argv[5])
gap = float(sys.argv[6]) if len(sys.argv) > 6 else 0.01


def cpu_ns(path):
    with open(path) as f:
        text = f.read()
    if path.endswith("cpu.stat"):
        for line in text.splitlines():
            key, value = line.split()
            if key == "usage_usec":
                return int(value) * 1000
        raise SystemExit("no usage_usec in " + path)
    return int(text)


conns = {p: http.client.HTTPConnection("127.0.0.1:" + p, timeout=60) for p in (port_a, port_b)}


def scrape(port):
    c = conns[port]
    c.request("GET", "/metrics", headers={"Accept-Encoding": "gzip"})
    c.getresponse().read()


for _ in range(3):  # open the kept descriptors and size the gzip tables
    scrape(port_a)
    scrape(port_b)
blocks, total_a, total_b = [], 0, 0
for _ in range(max(1, pairs // 10)):
    a0, b0 = cpu_ns(file_a), cpu_ns(file_b)
    for _ in range(10):
        order = [port_a, port_b]
        random.shuffle(order)
        for port in order:
            scrape(port)
            time.sleep(gap)
    da, db = cpu_ns(file_a) - a0, cpu_ns(file_b) - b0
    total_a += da
    total_b += db
    blocks.append(db / da)
n = len(blocks) * 10
blocks.sort()
q = lambda f: blocks[min(len(blocks) - 1, int(f * len(blocks)))]
print("A %.0f us  B %.0f us per scrape  B/A %.4f  (blocks of 10: median %.4f, 10-90%% %.3f-%.3f, %d blocks)"
      % (total_a / n / 1000, total_b / n / 1000, total_b / total_a, q(0.5), q(0.1), q(0.9), len(blocks)))
