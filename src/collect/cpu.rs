//! CPU usage and CFS throttling: v2 `cpu.stat`; v1 `cpuacct.usage`, `cpuacct.stat`, `cpu.stat`.

use super::{CollectorDef, Ctx, Tracked, Vanished};
use crate::discovery::CgroupMode;
use crate::parse::{cpu, single_u64};
use crate::reader::companion;
use crate::snapshot::ContainerStats;

pub const DEF: CollectorDef = CollectorDef {
    name: "cpu",
    enabled: |c| c.cpu,
    collect,
};

/// v1 `cpuacct.stat` counts in USER_HZ, which the kernel fixes at 100 for userspace.
const USER_HZ: f64 = 100.0;

fn collect(ctx: &mut Ctx, t: &Tracked, s: &mut ContainerStats) -> Result<(), Vanished> {
    if ctx.mode == CgroupMode::V2 {
        if let Some(st) = ctx.parse(t, t.dirs.unified.as_deref(), "cpu.stat", cpu::cpu_stat)? {
            s.cpu_usage_seconds = st.usage_usec.map(|v| v as f64 / 1e6);
            s.cpu_user_seconds = st.user_usec.map(|v| v as f64 / 1e6);
            s.cpu_system_seconds = st.system_usec.map(|v| v as f64 / 1e6);
            set_cfs(s, &st);
        }
        return Ok(());
    }
    let acct = t.dirs.cpuacct.as_deref();
    let mut usage_key = None;
    if let Some(ns) = ctx.parse(t, acct, "cpuacct.usage", |b| {
        let ns = single_u64(b)?;
        usage_key = Some(companion::key(b));
        Ok(ns)
    })? {
        s.cpu_usage_seconds = Some(ns as f64 / 1e9);
    }
    // Moves only when cpuacct.usage does (reader/companion.rs).
    if let Some(st) = ctx.parse_keyed(t, acct, "cpuacct.stat", usage_key, cpu::cpuacct_stat)? {
        s.cpu_user_seconds = Some(st.user_ticks as f64 / USER_HZ);
        s.cpu_system_seconds = Some(st.system_ticks as f64 / USER_HZ);
    }
    if let Some(st) = ctx.parse(t, t.dirs.cpu.as_deref(), "cpu.stat", cpu::cpu_stat)? {
        set_cfs(s, &st);
    }
    Ok(())
}

fn set_cfs(s: &mut ContainerStats, st: &cpu::CpuStat) {
    s.cfs_periods = st.nr_periods;
    s.cfs_throttled_periods = st.nr_throttled;
    s.cfs_throttled_seconds = st.throttled_ns.map(|v| v as f64 / 1e9);
}
