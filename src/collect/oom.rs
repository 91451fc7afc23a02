//! OOM kills from cgroup files (v2 `memory.events`, v1 `memory.oom_control`), not /dev/kmsg:
//! the kernel keeps the count per cgroup, so it survives podstat restarts and needs no
//! privileged device.

use super::{CollectorDef, Ctx, Tracked, Vanished};
use crate::discovery::CgroupMode;
use crate::parse::memory;
use crate::snapshot::ContainerStats;

pub const DEF: CollectorDef = CollectorDef {
    name: "oom",
    enabled: |c| c.oom,
    collect,
};

fn collect(ctx: &mut Ctx, t: &Tracked, s: &mut ContainerStats) -> Result<(), Vanished> {
    if ctx.mode == CgroupMode::V2 {
        if let Some(e) = ctx.parse(
            t,
            t.dirs.unified.as_deref(),
            "memory.events",
            memory::memory_events,
        )? {
            s.oom_kills = e.oom_kill;
            s.memory_events_high = e.high;
            s.memory_events_max = e.max;
        }
    } else {
        s.oom_kills = ctx
            .parse(
                t,
                t.dirs.memory.as_deref(),
                "memory.oom_control",
                memory::oom_control_kills,
            )?
            .flatten();
    }
    Ok(())
}
