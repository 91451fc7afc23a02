#!/usr/bin/env python3
"""Writes the cluster test's two Prometheus configurations and their rule file.

- podstat/: the scrape job of daemonset/prometheus-scrape-config.yaml as shipped (the
  ServiceMonitor's relabeling: job="kubelet", metrics_path="/metrics/cadvisor"). Its
  `kubernetes_sd_configs` become `http_sd_configs` on standins.py, which serves the same targets
  and `__meta_kubernetes_*` labels from the real API server: Debian's Prometheus is built
  without Kubernetes discovery.
- kubelet/: the kubelet's own /metrics/cadvisor, discovered as nodes (the same way), labelled
  as kube-prometheus labels it (job="kubelet", metrics_path="/metrics/cadvisor").
Both load the kubernetes-mixin's k8s.rules groups unchanged (the kube-prometheus fixture) and
scrape standins.py as job="kube-state-metrics". Every 5 s, for a test that lasts minutes.

usage: prom_config.py REPO OUT_DIR CA TOKEN_FILE STANDINS_ADDRESS
"""
import json
import os
import sys

import yaml

repo, out, ca, token, standins = sys.argv[1:6]
PACE = {"scrape_interval": "5s", "scrape_timeout": "4s"}


def discovery(role, namespace=None):
    url = f"http://{standins}/sd?role={role}" + (f"&namespace={namespace}" if namespace else "")
    return {"url": url, "refresh_interval": "5s"}


def rules():
    path = os.path.join(
        repo, "tests/fixtures/ecosystem/kube-prometheus_kubernetesControlPlane-prometheusRule.yaml"
    )
    with open(path) as f:
        doc = yaml.safe_load(f)
    groups = [g for g in doc["spec"]["groups"] if g["name"].startswith("k8s.rules")]
    return {"groups": groups}


def kube_state_metrics():
    return {"job_name": "kube-state-metrics", **PACE, "honor_labels": True,
            "static_configs": [{"targets": [standins]}]}


def podstat_jobs():
    with open(os.path.join(repo, "daemonset/prometheus-scrape-config.yaml")) as f:
        jobs = yaml.safe_load(f)
    for job in jobs:
        job.update(PACE)
        http_sd = []
        for sd in job.pop("kubernetes_sd_configs"):
            assert sd["role"] == "pod", f"standins.py serves role: pod and node, not {sd['role']}"
            for namespace in sd["namespaces"]["names"]:
                http_sd.append(discovery("pod", namespace))
        job["http_sd_configs"] = http_sd
    return jobs


def kubelet_job():
    return {
        "job_name": "kubelet", **PACE, "scheme": "https", "metrics_path": "/metrics/cadvisor",
        "honor_labels": True,
        # The kubelet stamps each sample with the time cAdvisor read it; the comparison
        # brackets podstat's readings between two of them.
        "honor_timestamps": True,
        "tls_config": {"ca_file": ca}, "bearer_token_file": token,
        "http_sd_configs": [discovery("node")],
        "relabel_configs": [
            {"action": "replace", "target_label": "metrics_path", "replacement": "/metrics/cadvisor"},
            {"action": "replace", "source_labels": ["__meta_kubernetes_node_name"], "target_label": "node"},
        ],
    }


for name, jobs in (("podstat", podstat_jobs()), ("kubelet", [kubelet_job()])):
    directory = os.path.join(out, name)
    os.makedirs(directory, exist_ok=True)
    config = {
        "global": {"scrape_interval": "5s", "evaluation_interval": "5s"},
        "rule_files": [os.path.join(out, "rules.yml")],
        "scrape_configs": jobs + [kube_state_metrics()],
    }
    with open(os.path.join(directory, "prometheus.yml"), "w") as f:
        json.dump(config, f, indent=1)  # JSON is YAML
with open(os.path.join(out, "rules.yml"), "w") as f:
    yaml.safe_dump(rules(), f, sort_keys=False)
