//! Host figures: `machine_cpu_cores`, `machine_memory_bytes`, `machine_swap_bytes`, read at
//! most every [`super::HOST_REFRESH`].

use std::time::Instant;

use super::{fresh, Ctx, HostCache};
use crate::parse::{procfs, ParseError};
use crate::reader::ReadError;
use crate::snapshot::MachineStats;

/// MemTotal and SwapTotal come from [`host_memory`], which the root's spec shares, so
/// `/proc/meminfo` is not read twice in a collection.
pub fn collect(ctx: &mut Ctx) -> MachineStats {
    let cpu_cores = host_figure(
        ctx,
        |h| &mut h.cpu_cores,
        "cpuinfo",
        procfs::cpuinfo_processors,
    );
    let memory = host_memory(ctx);
    MachineStats {
        cpu_cores,
        memory_bytes: memory.map(|(mem, _)| mem),
        swap_bytes: memory.map(|(_, swap)| swap),
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
    ctx.record_error("read failed", e.path(), e);
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
            (first.cpu_cores, first.memory_bytes),
            (Some(2), Some(4096 * 1024))
        );
        // Hotplug within the refresh interval: the kept figures are served.
        write(3, 8192);
        let kept = collect(&mut ctx);
        assert_eq!(
            (kept.cpu_cores, kept.memory_bytes),
            (Some(2), Some(4096 * 1024))
        );
        // Once they are older than the interval, the files are read again.
        let long_ago = Instant::now().checked_sub(HOST_REFRESH + Duration::from_secs(1));
        let Some(long_ago) = long_ago else { return };
        ctx.host.cpu_cores = ctx.host.cpu_cores.map(|(_, v)| (long_ago, v));
        ctx.host.memory = ctx.host.memory.map(|(_, v)| (long_ago, v));
        let again = collect(&mut ctx);
        assert_eq!(
            (again.cpu_cores, again.memory_bytes),
            (Some(3), Some(8192 * 1024))
        );
    }
}
