#!/usr/bin/env bash
# Boots a pure cgroup v2 guest (a Debian kernel, cgroup2 only) under QEMU, runs real workloads in
# kubelet-shaped cgroup trees there, freezes them and leaves podstat's output beside the kernel's
# own files, read just before and just after it. tests/all/vm_v2.rs compares every value.
#
#   tests/vm/run.sh OUT_DIR [PODSTAT_BINARY]
#
# Everything comes from Debian packages: qemu-system-x86, busybox-static, and the kernel package
# named in tests/vm/kernel (fetched with `apt-get download`, unpacked with `dpkg -x` under
# target/vm/, never installed). The guest has no network to the outside and its disks are sparse
# files under target/vm/; nothing on the host changes but that directory.
#
# Environment: PODSTAT_VM_KERNEL (a linux-image-*-amd64 package instead of tests/vm/kernel),
# PODSTAT_VM_ACCEL (tcg, kvm or auto: KVM when it boots within 20 s, else TCG; default auto),
# PODSTAT_VM_PODS (pods of the scale phase, 3 cgroups each; default 130).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
out="${1:?usage: tests/vm/run.sh OUT_DIR [PODSTAT_BINARY]}"
binary="${2:-}"
work="$repo/target/vm"
mkdir -p "$work" "$out"
out="$(cd "$out" && pwd)"

say() { echo "vm: $*" >&2; }
SECONDS=0

for tool in qemu-system-x86_64 busybox dpkg apt-get cpio; do
  command -v "$tool" >/dev/null || { say "needs $tool (apt-get install qemu-system-x86 busybox-static cpio)"; exit 2; }
done
busybox_bin="$(command -v busybox)"
# The dynamic busybox of a plain Debian cannot run alone in the initramfs.
if ldd "$busybox_bin" >/dev/null 2>&1; then
  say "$busybox_bin is dynamically linked; install busybox-static"
  exit 2
fi

if [[ -z "$binary" ]]; then
  (cd "$repo" && cargo build --quiet --bin podstat)
  binary="$repo/target/debug/podstat"
fi

# --- the kernel: a pinned Debian package, or the newest of its series when the archive has
# moved on (Debian keeps only the current ABI of a stable release).
package="${PODSTAT_VM_KERNEL:-$(grep -v '^#' "$here/kernel" | head -n1)}"
kdir="$work/$package"
if [[ ! -d "$kdir/boot" ]]; then
  if ! apt-cache show "$package" >/dev/null 2>&1 && [[ $EUID -eq 0 ]]; then
    apt-get update -qq || true # the lists of a fresh machine may predate the package
  fi
  if ! apt-cache show "$package" >/dev/null 2>&1; then
    series="$(sed -E 's/^(linux-image-[0-9]+\.[0-9]+\.[0-9]+)-[0-9]+-amd64$/\1/' <<<"$package")"
    newest="$(apt-cache search --names-only "^$series-[0-9]+-amd64\$" | cut -d' ' -f1 | sort -V | tail -n1)"
    [[ -n "$newest" ]] || { say "$package is not in the apt sources, nor any $series-*-amd64 (apt-get update?)"; exit 2; }
    say "$package is no longer in the archive; using $newest (update tests/vm/kernel)"
    package="$newest"
    kdir="$work/$package"
  fi
  if [[ ! -d "$kdir/boot" ]]; then
    rm -rf "$kdir.tmp" && mkdir -p "$kdir.tmp"
    (cd "$kdir.tmp" && apt-get download -q "$package" 2>&1 | grep -v '^W: Download is performed unsandboxed' >&2 || true)
    deb="$(ls "$kdir.tmp"/*.deb)"
    dpkg -x "$deb" "$kdir.tmp/root"
    mv "$kdir.tmp/root" "$kdir"
    rm -rf "$kdir.tmp"
  fi
fi
vmlinuz="$(ls "$kdir"/boot/vmlinuz-*)"
kver="${vmlinuz##*/vmlinuz-}"
moddir="$kdir/lib/modules/$kver/kernel"
say "kernel $package ($kver)"

# --- the initramfs: busybox, podstat and the libraries it links, the modules for the disks and
# veth (dependencies first, read from each module's own modinfo section), and the guest's init.
ir="$work/initramfs"
rm -rf "$ir" && mkdir -p "$ir"/{bin,dev,proc,sys,tmp,modules,out,etc}
cp "$busybox_bin" "$ir/bin/busybox"
objcopy --strip-debug "$binary" "$ir/bin/podstat" 2>/dev/null || cp "$binary" "$ir/bin/podstat"
while read -r lib; do
  mkdir -p "$ir$(dirname "$lib")"
  cp -L "$lib" "$ir$lib"
done < <(ldd "$binary" | grep -oE '/[^ ]+\.so[^ ]*' | sort -u)
cp "$here/guest/init" "$ir/init"
chmod 755 "$ir/init" "$ir/bin/podstat"

declare -A loaded=()
order=()
load() {
  local name="$1" file deps dep
  [[ -n "${loaded[$name]:-}" ]] && return
  loaded[$name]=1
  file="$(find "$moddir" -name "$name.ko" -print -quit)"
  [[ -n "$file" ]] || return 0 # built into this kernel
  deps="$(grep -a -o 'depends=[a-z0-9_,-]*' "$file" | head -n1 | cut -d= -f2 | tr ',' ' ')"
  for dep in $deps; do load "$dep"; done
  cp "$file" "$ir/modules/$name.ko"
  order+=("$name")
}
for m in virtio_pci virtio_blk veth; do load "$m"; done
printf '%s\n' "${order[@]}" >"$ir/modules/order"
(cd "$ir" && find . | cpio -o -H newc --quiet | gzip -1 >"$work/initrd.gz")

# --- disks: one for block IO, one for swap, one the guest writes its results to (a tar).
disks() {
  rm -f "$work"/{io,swap,result}.img
  truncate -s 64M "$work/io.img"
  truncate -s 96M "$work/swap.img"
  truncate -s 256M "$work/result.img"
}
say "initramfs $(du -h "$work/initrd.gz" | cut -f1) ready after ${SECONDS}s"

boot() { # ACCEL TIMEOUT_S, in a subshell: it execs, so `(boot ...) &` makes $! timeout's PID.
  local accel="$1" limit="$2"
  exec timeout "$limit" qemu-system-x86_64 -accel "$accel" -cpu max -smp 2 -m 1536 \
    -nographic -no-reboot -nic none \
    -kernel "$vmlinuz" -initrd "$work/initrd.gz" \
    -append "console=ttyS0 panic=-1 quiet cgroup_no_v1=all systemd.unified_cgroup_hierarchy=1 ipv6.disable=1 podstat.pods=${PODSTAT_VM_PODS:-130}" \
    -drive "file=$work/io.img,if=virtio,format=raw,cache=none" \
    -drive "file=$work/swap.img,if=virtio,format=raw" \
    -drive "file=$work/result.img,if=virtio,format=raw" \
    </dev/null >"$work/console.log" 2>&1
}

accel="${PODSTAT_VM_ACCEL:-auto}"
started=$SECONDS
pid=""
# A guest left behind would spin a CPU for its whole timeout.
trap 'if [[ -n "$pid" ]]; then kill "$pid" 2>/dev/null || true; fi' EXIT
if [[ "$accel" == auto ]]; then
  accel=tcg
  # Some machines expose a /dev/kvm that cannot boot a stock kernel (the vCPU spins): try it
  # with a bound, then fall back to emulation.
  if [[ -w /dev/kvm ]]; then
    disks
    (boot kvm 600) &
    pid=$!
    for _ in $(seq 20); do
      sleep 1
      grep -q 'podstat-vm: init' "$work/console.log" 2>/dev/null && { accel=kvm; break; }
      kill -0 "$pid" 2>/dev/null || break
    done
    if [[ "$accel" == kvm ]]; then
      wait "$pid" || true
    else
      kill "$pid" 2>/dev/null || true
      wait "$pid" 2>/dev/null || true
      pid=""
      say "KVM did not boot the guest within 20 s; using TCG"
    fi
  fi
  if [[ "$accel" == tcg ]]; then
    started=$SECONDS
    disks
    (boot tcg 1200) || true
  fi
else
  disks
  (boot "$accel" 1200) || true
fi
say "guest ($accel) ran $((SECONDS - started))s"

rm -rf "$out" && mkdir -p "$out"
cp "$work/console.log" "$out/console.log"
if ! tar -xf "$work/result.img" -C "$out" 2>/dev/null || [[ ! -f "$out/DONE" ]]; then
  say "the guest left no results; its console:"
  tail -n 60 "$work/console.log" >&2
  exit 1
fi
echo "$accel" >"$out/accel"
say "results in $out; ${SECONDS}s in all"
