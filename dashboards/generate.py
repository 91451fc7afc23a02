#!/usr/bin/env python3
"""Writes podstat's Grafana dashboards (node, pod, self) as JSON next to this file.

The JSON files are what users import; this script is how they are kept consistent (one
selector, one set of variables). Edit here and run `python3 dashboards/generate.py [DIR]`;
tests/all/dashboards.rs evaluates every query against a real Prometheus scraping podstat and
fails when a file differs from what this script writes.
"""
import json
import os
import sys

SEL = 'job="kubelet", metrics_path="/metrics/cadvisor", cluster="$cluster", node="$node"'
RATE = "$__rate_interval"


def variables(extra):
    ds = {"type": "prometheus", "uid": "${datasource}"}
    out = [
        {"name": "datasource", "label": "Data source", "type": "datasource", "query": "prometheus",
         "current": {}, "hide": 0, "refresh": 1},
        {"name": "cluster", "label": "cluster", "type": "query", "datasource": ds,
         "query": {"query": 'label_values(up{job="kubelet", metrics_path="/metrics/cadvisor"}, cluster)',
                   "refId": "cluster"},
         "definition": 'label_values(up{job="kubelet", metrics_path="/metrics/cadvisor"}, cluster)',
         "hide": 2, "refresh": 2, "includeAll": False, "current": {}, "sort": 1},
        {"name": "node", "label": "node", "type": "query", "datasource": ds,
         "query": {"query": 'label_values(up{job="kubelet", metrics_path="/metrics/cadvisor", cluster="$cluster"}, node)',
                   "refId": "node"},
         "definition": 'label_values(up{job="kubelet", metrics_path="/metrics/cadvisor", cluster="$cluster"}, node)',
         "hide": 0, "refresh": 2, "includeAll": False, "current": {}, "sort": 1},
    ]
    for name, q in extra:
        out.append({"name": name, "label": name, "type": "query", "datasource": ds,
                    "query": {"query": q, "refId": name}, "definition": q, "hide": 0, "refresh": 2,
                    "includeAll": False, "current": {}, "sort": 1})
    return out


def panel(pid, title, unit, targets, x, y, w=12, h=8, description=""):
    return {
        "id": pid, "type": "timeseries", "title": title, "description": description,
        "datasource": {"type": "prometheus", "uid": "${datasource}"},
        "gridPos": {"x": x, "y": y, "w": w, "h": h},
        "fieldConfig": {"defaults": {"unit": unit, "custom": {"fillOpacity": 10}}, "overrides": []},
        "options": {"legend": {"displayMode": "table", "placement": "right", "calcs": ["lastNotNull"]},
                    "tooltip": {"mode": "multi", "sort": "desc"}},
        "targets": [{"refId": chr(ord("A") + i), "expr": e, "legendFormat": l, "range": True}
                    for i, (e, l) in enumerate(targets)],
    }


def dashboard(uid, title, tags, extra_vars, panels):
    return {
        "uid": uid, "title": title, "tags": ["podstat"] + tags, "editable": True,
        "schemaVersion": 39, "version": 1, "timezone": "", "refresh": "30s",
        "time": {"from": "now-1h", "to": "now"}, "graphTooltip": 1,
        "templating": {"list": variables(extra_vars)},
        "annotations": {"list": []}, "links": [], "panels": panels,
    }


def grid(specs):
    """Two panels per row, in order."""
    return [panel(i + 1, *spec[:3], x=(i % 2) * 12, y=(i // 2) * 8,
                  description=spec[3] if len(spec) > 3 else "")
            for i, spec in enumerate(specs)]


C = f'{SEL}, container!="", image!=""'
node = dashboard("podstat-node", "podstat / Node", ["node"], [], grid([
    ("CPU by pod", "cores", [(f'topk(20, sum by (namespace, pod) (rate(container_cpu_usage_seconds_total{{{C}}}[{RATE}])))', "{{namespace}}/{{pod}}")]),
    ("Memory working set by pod", "bytes", [(f'topk(20, sum by (namespace, pod) (container_memory_working_set_bytes{{{C}}}))', "{{namespace}}/{{pod}}")]),
    ("CPU throttled share by container", "percentunit", [(
        f'topk(20, sum by (namespace, pod, container) (increase(container_cpu_cfs_throttled_periods_total{{{C}}}[5m])) '
        f'/ sum by (namespace, pod, container) (increase(container_cpu_cfs_periods_total{{{C}}}[5m])))', "{{namespace}}/{{pod}}/{{container}}")],
     "Share of CFS periods in which the container was throttled: its CPU limit is below what it uses."),
    ("OOM kills by container (1h)", "short", [(f'sum by (namespace, pod, container) (increase(container_oom_events_total{{{C}}}[1h]))', "{{namespace}}/{{pod}}/{{container}}")]),
    ("Network receive by pod", "Bps", [(f'topk(20, sum by (namespace, pod) (rate(container_network_receive_bytes_total{{{SEL}, pod!=""}}[{RATE}])))', "{{namespace}}/{{pod}}")]),
    ("Network transmit by pod", "Bps", [(f'topk(20, sum by (namespace, pod) (rate(container_network_transmit_bytes_total{{{SEL}, pod!=""}}[{RATE}])))', "{{namespace}}/{{pod}}")]),
    ("Disk IO of the node by device", "Bps", [
        (f'sum by (device) (rate(container_fs_sector_reads_total{{{SEL}, id="/"}}[{RATE}])) * 512', "read {{device}}"),
        (f'sum by (device) (rate(container_fs_sector_writes_total{{{SEL}, id="/"}}[{RATE}])) * 512', "write {{device}}")],
     "The node's filesystems' block devices, from /proc/diskstats (sectors of 512 bytes)."),
    ("Disk IO by container", "Bps", [(
        f'topk(20, sum by (namespace, pod, container) (rate(container_fs_reads_bytes_total{{{C}}}[{RATE}]) + rate(container_fs_writes_bytes_total{{{C}}}[{RATE}])))',
        "{{namespace}}/{{pod}}/{{container}}")], "Block IO through the blkio/io controller (page-cache writes are charged when written back)."),
    ("CPU pressure (waiting) by pod", "percentunit", [(f'topk(20, sum by (namespace, pod) (rate(container_pressure_cpu_waiting_seconds_total{{{C}}}[{RATE}])))', "{{namespace}}/{{pod}}")],
     "PSI: share of time some task of the pod waited for a CPU (cgroup v2, or hybrid hosts' unified hierarchy)."),
    ("Memory pressure (stalled) by pod", "percentunit", [(f'topk(20, sum by (namespace, pod) (rate(container_pressure_memory_stalled_seconds_total{{{C}}}[{RATE}])))', "{{namespace}}/{{pod}}")],
     "PSI: share of time all tasks of the pod were stalled on memory."),
    ("Node filesystems used", "percentunit", [(f'container_fs_usage_bytes{{{SEL}, id="/"}} / container_fs_limit_bytes{{{SEL}, id="/"}}', "{{device}}")]),
    ("Containers by kind", "short", [(f'sum by (kind) (podstat_containers_discovered{{{SEL}}})', "{{kind}}")]),
]))

P = f'{SEL}, namespace="$namespace", pod="$pod"'
PC = f'{P}, container!="", image!=""'
pod = dashboard("podstat-pod", "podstat / Pod", ["pod"], [
    ("namespace", 'label_values(container_cpu_usage_seconds_total{job="kubelet", metrics_path="/metrics/cadvisor", cluster="$cluster", node="$node", image!=""}, namespace)'),
    ("pod", 'label_values(container_cpu_usage_seconds_total{job="kubelet", metrics_path="/metrics/cadvisor", cluster="$cluster", node="$node", namespace="$namespace", image!=""}, pod)'),
], grid([
    ("CPU by container", "cores", [
        (f'sum by (container) (rate(container_cpu_usage_seconds_total{{{PC}}}[{RATE}]))', "{{container}}"),
        (f'sum by (container) (container_spec_cpu_quota{{{PC}}} / container_spec_cpu_period{{{PC}}})', "{{container}} limit")]),
    ("CPU throttled periods by container", "percentunit", [(
        f'sum by (container) (increase(container_cpu_cfs_throttled_periods_total{{{PC}}}[5m])) / sum by (container) (increase(container_cpu_cfs_periods_total{{{PC}}}[5m]))',
        "{{container}}")]),
    ("Memory by container", "bytes", [
        (f'sum by (container) (container_memory_working_set_bytes{{{PC}}})', "{{container}} working set"),
        (f'sum by (container) (container_memory_rss{{{PC}}})', "{{container}} rss"),
        (f'sum by (container) (container_memory_cache{{{PC}}})', "{{container}} cache")]),
    ("Memory working set / limit", "percentunit", [(
        f'sum by (container) (container_memory_working_set_bytes{{{PC}}}) / sum by (container) (container_spec_memory_limit_bytes{{{PC}}} > 0)',
        "{{container}}")], "Only containers with a memory limit."),
    ("Network by interface", "Bps", [
        (f'sum by (interface) (rate(container_network_receive_bytes_total{{{P}}}[{RATE}]))', "rx {{interface}}"),
        (f'sum by (interface) (rate(container_network_transmit_bytes_total{{{P}}}[{RATE}]))', "tx {{interface}}")]),
    ("Network packets dropped", "pps", [
        (f'sum by (interface) (rate(container_network_receive_packets_dropped_total{{{P}}}[{RATE}]))', "rx {{interface}}"),
        (f'sum by (interface) (rate(container_network_transmit_packets_dropped_total{{{P}}}[{RATE}]))', "tx {{interface}}")]),
    ("Processes and threads", "short", [
        (f'sum by (container) (container_processes{{{PC}}})', "{{container}} processes"),
        (f'sum by (container) (container_threads{{{PC}}})', "{{container}} threads")]),
    ("File descriptors and sockets", "short", [
        (f'sum by (container) (container_file_descriptors{{{PC}}})', "{{container}} descriptors"),
        (f'sum by (container) (container_sockets{{{PC}}})', "{{container}} sockets")]),
    ("OOM kills (1h)", "short", [(f'sum by (container) (increase(container_oom_events_total{{{PC}}}[1h]))', "{{container}}")]),
    ("Disk IO by container", "Bps", [(
        f'sum by (container) (rate(container_fs_reads_bytes_total{{{PC}}}[{RATE}]) + rate(container_fs_writes_bytes_total{{{PC}}}[{RATE}]))',
        "{{container}}")]),
]))

S = SEL
self_ = dashboard("podstat-self", "podstat / Agent health", ["self"], [], grid([
    ("Collection duration", "s", [(f'podstat_scrape_duration_seconds{{{S}}}', "collection")]),
    ("Collector duration", "s", [(f'podstat_collector_duration_seconds{{{S}}}', "{{collector}}")]),
    ("Collector success", "short", [(f'min by (collector) (podstat_collector_success{{{S}}})', "{{collector}}")],
     "1: the last collection had no read or parse error in this collector."),
    ("Read errors", "short", [(f'sum by (kind) (rate(podstat_read_errors_total{{{S}}}[{RATE}]))', "{{kind}}")]),
    ("Pod metadata age", "s", [(f'podstat_metadata_age_seconds{{{S}}}', "age")],
     "Time since the last successful pod list (kubelet or API server)."),
    ("Series and budget", "short", [
        (f'podstat_series{{{S}}}', "series"),
        (f'sum(rate(podstat_series_dropped_total{{{S}}}[{RATE}]))', "dropped per second")]),
    ("Kept descriptors", "short", [
        (f'podstat_kept_descriptors{{{S}}}', "kept"),
        (f'podstat_kept_descriptors_limit{{{S}}}', "limit")]),
    ("Files read per collection", "short", [(f'podstat_files_read{{{S}}}', "files")]),
]))

here = sys.argv[1] if len(sys.argv) > 1 else os.path.dirname(os.path.abspath(__file__))
for name, d in [("podstat-node.json", node), ("podstat-pod.json", pod), ("podstat-self.json", self_)]:
    with open(os.path.join(here, name), "w") as f:
        json.dump(d, f, indent=2, sort_keys=True)
        f.write("\n")
