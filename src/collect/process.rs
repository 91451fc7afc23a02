//! Process and thread counts: `cgroup.procs` (this cgroup only, as cAdvisor counts) and
//! `pids.current`/`pids.max` (hierarchical).

use super::{CollectorDef, Ctx, Tracked, Vanished};
use crate::discovery::CgroupMode;
use crate::parse::{cgroup_procs, max_or_u64, pids};
use crate::snapshot::ContainerStats;

pub const DEF: CollectorDef = CollectorDef {
    name: "process",
    enabled: |c| c.process,
    collect,
};

fn collect(ctx: &mut Ctx, t: &Tracked, s: &mut ContainerStats) -> Result<(), Vanished> {
    let (procs_dir, pids_dir) = if ctx.mode == CgroupMode::V2 {
        (t.dirs.unified.as_deref(), t.dirs.unified.as_deref())
    } else {
        (
            t.dirs.cpu.as_deref().or(t.dirs.cpuacct.as_deref()),
            t.dirs.pids.as_deref(),
        )
    };
    let keep = ctx.keep_pids;
    let mut listed = std::mem::take(&mut ctx.pids);
    listed.clear();
    let parsed = ctx.parse(t, procs_dir, "cgroup.procs", |b| {
        let counted = cgroup_procs(b)?;
        if keep {
            listed.extend(pids(b));
        }
        Ok(counted)
    })?;
    if let Some((count, first)) = parsed {
        s.processes = Some(count);
        s.first_pid = first;
        ctx.pids_listed = keep;
    }
    ctx.pids = listed;
    s.threads = ctx.parse(t, pids_dir, "pids.current", crate::parse::single_u64)?;
    // `max` (no limit) is exported as 0, as cAdvisor does.
    s.threads_max = ctx
        .parse(t, pids_dir, "pids.max", max_or_u64)?
        .map(|v| v.unwrap_or(0));
    Ok(())
}
