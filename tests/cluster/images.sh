#!/usr/bin/env bash
# Writes the cluster's three images as OCI archives into $1, for `ctr images import`: no registry
# is reached. pause and busybox are assembled from Debian's busybox-static; podstat is the image
# daemonset/build-image.sh builds from this checkout ($PODSTAT_IMAGE, built here when absent).
set -euo pipefail
cd "$(dirname "$0")/../.."
out="$1"
mkdir -p "$out"
busybox=/bin/busybox
[[ -x "$busybox" ]] && "$busybox" --list >/dev/null || { echo "images.sh: needs busybox-static" >&2; exit 1; }

# One image per call: a root with busybox and its applets, the given entrypoint.
busybox_image() { # name entrypoint-json archive
  local ctx root c
  ctx="$(mktemp -d)"
  root="$ctx/rootfs"
  mkdir -p "$root/bin" "$root/tmp" "$root/www"
  cp "$busybox" "$root/bin/busybox"
  for applet in $("$busybox" --list); do
    [[ "$applet" == busybox ]] || ln -s busybox "$root/bin/$applet"
  done
  c="$(buildah from scratch)"
  buildah copy --quiet "$c" "$root" / >/dev/null
  buildah config --entrypoint "$2" --env PATH=/bin "$c"
  buildah commit --quiet "$c" "$1" >/dev/null
  buildah rm "$c" >/dev/null
  rm -f "$3"
  buildah push --quiet "$1" "oci-archive:$3:$1"
  rm -rf "$ctx"
}
# The sandbox's process only holds the pod's namespaces open, as the real pause does.
busybox_image localhost/pause:ci '["/bin/sleep", "2147483647"]' "$out/pause.tar"
busybox_image localhost/busybox:ci '["/bin/sh"]' "$out/busybox.tar"

image="${PODSTAT_IMAGE:-}"
if [[ -z "$image" ]] || ! buildah inspect --type image "$image" >/dev/null 2>&1; then
  image=localhost/podstat:cluster
  daemonset/build-image.sh "$image"
fi
rm -f "$out/podstat.tar"
buildah push --quiet "$image" "oci-archive:$out/podstat.tar:localhost/podstat:ci"
ls -la "$out"
