//! Pressure stall information per cgroup. Available on v2, and on hybrid hosts through the
//! `unified` hierarchy (cAdvisor reports none there).

use super::{CollectorDef, Ctx, Tracked, Vanished};
use crate::parse::psi;
use crate::snapshot::ContainerStats;

pub const DEF: CollectorDef = CollectorDef {
    name: "pressure",
    enabled: |c| c.pressure,
    collect,
};

fn collect(ctx: &mut Ctx, t: &Tracked, s: &mut ContainerStats) -> Result<(), Vanished> {
    let dir = t.dirs.unified.as_deref();
    s.cpu_pressure = ctx.parse(t, dir, "cpu.pressure", psi::pressure)?;
    // The three files come and go together (PSI on or off, a hybrid cgroup with or without a
    // unified twin), so one absent file saves two failed lookups.
    if s.cpu_pressure.is_none() && ctx.last_absent() {
        return Ok(());
    }
    s.memory_pressure = ctx.parse(t, dir, "memory.pressure", psi::pressure)?;
    s.io_pressure = ctx.parse(t, dir, "io.pressure", psi::pressure)?;
    Ok(())
}
