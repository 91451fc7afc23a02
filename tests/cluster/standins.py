#!/usr/bin/env python3
"""Stand-ins for two things Debian does not package, both fed from the real API server:

- /metrics: kube-state-metrics' series that the kubernetes-mixin's container rules join with
  (kube_pod_info, kube_pod_status_phase, kube_pod_container_resource_{requests,limits}).
- /sd?role=pod&namespace=N and /sd?role=node: Prometheus' Kubernetes service discovery, which
  Debian's Prometheus is built without (`kubernetes_sd_configs` is an unknown field there), as
  HTTP service discovery: the targets and `__meta_kubernetes_*` labels that discovery gives, so
  that daemonset/prometheus-scrape-config.yaml's relabeling runs unchanged on them.

Both ask the API server with Prometheus' service account token: discovery sees what
Prometheus' RBAC (prometheus-rbac.yaml) lets it see.

usage: standins.py LISTEN_PORT API_SERVER_URL CA TOKEN_FILE
"""
import http.server
import json
import re
import ssl
import sys
import urllib.parse
import urllib.request

port, api, ca, token_file = sys.argv[1:5]
tls = ssl.create_default_context(cafile=ca)
with open(token_file) as f:
    token = f.read().strip()


def quantity(text, resource):
    """A Kubernetes quantity as kube-state-metrics writes it: cores or bytes."""
    suffixes = {"m": 1e-3, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "k": 1e3, "M": 1e6, "G": 1e9}
    for suffix, factor in suffixes.items():
        if text.endswith(suffix):
            return float(text[: -len(suffix)]) * factor
    return float(text)


def esc(value):
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def get(path):
    request = urllib.request.Request(api + path, headers={"Authorization": "Bearer " + token})
    with urllib.request.urlopen(request, context=tls, timeout=5) as response:
        return json.load(response)["items"]


def label_name(text):
    """As Prometheus sanitises a Kubernetes key into a label name."""
    return re.sub(r"[^a-zA-Z0-9_]", "_", text)


def pod_targets(namespace):
    """What role: pod discovery gives: a target per declared container port."""
    targets = []
    for pod in get(f"/api/v1/namespaces/{namespace}/pods"):
        meta, spec, status = pod["metadata"], pod["spec"], pod.get("status", {})
        common = {
            "__meta_kubernetes_namespace": meta["namespace"],
            "__meta_kubernetes_pod_name": meta["name"],
            "__meta_kubernetes_pod_uid": meta["uid"],
            "__meta_kubernetes_pod_ip": status.get("podIP", ""),
            "__meta_kubernetes_pod_node_name": spec.get("nodeName", ""),
            "__meta_kubernetes_pod_host_ip": status.get("hostIP", ""),
            "__meta_kubernetes_pod_phase": status.get("phase", ""),
            "__meta_kubernetes_pod_ready": str(any(
                c["type"] == "Ready" and c["status"] == "True"
                for c in status.get("conditions", []))).lower(),
        }
        for owner in meta.get("ownerReferences", []):
            if owner.get("controller"):
                common["__meta_kubernetes_pod_controller_kind"] = owner["kind"]
                common["__meta_kubernetes_pod_controller_name"] = owner["name"]
        for key, value in meta.get("labels", {}).items():
            common["__meta_kubernetes_pod_label_" + label_name(key)] = value
            common["__meta_kubernetes_pod_labelpresent_" + label_name(key)] = "true"
        for key, value in meta.get("annotations", {}).items():
            common["__meta_kubernetes_pod_annotation_" + label_name(key)] = value
            common["__meta_kubernetes_pod_annotationpresent_" + label_name(key)] = "true"
        for container in spec["containers"]:
            for port in container.get("ports", []):
                labels = dict(common)
                labels.update({
                    "__meta_kubernetes_pod_container_name": container["name"],
                    "__meta_kubernetes_pod_container_image": container["image"],
                    "__meta_kubernetes_pod_container_port_name": port.get("name", ""),
                    "__meta_kubernetes_pod_container_port_number": str(port["containerPort"]),
                    "__meta_kubernetes_pod_container_port_protocol": port.get("protocol", "TCP"),
                    "__meta_kubernetes_pod_container_init": "false",
                })
                address = f'{status.get("podIP", "")}:{port["containerPort"]}'
                targets.append({"targets": [address], "labels": labels})
    return targets


def node_targets():
    """What role: node discovery gives: the kubelet's port on the first InternalIP."""
    targets = []
    for node in get("/api/v1/nodes"):
        meta = node["metadata"]
        addresses = node.get("status", {}).get("addresses", [])
        internal = [a["address"] for a in addresses if a["type"] == "InternalIP"]
        port = node["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"]
        labels = {"__meta_kubernetes_node_name": meta["name"]}
        for key, value in meta.get("labels", {}).items():
            labels["__meta_kubernetes_node_label_" + label_name(key)] = value
        if internal:
            labels["__meta_kubernetes_node_address_InternalIP"] = internal[0]
            targets.append({"targets": [f"{internal[0]}:{port}"], "labels": labels})
    return targets


def page():
    pods = get("/api/v1/pods")
    out = []
    for pod in pods:
        meta, spec, status = pod["metadata"], pod["spec"], pod.get("status", {})
        base = f'namespace="{esc(meta["namespace"])}",pod="{esc(meta["name"])}",uid="{esc(meta["uid"])}"'
        out.append(
            f'kube_pod_info{{{base},node="{esc(spec.get("nodeName", ""))}",'
            f'host_ip="{esc(status.get("hostIP", ""))}",pod_ip="{esc(status.get("podIP", ""))}"}} 1'
        )
        for phase in ("Pending", "Running", "Succeeded", "Failed", "Unknown"):
            value = 1 if status.get("phase") == phase else 0
            out.append(f'kube_pod_status_phase{{{base},phase="{phase}"}} {value}')
        for container in spec["containers"]:
            resources = container.get("resources", {})
            for kind in ("requests", "limits"):
                for resource, text in resources.get(kind, {}).items():
                    unit = "core" if resource == "cpu" else "byte"
                    out.append(
                        f'kube_pod_container_resource_{kind}{{{base},'
                        f'container="{esc(container["name"])}",node="{esc(spec.get("nodeName", ""))}",'
                        f'resource="{resource}",unit="{unit}"}} {quantity(text, resource)}'
                    )
    return ("\n".join(out) + "\n").encode()


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        url = urllib.parse.urlparse(self.path)
        query = urllib.parse.parse_qs(url.query)
        try:
            content_type = "application/json"
            if url.path == "/sd" and query.get("role") == ["pod"]:
                body, code = json.dumps(pod_targets(query["namespace"][0])).encode(), 200
            elif url.path == "/sd" and query.get("role") == ["node"]:
                body, code = json.dumps(node_targets()).encode(), 200
            else:
                body, code = page(), 200
                content_type = "text/plain; version=0.0.4"
        except Exception as error:  # the scrape fails visibly (up == 0), the server stays
            body, code = f"{error}\n".encode(), 500
            content_type = "text/plain"
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


http.server.ThreadingHTTPServer(("127.0.0.1", int(port)), Handler).serve_forever()
