//! Host figures: CPUs, cores and sockets, memory and swap, and the host's identity (boot ID,
//! machine ID, system UUID, kernel and OS version), read at most every [`super::HOST_REFRESH`].

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use super::{fresh, Ctx, HostCache};
use crate::parse::{procfs, ParseError};
use crate::reader::ReadError;
use crate::snapshot::{HostIdentity, MachineStats};

/// MemTotal and SwapTotal come from [`host_memory`], which the root's spec shares, so
/// `/proc/meminfo` is not read twice in a collection.
pub fn collect(ctx: &mut Ctx) -> MachineStats {
    let errors_before = ctx.errors.parse + ctx.errors.io;
    let cpu = host_figure(ctx, |h| &mut h.cpu, "cpuinfo", procfs::cpu_topology);
    let memory = host_memory(ctx);
    let identity = match fresh(&ctx.host.identity) {
        Some(identity) => identity,
        None => {
            let identity = Arc::new(host_identity(ctx));
            ctx.host.identity = Some((Instant::now(), Arc::clone(&identity)));
            identity
        }
    };
    MachineStats {
        cpu,
        memory_bytes: memory.map(|(mem, _)| mem),
        swap_bytes: memory.map(|(_, swap)| swap),
        identity,
        failed: cpu.is_none()
            || memory.is_none()
            || ctx.errors.parse + ctx.errors.io > errors_before,
    }
}

/// The host's identity. Each part is optional on some hosts (DMI is root-only and absent in
/// many VMs; a container sees the host's machine ID only where it is mounted), so a missing
/// file is an empty label, not an error.
fn host_identity(ctx: &Ctx) -> HostIdentity {
    let text = |path: &Path| {
        std::fs::read(path)
            .map(|b| String::from_utf8_lossy(crate::parse::trim(&b)).into_owned())
            .unwrap_or_default()
    };
    let os_version = std::fs::read(&ctx.os_release_file)
        .ok()
        .and_then(|b| procfs::os_release_pretty_name(&b))
        .unwrap_or_default();
    HostIdentity {
        boot_id: text(&ctx.proc_root.join("sys/kernel/random/boot_id")),
        machine_id: text(&ctx.machine_id_file),
        // cAdvisor's order (utils/sysfs GetSystemUUID): DMI, the device tree (POWER), and last
        // /etc/machine-id (meant for s390x, reached on every host without the others: VMs
        // without DMI, such as Firecracker's). The kubelet shows the machine ID there.
        system_uuid: [
            ctx.sys_root.join("class/dmi/id/product_uuid"),
            ctx.proc_root.join("device-tree/system-id"),
            ctx.proc_root.join("device-tree/vm,uuid"),
            ctx.machine_id_file.clone(),
        ]
        .iter()
        .map(|p| text(p))
        .find(|v| !v.is_empty())
        .unwrap_or_default(),
        kernel_version: text(&ctx.proc_root.join("sys/kernel/osrelease")),
        os_version,
    }
}

/// MemTotal and SwapTotal in bytes. The machine figures and the root's spec both ask.
pub fn host_memory(ctx: &mut Ctx) -> Option<(u64, u64)> {
    host_figure(ctx, |h| &mut h.memory, "meminfo", procfs::meminfo_totals)
}

/// A host figure from its place in [`Ctx::host`] while fresh there, else `/proc/<file>` read,
/// parsed and kept there; a file that cannot be read or understood is counted and logged.
fn host_figure<T: Copy>(
    ctx: &mut Ctx,
    kept: fn(&mut HostCache) -> &mut Option<(Instant, T)>,
    file: &str,
    parse: fn(&[u8]) -> Result<T, ParseError>,
) -> Option<T> {
    if let Some(value) = fresh(kept(&mut ctx.host)) {
        return Some(value);
    }
    let proc_root = ctx.proc_root.clone();
    match ctx.reader.read(&proc_root, file).map(parse) {
        Ok(Ok(value)) => {
            *kept(&mut ctx.host) = Some((Instant::now(), value));
            Some(value)
        }
        Ok(Err(e)) => {
            let what = format!("{file} not understood");
            ctx.record_error(&what, &proc_root.join(file), &e);
            None
        }
        Err(e) => {
            report(ctx, &e);
            None
        }
    }
}

fn report(ctx: &mut Ctx, e: &ReadError) {
    ctx.record_read_error("read failed", e);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collect::HOST_REFRESH;
    use crate::discovery::CgroupMode;
    use crate::reader::Reader;
    use std::time::Duration;

    fn fixture(name: &str) -> Vec<u8> {
        let path = format!(
            "{}/tests/fixtures/proc-node/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    #[test]
    fn host_figures_are_kept_for_a_while_then_read_again() {
        let dir = tempfile::tempdir().expect("tempdir");
        let write = |cpus: usize, mem_kib: u64| {
            let one = String::from_utf8(fixture("cpuinfo")).expect("utf8");
            let block = one.split("\n\n").next().expect("one processor").to_string();
            let all: Vec<String> = (0..cpus)
                .map(|i| block.replacen("processor\t: 0", &format!("processor\t: {i}"), 1))
                .collect();
            std::fs::write(dir.path().join("cpuinfo"), all.join("\n\n") + "\n").expect("write");
            let meminfo: Vec<String> = String::from_utf8(fixture("meminfo"))
                .expect("utf8")
                .lines()
                .map(|l| match l.starts_with("MemTotal:") {
                    true => format!("MemTotal:       {mem_kib} kB"),
                    false => l.to_string(),
                })
                .collect();
            std::fs::write(dir.path().join("meminfo"), meminfo.join("\n") + "\n").expect("write");
        };
        let mut ctx = Ctx::new(
            CgroupMode::V2,
            dir.path().to_path_buf(),
            dir.path().to_path_buf(),
            Reader::new(None),
        );
        write(2, 4096);
        let first = collect(&mut ctx);
        assert_eq!(
            (first.cpu.map(|c| c.logical), first.memory_bytes),
            (Some(2), Some(4096 * 1024))
        );
        assert!(!first.failed);
        // Hotplug within the refresh interval: the kept figures are served.
        write(3, 8192);
        let kept = collect(&mut ctx);
        assert_eq!(
            (kept.cpu.map(|c| c.logical), kept.memory_bytes),
            (Some(2), Some(4096 * 1024))
        );
        // Once they are older than the interval, the files are read again.
        let long_ago = Instant::now().checked_sub(HOST_REFRESH + Duration::from_secs(1));
        let Some(long_ago) = long_ago else { return };
        ctx.host.cpu = ctx.host.cpu.map(|(_, v)| (long_ago, v));
        ctx.host.memory = ctx.host.memory.map(|(_, v)| (long_ago, v));
        let again = collect(&mut ctx);
        assert_eq!(
            (again.cpu.map(|c| c.logical), again.memory_bytes),
            (Some(3), Some(8192 * 1024))
        );
        // A figure that cannot be read is machine_scrape_error.
        std::fs::remove_file(dir.path().join("meminfo")).expect("rm");
        ctx.host.memory = None;
        assert!(collect(&mut ctx).failed);
    }

    #[test]
    fn the_hosts_identity_labels_come_from_its_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let write = |rel: &str, body: &str| {
            let path = dir.path().join(rel);
            std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
            std::fs::write(path, body).expect("write");
        };
        write(
            "proc/sys/kernel/random/boot_id",
            "3f08706e-fbd4-4afe-ab2e-cb273a74d98b\n",
        );
        write("proc/sys/kernel/osrelease", "6.12.54-linuxkit\n");
        write("sys/class/dmi/id/product_uuid", "E366BD4B-77B9-D6BE\n");
        write("etc/machine-id", "e366bd4b77b9d6be2d67552f69964f40\n");
        write(
            "etc/os-release",
            "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\n",
        );
        let mut ctx = Ctx::new(
            CgroupMode::V2,
            dir.path().join("proc"),
            dir.path().join("sys"),
            Reader::new(None),
        );
        ctx.machine_id_file = dir.path().join("etc/machine-id");
        ctx.os_release_file = dir.path().join("etc/os-release");
        let id = host_identity(&ctx);
        assert_eq!(id.boot_id, "3f08706e-fbd4-4afe-ab2e-cb273a74d98b");
        assert_eq!(id.machine_id, "e366bd4b77b9d6be2d67552f69964f40");
        assert_eq!(id.system_uuid, "E366BD4B-77B9-D6BE");
        assert_eq!(id.kernel_version, "6.12.54-linuxkit");
        assert_eq!(id.os_version, "Debian GNU/Linux 12 (bookworm)");
        // Without DMI (a Firecracker VM: the kubelet's cAdvisor says the machine ID).
        std::fs::remove_file(dir.path().join("sys/class/dmi/id/product_uuid")).expect("rm");
        assert_eq!(
            host_identity(&ctx).system_uuid,
            "e366bd4b77b9d6be2d67552f69964f40"
        );
        write("proc/device-tree/vm,uuid", "a1b2c3\n");
        assert_eq!(host_identity(&ctx).system_uuid, "a1b2c3");
        ctx.machine_id_file = dir.path().join("etc/absent");
        assert_eq!(host_identity(&ctx).machine_id, "");
    }
}
