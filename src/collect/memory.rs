//! Memory usage, working set and `memory.stat` breakdown.

use super::{CollectorDef, Ctx, Tracked, Vanished};
use crate::discovery::{CgroupKind, CgroupMode};
use crate::parse::{memory, single_u64};
use crate::snapshot::ContainerStats;

pub const DEF: CollectorDef = CollectorDef {
    name: "memory",
    enabled: |c| c.memory,
    collect,
};

fn collect(ctx: &mut Ctx, t: &Tracked, s: &mut ContainerStats) -> Result<(), Vanished> {
    let stat = if ctx.mode == CgroupMode::V2 {
        let dir = t.dirs.unified.as_deref();
        let stat = ctx.parse(t, dir, "memory.stat", memory::memory_stat_v2)?;
        s.memory_usage = if t.kind == CgroupKind::Root {
            // The v2 root has no memory.current.
            stat.and_then(|st| st.anon_plus_file)
        } else {
            ctx.parse(t, dir, "memory.current", single_u64)?
        };
        s.memory_swap = ctx.parse(t, dir, "memory.swap.current", single_u64)?;
        s.memory_max_usage = ctx.parse(t, dir, "memory.peak", single_u64)?;
        stat
    } else {
        let dir = t.dirs.memory.as_deref();
        s.memory_usage = ctx.parse(t, dir, "memory.usage_in_bytes", single_u64)?;
        s.memory_max_usage = ctx.parse(t, dir, "memory.max_usage_in_bytes", single_u64)?;
        s.memory_failcnt = ctx.parse(t, dir, "memory.failcnt", single_u64)?;
        s.memory_kernel = ctx.parse(t, dir, "memory.kmem.usage_in_bytes", single_u64)?;
        let hierarchical = ctx.memory_hierarchical;
        let stat = ctx.parse(t, dir, "memory.stat", |b| {
            memory::memory_stat_v1(b, hierarchical)
        })?;
        s.memory_swap = stat.and_then(|st| st.swap);
        stat
    };
    if let Some(st) = stat {
        s.memory_rss = st.rss;
        s.memory_cache = st.cache;
        s.memory_mapped_file = st.mapped_file;
        s.memory_pgfault = st.pgfault;
        s.memory_pgmajfault = st.pgmajfault;
        s.memory_active_file = st.active_file;
        s.memory_inactive_file = st.inactive_file;
        if st.kernel.is_some() {
            s.memory_kernel = st.kernel;
        }
    }
    // Working set = usage - inactive_file, floored at 0 (the kubelet's eviction signal).
    s.memory_working_set = s
        .memory_usage
        .map(|u| u.saturating_sub(s.memory_inactive_file.unwrap_or(0)));
    Ok(())
}
