#!/usr/bin/env bash
# The checks, run by node.sh on a Ready node (STATE, NODE, NODE_IP, CGROUP_ROOT, KUBECONFIG set).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
api="https://$NODE_IP:6443"
ca="$STATE/pki/ca.crt"
step() { printf '[cluster %4ss] %s\n' "$SECONDS" "$*"; }
fail() { echo "cluster check failed: $*" >&2; exit 1; }
# The token of a service account (Kubernetes 1.20 keeps it in a Secret the controller makes).
token_of() { # namespace account file
  local secret=""
  for _ in $(seq 60); do
    secret="$(kubectl -n "$1" get serviceaccount "$2" -o jsonpath='{.secrets[0].name}' 2>/dev/null)" &&
      [[ -n "$secret" ]] && break
    sleep 1
  done
  [[ -n "$secret" ]] || fail "no token for $1/$2"
  kubectl -n "$1" get secret "$secret" -o jsonpath='{.data.token}' | base64 -d >"$3"
}
# HTTP status of a GET with a bearer token.
status_with() { # token-file url
  curl -s -o /dev/null -w '%{http_code}' --cacert "$ca" -H "Authorization: Bearer $(cat "$1")" "$2"
}

# ---- podstat, from daemonset/ as shipped. This copy of tests/cluster/podstat sets the one
# value the shipped ConfigMap leaves to the cluster: its pause image (`sandbox_image`, which
# cAdvisor reads from the runtime and the pod list does not carry).
kubectl apply -f "$here/operator-crds.yaml" >/dev/null
kubectl wait --for condition=established --timeout=60s crd/servicemonitors.monitoring.coreos.com \
  crd/prometheusrules.monitoring.coreos.com >/dev/null
overlay="$STATE/overlay"
mkdir -p "$overlay"
cp "$here"/podstat/* "$overlay/"
# kustomize 2.0 takes only relative bases.
sed -i "s#^  - ../../../daemonset\$#  - $(realpath --relative-to="$overlay" "$repo/daemonset")#" "$overlay/kustomization.yaml"
python3 - "$repo/daemonset/configmap.yaml" "$overlay" <<'PY'
import json, sys, yaml
shipped = yaml.safe_load(open(sys.argv[1]))["data"]["podstat.toml"]
assert '\nsandbox_image = ""\n' in shipped, "configmap.yaml: no sandbox_image to set"
toml = shipped.replace('\nsandbox_image = ""\n', '\nsandbox_image = "localhost/pause:ci"\n', 1)
json.dump([{"op": "replace", "path": "/data/podstat.toml", "value": toml}],
          open(sys.argv[2] + "/sandbox-image.yaml", "w"))
with open(sys.argv[2] + "/kustomization.yaml", "a") as f:
    f.write("  - target: {version: v1, kind: ConfigMap, name: podstat, namespace: podstat}\n"
            "    path: sandbox-image.yaml\n")
PY
step "kubectl apply -k (daemonset/, image localhost/podstat:ci, nodes/proxy, sandbox_image)"
kubectl apply -k "$overlay" >/dev/null

step "workloads and Prometheus' service account"
kubectl apply -f "$here/workloads.yaml" -f "$here/prometheus-rbac.yaml" >/dev/null
kubectl -n workload wait --for=condition=Ready pod/web --timeout=120s >/dev/null
web_ip="$(kubectl -n workload get pod web -o jsonpath='{.status.podIP}')"
sed "s/WEB_IP/$web_ip/" "$here/web-client.yaml" | kubectl apply -f - >/dev/null
kubectl -n podstat rollout status daemonset/podstat --timeout=180s >/dev/null
# All but oom, which is Ready only between its kills; hold once it says it holds its memory.
kubectl -n workload wait --for=condition=Ready pod/cpu-burner pod/disk pod/web pod/web-client \
  pod/hold --timeout=180s >/dev/null || { kubectl -n workload get pods; fail "workloads not Ready"; }
held() { kubectl -n workload logs hold | grep -qx held; }
for _ in $(seq 120); do held && break; sleep 1; done
held || fail "pod hold did not fill its memory"
podstat_pod="$(kubectl -n podstat get pods -l app.kubernetes.io/name=podstat -o jsonpath='{.items[0].metadata.name}')"
podstat_ip="$(kubectl -n podstat get pod "$podstat_pod" -o jsonpath='{.status.podIP}')"
step "podstat pod $podstat_pod Ready at $podstat_ip"

# ---- its service account may do exactly what it needs.
token_of podstat podstat "$STATE/podstat.token"
token_of monitoring prometheus "$STATE/prometheus.token"
kubelet="https://$NODE_IP:10250"
check_status() { # expected token url what
  local got
  got="$(status_with "$2" "$3")"
  [[ "$got" == "$1" ]] || fail "$4: HTTP $got, expected $1"
  echo "  $4: $got"
}
check_status 200 "$STATE/podstat.token" "$kubelet/pods" "podstat's token, kubelet GET /pods"
check_status 403 "$STATE/podstat.token" "$kubelet/metrics/cadvisor" "podstat's token, kubelet GET /metrics/cadvisor"
check_status 403 "$STATE/podstat.token" "$kubelet/stats/summary" "podstat's token, kubelet GET /stats/summary"
check_status 403 "$STATE/podstat.token" "$api/api/v1/namespaces/podstat/secrets" "podstat's token, list secrets"
check_status 403 "$STATE/podstat.token" "$api/api/v1/pods" "podstat's token, list pods"
check_status 200 "$STATE/prometheus.token" "$kubelet/metrics/cadvisor" "Prometheus' token, kubelet GET /metrics/cadvisor"

# ---- it reads the host through read-only mounts.
container_id="$(kubectl -n podstat get pod "$podstat_pod" -o jsonpath='{.status.containerStatuses[0].containerID}')"
container_id="${container_id#containerd://}"
podstat_pid="$(ctr -n k8s.io tasks ls | awk -v id="$container_id" '$1 == id {print $2}')"
[[ -n "$podstat_pid" ]] || fail "no task for podstat's container $container_id"
for mount_point in /host/sys/fs/cgroup /host/proc /host/sys /host/root /host/etc/machine-id \
  /host/etc/os-release /etc/podstat /; do
  options="$(awk -v m="$mount_point" '$5 == m {print $6}' "/proc/$podstat_pid/mountinfo" | tail -n1)"
  [[ -n "$options" ]] || fail "podstat has no mount at $mount_point"
  [[ ",$options," == *,ro,* ]] || fail "podstat's $mount_point is mounted $options, not read-only"
done
echo "  podstat (PID $podstat_pid) sees the host read-only at /host/{sys/fs/cgroup,proc,sys,root,etc/*}"

# ---- two Prometheus servers, one per source, the same rules; stand-ins for kube-state-metrics
# and for Kubernetes discovery (standins.py).
step "Prometheus: podstat through pod discovery, the kubelet's cAdvisor through node discovery"
python3 "$here/standins.py" 9781 "$api" "$ca" "$STATE/prometheus.token" \
  >"$STATE/logs/standins.log" 2>&1 &
python3 "$here/prom_config.py" "$repo" "$STATE/prometheus" "$ca" "$STATE/prometheus.token" \
  127.0.0.1:9781
promtool check config "$STATE/prometheus/podstat/prometheus.yml" >/dev/null
promtool check config "$STATE/prometheus/kubelet/prometheus.yml" >/dev/null
port=9090
for source in podstat kubelet; do
  prometheus --config.file "$STATE/prometheus/$source/prometheus.yml" \
    --storage.tsdb.path "$STATE/prometheus/$source/data" --web.listen-address "127.0.0.1:$port" \
    >"$STATE/logs/prometheus-$source.log" 2>&1 &
  port=$((port + 1))
done

# 370 s: the mixin's rate(...[5m]) rules are compared once both servers hold 5 minutes, over
# the last minute (shorter runs, e.g. with --hold, compare everything else).
step "comparing for ${COMPARE_SECONDS:-370}s"
python3 "$here/compare.py" --podstat http://127.0.0.1:9090 --kubelet http://127.0.0.1:9091 \
  --cgroup-root "$CGROUP_ROOT" --seconds "${COMPARE_SECONDS:-370}" --report "$STATE/compare.txt"

# ---- the probes kept passing all along.
ready="$(kubectl -n podstat get pod "$podstat_pod" -o jsonpath='{.status.containerStatuses[0].ready}')"
restarts="$(kubectl -n podstat get pod "$podstat_pod" -o jsonpath='{.status.containerStatuses[0].restartCount}')"
[[ "$ready" == true && "$restarts" == 0 ]] || fail "podstat ready=$ready restarts=$restarts"
step "podstat still Ready, 0 restarts (liveness /healthz, readiness /readyz)"
