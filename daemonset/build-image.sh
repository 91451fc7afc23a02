#!/usr/bin/env bash
# Builds podstat's image offline: a release build (cargo), a root filesystem of the stripped
# binary and the shared libraries `ldd` lists (glibc, libgcc_s, libm, the loader), a passwd
# entry for the image's user, and `buildah build` (else `podman build`) of Containerfile FROM
# scratch. Prints the image's size.
# Usage: daemonset/build-image.sh [TAG]   (default podstat:latest); push with
#   podman push TAG registry.example.com/podstat:VERSION
set -euo pipefail
cd "$(dirname "$0")/.."
TAG=${1:-podstat:latest}
cargo build --release --locked -q
BIN=target/release/podstat
CTX=$(mktemp -d)
trap 'rm -rf "$CTX"' EXIT
ROOT=$CTX/rootfs
mkdir -p "$ROOT/etc"
objcopy --strip-all "$BIN" "$ROOT/podstat"
for lib in $(ldd "$BIN" | grep -o '/[^ ]*'); do
  mkdir -p "$ROOT$(dirname "$lib")"
  cp -L "$lib" "$ROOT$lib"
done
printf 'nobody:x:65534:65534:nobody:/:/podstat\n' > "$ROOT/etc/passwd"
printf 'nogroup:x:65534:\n' > "$ROOT/etc/group"
cp Containerfile "$CTX/"
if command -v buildah >/dev/null; then
  buildah build --quiet --layers=false -f "$CTX/Containerfile" -t "$TAG" "$CTX" >/dev/null
  BUILDER=podman; command -v podman >/dev/null || BUILDER=buildah
else
  podman build --quiet -f "$CTX/Containerfile" -t "$TAG" "$CTX" >/dev/null
  BUILDER=podman
fi
if [ "$BUILDER" = podman ]; then
  echo "built $TAG: $(podman image inspect --format '{{.Size}}' "$TAG") bytes"
else
  echo "built $TAG: $(du -sb "$ROOT" | cut -f1) bytes of files"
fi
