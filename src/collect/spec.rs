//! Limits and weights (`container_spec_*`). Always on: dashboards divide usage by these.

use super::{CollectorDef, Ctx, Tracked, Vanished};
use crate::discovery::{CgroupKind, CgroupMode, Target};
use crate::parse::{cpu, max_or_u64, memory::limit_or_zero, single_i64, single_u64};
use crate::snapshot::ContainerStats;

pub const DEF: CollectorDef = CollectorDef {
    name: "spec",
    enabled: |_| true,
    collect,
};

fn collect(ctx: &mut Ctx, t: &Tracked, s: &mut ContainerStats) -> Result<(), Vanished> {
    if t.kind == CgroupKind::Root {
        // The root has no limit files; cAdvisor reports the machine's memory and swap.
        let host = super::machine::host_memory(ctx);
        if let Some((mem, swap)) = host {
            s.spec_memory_limit = Some(mem);
            s.spec_memory_swap_limit = Some(swap);
        }
        if ctx.mode != CgroupMode::V2 {
            read_v1_cpu(ctx, t, s)?;
        }
        return Ok(());
    }
    if ctx.mode == CgroupMode::V2 {
        let dir = t.dirs.unified.as_deref();
        if let Some(max) = ctx.parse(t, dir, "cpu.max", cpu::cpu_max)? {
            s.spec_cpu_period = Some(max.period_usec);
            s.spec_cpu_quota = max.quota_usec;
        }
        if let Some(w) = ctx.parse(t, dir, "cpu.weight", single_u64)? {
            s.spec_cpu_shares = Some(cpu::weight_to_shares(w));
        }
        // Unlimited (`max`) is exported as 0, as cAdvisor does.
        s.spec_memory_limit = ctx
            .parse(t, dir, "memory.max", max_or_u64)?
            .map(|v| v.unwrap_or(0));
        s.spec_memory_swap_limit = ctx
            .parse(t, dir, "memory.swap.max", max_or_u64)?
            .map(|v| v.unwrap_or(0));
        s.spec_memory_reservation = ctx
            .parse(t, dir, "memory.min", max_or_u64)?
            .map(|v| v.unwrap_or(0));
        return Ok(());
    }
    read_v1_cpu(ctx, t, s)?;
    let mem = t.dirs.memory.as_deref();
    s.spec_memory_limit = ctx
        .parse(t, mem, "memory.limit_in_bytes", single_u64)?
        .map(limit_or_zero);
    s.spec_memory_swap_limit = ctx
        .parse(t, mem, "memory.memsw.limit_in_bytes", single_u64)?
        .map(limit_or_zero);
    s.spec_memory_reservation = ctx
        .parse(t, mem, "memory.soft_limit_in_bytes", single_u64)?
        .map(limit_or_zero);
    Ok(())
}

fn read_v1_cpu(ctx: &mut Ctx, t: &Target, s: &mut ContainerStats) -> Result<(), Vanished> {
    let dir = t.dirs.cpu.as_deref();
    s.spec_cpu_period = ctx.parse(t, dir, "cpu.cfs_period_us", single_u64)?;
    s.spec_cpu_quota = ctx
        .parse(t, dir, "cpu.cfs_quota_us", single_i64)?
        .and_then(|q| u64::try_from(q).ok());
    s.spec_cpu_shares = ctx.parse(t, dir, "cpu.shares", single_u64)?;
    Ok(())
}
