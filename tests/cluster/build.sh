#!/usr/bin/env bash
# Fetches Debian 12's Kubernetes source package (v1.20.2, complete vendor/) and kubectl, and builds
# the control plane and the kubelet with Debian's Go 1.19 in GOPATH mode. Everything lands in
# $CLUSTER_CACHE (default target/cluster): a second run with the binaries there does nothing.
# Nothing is installed on the host: apt runs with a private source list and state directory, and
# kubectl is unpacked from its .deb (Debian's kubernetes-client conflicts with other kubectls).
set -euo pipefail
script="$(readlink -f "$0")"
cd "$(dirname "$script")/../.."
cache="${CLUSTER_CACHE:-$PWD/target/cluster}"
mkdir -p "$cache/bin"
cache="$(cd "$cache" && pwd)"
bins=(kubelet kube-apiserver kube-controller-manager kube-scheduler)
# The binaries are reused only if this script, which patches what they are built from, is the
# one that built them.
recipe="$(sha256sum "$script" | cut -d' ' -f1)"
done_all=true
for b in "${bins[@]}" kubectl; do [[ -x "$cache/bin/$b" ]] || done_all=false; done
if $done_all && [[ "$(cat "$cache/bin/.recipe" 2>/dev/null)" == "$recipe" ]]; then
  echo "cluster binaries cached in $cache/bin"
  exit 0
fi
for b in "${bins[@]}"; do rm -f "$cache/bin/$b"; done

# A private apt: the host's source list and package lists stay as they were.
apt_dir="$cache/apt"
mkdir -p "$apt_dir/lists/partial" "$apt_dir/archives/partial" "$cache/src"
cat >"$apt_dir/sources.list" <<SRC
deb http://deb.debian.org/debian bookworm main
deb-src http://deb.debian.org/debian bookworm main
SRC
apt_opts=(-o "Dir::Etc::SourceList=$apt_dir/sources.list" -o Dir::Etc::SourceParts=/dev/null
  -o "Dir::State::Lists=$apt_dir/lists" -o "Dir::Cache::Archives=$apt_dir/archives"
  -o Debug::NoLocking=1 -o APT::Sandbox::User=root -q)
SECONDS=0
apt-get "${apt_opts[@]}" update >/dev/null
if [[ ! -x "$cache/bin/kubectl" ]]; then
  (cd "$cache/src" && apt-get "${apt_opts[@]}" download kubernetes-client >/dev/null)
  rm -rf "$cache/src/kubectl-deb"
  dpkg -x "$cache"/src/kubernetes-client_*.deb "$cache/src/kubectl-deb"
  cp "$cache/src/kubectl-deb/usr/bin/kubectl" "$cache/bin/kubectl"
fi
tree="$(find "$cache/src" -maxdepth 1 -type d -name 'kubernetes-1.*' | head -n1)"
if [[ -z "$tree" ]]; then
  (cd "$cache/src" && apt-get "${apt_opts[@]}" source kubernetes >/dev/null)
  tree="$(find "$cache/src" -maxdepth 1 -type d -name 'kubernetes-1.*' | head -n1)"
fi
[[ -n "$tree" && -d "$tree/vendor" ]] || { echo "no Kubernetes source tree with vendor/ in $cache/src" >&2; exit 1; }
echo "source fetched in ${SECONDS}s: $tree"

# GOPATH mode: Kubernetes 1.20 predates module-mode builds of its own cmd/ with a vendor tree
# that Go 1.19 accepts, and the tree must sit at its import path.
export GOPATH="$cache/gopath" GO111MODULE=off GOFLAGS= CGO_ENABLED=1
export GOCACHE="$cache/gocache"
mkdir -p "$GOPATH/src/k8s.io"
ln -sfn "$tree" "$GOPATH/src/k8s.io/kubernetes"
cd "$GOPATH/src/k8s.io/kubernetes"
# kube-apiserver needs the OpenAPI definitions that `make` generates; the generator is vendored.
if [[ ! -s pkg/generated/openapi/zz_generated.openapi.go ]]; then
  SECONDS=0
  go build -o "$cache/bin/openapi-gen" ./vendor/k8s.io/kube-openapi/cmd/openapi-gen
  # As build/root/Makefile.generated_files does: every package with the tag (true or false) in
  # any file, but the code generator's examples and the sample API server.
  pkgs="$(grep -rl --include='*.go' '+k8s:openapi-gen=' pkg staging/src/k8s.io |
    grep -v -e '^staging/src/k8s.io/code-generator/' -e '^staging/src/k8s.io/sample-apiserver/' |
    xargs -n1 dirname | sed -e 's#^staging/src/##' -e 's#^pkg/#k8s.io/kubernetes/pkg/#' |
    sort -u | paste -sd, -)"
  "$cache/bin/openapi-gen" --input-dirs "$pkgs" \
    --output-package k8s.io/kubernetes/pkg/generated/openapi -O zz_generated.openapi \
    --go-header-file hack/boilerplate/boilerplate.generatego.txt \
    --report-filename /dev/null >/dev/null
  echo "openapi generated in ${SECONDS}s"
fi
# Kubernetes 1.20 vendors reflect2 1.0.1, whose map iteration faults under Go >= 1.18 (the API
# server died encoding its first custom resource: SIGSEGV in reflect2's UnsafeIterate).
# Debian's golang-github-modern-go-reflect2-dev is 1.0.2, the release that fixed it.
reflect2=vendor/github.com/modern-go/reflect2
if [[ ! -e "$reflect2/go_above_118.go" ]]; then
  (cd "$cache/src" && apt-get "${apt_opts[@]}" download golang-github-modern-go-reflect2-dev >/dev/null)
  rm -rf "$cache/src/reflect2-deb"
  dpkg -x "$cache"/src/golang-github-modern-go-reflect2-dev_*.deb "$cache/src/reflect2-deb"
  fixed="$cache/src/reflect2-deb/usr/share/gocode/src/github.com/modern-go/reflect2"
  [[ -e "$fixed/go_above_118.go" ]] || { echo "no reflect2 >= 1.0.2 in Debian's package" >&2; exit 1; }
  rm -f "$reflect2"/*.go "$reflect2"/*.s
  cp "$fixed"/*.go "$reflect2/"
  find "$fixed" -maxdepth 1 -name '*.s' -exec cp {} "$reflect2/" \;
  rm -f "$cache/bin/kubelet" "$cache/bin/kube-apiserver" "$cache/bin/kube-controller-manager" \
    "$cache/bin/kube-scheduler"
fi
# The kubelet sets vm.overcommit_memory, vm.panic_on_oom, kernel.panic, kernel.panic_on_oops and
# kernel.keys.* on the host unless protectKernelDefaults makes it refuse to start when they
# differ. A test must neither change the host's kernel settings nor depend on them: it only warns
# (its own KernelTunableWarn behaviour, which no flag selects).
tunables=pkg/kubelet/cm/container_manager_linux.go
if grep -qP '^\tb := KernelTunableModify$' "$tunables"; then
  sed -i 's/^\tb := KernelTunableModify$/\tb := KernelTunableWarn \/\/ podstat tests\/cluster: never modify the host/' "$tunables"
  rm -f "$cache/bin/kubelet"
fi
grep -qP '^\tb := KernelTunableWarn' "$tunables" || { echo "$tunables: kernel tunables patch did not apply" >&2; exit 1; }
ldflags="-s -w -X k8s.io/component-base/version.gitVersion=v1.20.2 -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=20 -X k8s.io/client-go/pkg/version.gitVersion=v1.20.2"
for b in "${bins[@]}"; do
  [[ -x "$cache/bin/$b" ]] && continue
  SECONDS=0
  go build -ldflags "$ldflags" -o "$cache/bin/$b" "./cmd/$b"
  echo "$b built in ${SECONDS}s"
done
echo "$recipe" >"$cache/bin/.recipe"
