#!/usr/bin/env bash
# The single-node cluster, run by run.sh inside a mount and a network namespace of its own
# (`unshare --mount --net`): etcd, kube-apiserver, kube-controller-manager, kube-scheduler,
# containerd and the kubelet on fixed ports that no other process can see, and mounts (/run,
# /var/lib, /var/log, container root filesystems, secrets) that vanish with the namespace.
# Arguments: STATE (a fresh directory) CGROUP_ROOT (the kubelet's cgroupRoot, made by run.sh)
# HOLD (1: keep the cluster up after the checks until $STATE/hold is removed).
set -euo pipefail
repo="$(cd "$(dirname "$0")/../.." && pwd)"
state="$1"
cgroup_root="$2"
hold="${3:-0}"
bin="${CLUSTER_CACHE:-$repo/target/cluster}/bin"
export PATH="$bin:$PATH"
node=podstat-node
node_ip=172.30.0.1
pod_cidr=10.244.0.0/24
logs="$state/logs"
pki="$state/pki"
mkdir -p "$logs" "$pki"
echo $$ >"$state/node.pid"

step() { printf '[cluster %4ss] %s\n' "$SECONDS" "$*"; }
fail() {
  echo "cluster: $*" >&2
  for f in "$logs"/*.log; do
    echo "---- last lines of $(basename "$f")" >&2
    tail -n 25 "$f" >&2
  done
  exit 1
}
# wait_for SECONDS WHAT COMMAND...: COMMAND until it succeeds, or fail with the logs.
wait_for() {
  local limit="$1" what="$2" start="$SECONDS"
  shift 2
  until "$@" >/dev/null 2>&1; do
    ((SECONDS - start < limit)) || fail "$what: not within ${limit}s"
    sleep 1
  done
}

# ---- namespace-private mounts: nothing the cluster writes under these reaches the host.
mount --make-rshared / # mountPropagation: HostToContainer needs a shared or slave source
mount -t tmpfs -o mode=0755 cluster-run /run
mkdir -p /run/netns /run/containerd
mount -t tmpfs -o mode=0755 cluster-varlib /var/lib # CNI's cache (/var/lib/cni) has no setting
mount -t tmpfs -o mode=0755 cluster-varlog /var/log # the kubelet's /var/log/pods is fixed

# ---- the node's network: loopback and one address for the node, nothing routed out.
ip link set lo up
ip link add k8s0 type veth peer name k8s1
ip addr add "$node_ip/24" dev k8s0
ip link set k8s0 up
ip link set k8s1 up
ip route add default dev k8s0

# ---- certificates: one CA; server certificates for the API server and the kubelet, client
# certificates for the control plane, the kubelet (system:node:<name>) and the administrator.
step "certificates"
(
  cd "$pki"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
    -keyout ca.key -out ca.crt -subj /CN=podstat-cluster-ca 2>/dev/null
  openssl genrsa -out sa.key 2048 2>/dev/null
  openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
  sign() { # name subject subjectAltName
    openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
      -keyout "$1.key" -out "$1.csr" -subj "$2" 2>/dev/null
    {
      echo "basicConstraints=CA:FALSE"
      echo "keyUsage=critical,digitalSignature,keyEncipherment"
      echo "extendedKeyUsage=serverAuth,clientAuth"
      [[ -n "$3" ]] && echo "subjectAltName=$3"
    } >"$1.ext"
    openssl x509 -req -in "$1.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 \
      -extfile "$1.ext" -out "$1.crt" 2>/dev/null
  }
  sign apiserver /CN=kube-apiserver \
    "IP:$node_ip,IP:10.96.0.1,IP:127.0.0.1,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc"
  sign kubelet-server "/CN=$node" "IP:$node_ip,DNS:$node"
  sign kubelet "/O=system:nodes/CN=system:node:$node" ""
  sign admin /O=system:masters/CN=cluster-admin ""
  sign apiserver-kubelet-client /O=system:masters/CN=kube-apiserver-kubelet-client ""
  sign controller-manager /CN=system:kube-controller-manager ""
  sign scheduler /CN=system:kube-scheduler ""
)
kubeconfig() { # name user
  cat >"$state/$1.kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: local
  cluster: {server: "https://$node_ip:6443", certificate-authority: "$pki/ca.crt"}
users:
- name: $2
  user: {client-certificate: "$pki/$2.crt", client-key: "$pki/$2.key"}
contexts:
- name: local
  context: {cluster: local, user: $2}
current-context: local
EOF
}
for who in admin kubelet controller-manager scheduler; do kubeconfig "$who" "$who"; done
export KUBECONFIG="$state/admin.kubeconfig"

# ---- the control plane
step "etcd"
etcd --name node --data-dir "$state/etcd" --listen-client-urls http://127.0.0.1:2379 \
  --advertise-client-urls http://127.0.0.1:2379 --listen-peer-urls http://127.0.0.1:2380 \
  --initial-advertise-peer-urls http://127.0.0.1:2380 --initial-cluster node=http://127.0.0.1:2380 \
  --listen-metrics-urls http://127.0.0.1:2381 >"$logs/etcd.log" 2>&1 &
wait_for 60 "etcd healthy" curl -fsS http://127.0.0.1:2379/health

step "kube-apiserver"
kube-apiserver --etcd-servers http://127.0.0.1:2379 --bind-address "$node_ip" \
  --advertise-address "$node_ip" --secure-port 6443 --insecure-port 0 \
  --client-ca-file "$pki/ca.crt" --tls-cert-file "$pki/apiserver.crt" \
  --tls-private-key-file "$pki/apiserver.key" \
  --kubelet-certificate-authority "$pki/ca.crt" \
  --kubelet-client-certificate "$pki/apiserver-kubelet-client.crt" \
  --kubelet-client-key "$pki/apiserver-kubelet-client.key" \
  --service-account-key-file "$pki/sa.pub" --service-account-signing-key-file "$pki/sa.key" \
  --service-account-issuer https://kubernetes.default.svc \
  --service-cluster-ip-range 10.96.0.0/24 --authorization-mode Node,RBAC \
  --enable-admission-plugins NodeRestriction --allow-privileged=true \
  --kubelet-preferred-address-types InternalIP >"$logs/kube-apiserver.log" 2>&1 &
wait_for 120 "kube-apiserver ready" kubectl get --raw /readyz

step "kube-controller-manager, kube-scheduler"
kube-controller-manager --kubeconfig "$state/controller-manager.kubeconfig" \
  --authentication-kubeconfig "$state/controller-manager.kubeconfig" \
  --authorization-kubeconfig "$state/controller-manager.kubeconfig" \
  --service-account-private-key-file "$pki/sa.key" --root-ca-file "$pki/ca.crt" \
  --use-service-account-credentials=true --leader-elect=false --port 0 \
  --bind-address 127.0.0.1 --secure-port 10257 >"$logs/kube-controller-manager.log" 2>&1 &
kube-scheduler --kubeconfig "$state/scheduler.kubeconfig" \
  --authentication-kubeconfig "$state/scheduler.kubeconfig" \
  --authorization-kubeconfig "$state/scheduler.kubeconfig" \
  --leader-elect=false --port 0 --bind-address 127.0.0.1 --secure-port 10259 \
  >"$logs/kube-scheduler.log" 2>&1 &

# ---- the node: containerd (CRI, bridge CNI) and the kubelet
step "containerd"
mkdir -p "$state/cni" "$state/containerd"
cat >"$state/cni/10-bridge.conflist" <<EOF
{
  "cniVersion": "0.4.0",
  "name": "podstat-cluster",
  "plugins": [
    {
      "type": "bridge", "bridge": "cni0", "isGateway": true, "isDefaultGateway": true,
      "ipMasq": false, "hairpinMode": false,
      "ipam": {"type": "host-local", "ranges": [[{"subnet": "$pod_cidr"}]],
               "dataDir": "$state/cni-ipam"}
    }
  ]
}
EOF
cat >"$state/containerd/config.toml" <<EOF
version = 2
root = "$state/containerd/root"
state = "/run/containerd/state"
[grpc]
  address = "/run/containerd/containerd.sock"
[plugins."io.containerd.internal.v1.opt"]
  path = "$state/containerd/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "localhost/pause:ci"
  # This machine's processes lack CAP_SYS_RESOURCE: no oom_score_adj below containerd's own.
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$state/cni"
EOF
containerd --config "$state/containerd/config.toml" >"$logs/containerd.log" 2>&1 &
wait_for 60 "containerd answers" ctr version
for image in "$state"/images/*.tar; do
  ctr -n k8s.io images import --no-unpack=false "$image" >/dev/null ||
    fail "ctr images import $image"
done
ctr -n k8s.io images ls -q | sed 's/^/  image: /'

step "kubelet"
mkdir -p "$state/kubelet"
echo "nameserver 127.0.0.1" >"$state/resolv.conf"
cat >"$state/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: 0.0.0.0
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: "$pki/ca.crt"}
authorization: {mode: Webhook}
tlsCertFile: "$pki/kubelet-server.crt"
tlsPrivateKeyFile: "$pki/kubelet-server.key"
cgroupDriver: cgroupfs
cgroupRoot: "$cgroup_root"
cgroupsPerQOS: true
enforceNodeAllocatable: ["pods"]
failSwapOn: false
# The kubelet only warns about the host's kernel settings (patched in build.sh); it must not
# write them, nor refuse to start when they differ from its wishes.
protectKernelDefaults: false
makeIPTablesUtilChains: false
hairpinMode: none
resolvConf: "$state/resolv.conf"
volumePluginDir: "$state/kubelet-plugins"
# The images cannot be pulled again: never collect them, never evict for a full host disk.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {memory.available: "50Mi", nodefs.available: "1%", imagefs.available: "1%"}
podCIDR: "$pod_cidr"
maxPods: 30
EOF
kubelet --config "$state/kubelet.yaml" --kubeconfig "$state/kubelet.kubeconfig" \
  --container-runtime remote --container-runtime-endpoint unix:///run/containerd/containerd.sock \
  --containerd /run/containerd/containerd.sock --root-dir "$state/kubelet" \
  --cert-dir "$state/kubelet/pki" --node-ip "$node_ip" --hostname-override "$node" \
  >"$logs/kubelet.log" 2>&1 &
node_ready() {
  [[ "$(kubectl get node "$node" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}')" == True ]]
}
wait_for 180 "node $node Ready" node_ready
step "node $node Ready"

export STATE="$state" NODE="$node" NODE_IP="$node_ip" CGROUP_ROOT="$cgroup_root"
rc=0
"$repo/tests/cluster/checks.sh" || rc=$?

if [[ "$hold" == 1 ]]; then
  touch "$state/hold"
  step "checks exited $rc; holding: nsenter -t $$ -m -n, KUBECONFIG=$KUBECONFIG; rm $state/hold to end"
  while [[ -e "$state/hold" ]]; do sleep 2; done
fi
exit "$rc"
