//! Host figures: `machine_cpu_cores`, `machine_memory_bytes`, `machine_swap_bytes`.

use super::Ctx;
use crate::parse::procfs;
use crate::reader::ReadError;
use crate::snapshot::MachineStats;

/// `root_memory`: MemTotal and SwapTotal as the root's spec read them in this collection
/// (`/proc/meminfo` is then not read a second time).
pub fn collect(ctx: &mut Ctx, root_memory: Option<(u64, u64)>) -> MachineStats {
    let mut m = MachineStats::default();
    let proc_root = ctx.proc_root.clone();
    match ctx
        .reader
        .read(&proc_root, "cpuinfo")
        .map(procfs::cpuinfo_processors)
    {
        Ok(Ok(n)) => m.cpu_cores = Some(n),
        Ok(Err(e)) => ctx.record_error("cpuinfo not understood", &proc_root.join("cpuinfo"), &e),
        Err(e) => report(ctx, &e),
    }
    if let Some((mem, swap)) = root_memory {
        m.memory_bytes = Some(mem);
        m.swap_bytes = Some(swap);
        return m;
    }
    match ctx
        .reader
        .read(&proc_root, "meminfo")
        .map(procfs::meminfo_totals)
    {
        Ok(Ok((mem, swap))) => {
            m.memory_bytes = Some(mem);
            m.swap_bytes = Some(swap);
        }
        Ok(Err(e)) => ctx.record_error("meminfo not understood", &proc_root.join("meminfo"), &e),
        Err(e) => report(ctx, &e),
    }
    m
}

fn report(ctx: &mut Ctx, e: &ReadError) {
    ctx.record_error("read failed", e.path(), e);
}
