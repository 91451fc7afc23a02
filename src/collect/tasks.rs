//! Task states and load averages: `container_tasks_state` and `container_cpu_load_average_10s`
//! / `container_cpu_load_d_average_10s`, counted from the state letter of every thread of the
//! cgroup (`tasks` on v1, `cgroup.threads` on v2; `/proc/<tid>/stat`).
//!
//! cAdvisor fills these from netlink taskstats only with `--enable_load_reader`, which the
//! kubelet never sets: its `/metrics/cadvisor` writes them as constant zeros. podstat writes
//! them only when it measures them, behind `[collectors] tasks` (off by default: it reads one
//! file per thread per scrape). Threads in the `D` state count as uninterruptible; whether one
//! waits on IO is not visible in `/proc` (taskstats learns it from delay accounting), so
//! `state="iowaiting"` is not written.
//!
//! The load averages smooth the running (`R`) and uninterruptible (`D`) counts over a
//! 10-second time constant, in milli-tasks as cAdvisor writes them: with scrapes 10 s or more
//! apart, each is close to the count at the scrape.

use std::time::Instant;

use super::{CollectorDef, Ctx, Tracked, Vanished};
use crate::discovery::CgroupMode;
use crate::parse::{pids, procfs};
use crate::snapshot::{ContainerStats, TaskStates};

pub const DEF: CollectorDef = CollectorDef {
    name: "tasks",
    enabled: |c| c.tasks,
    collect,
};

/// The smoothed running and uninterruptible counts of a cgroup.
#[derive(Debug, Clone, Copy)]
pub struct LoadAverage {
    at: Instant,
    running: f64,
    uninterruptible: f64,
}

/// cAdvisor's time constant: the "10s" of the family names.
const TAU_SECONDS: f64 = 10.0;

fn collect(ctx: &mut Ctx, t: &Tracked, s: &mut ContainerStats) -> Result<(), Vanished> {
    let (dir, file) = if ctx.mode == CgroupMode::V2 {
        (t.dirs.unified.as_deref(), "cgroup.threads")
    } else {
        (t.dirs.cpu.as_deref().or(t.dirs.cpuacct.as_deref()), "tasks")
    };
    let Some(threads) = ctx.parse(t, dir, file, |b| Ok(pids(b).collect::<Vec<u32>>()))? else {
        return Ok(());
    };
    let mut states = TaskStates::default();
    let mut path = ctx.proc_root.clone();
    for tid in threads {
        path.push(tid.to_string());
        // A thread that exited since the listing is not counted.
        if let Ok(bytes) = ctx.reader.read(&path, "stat") {
            match procfs::stat_state(bytes) {
                Ok(b'R') => states.running += 1,
                Ok(b'S') => states.sleeping += 1,
                Ok(b'D') => states.uninterruptible += 1,
                Ok(b'T' | b't') => states.stopped += 1,
                _ => {}
            }
        }
        path.pop();
    }
    s.tasks = Some(states);
    let now = Instant::now();
    let mut load = t.state.load.lock().unwrap_or_else(|p| p.into_inner());
    let (running, uninterruptible) = (states.running as f64, states.uninterruptible as f64);
    let next = match *load {
        None => LoadAverage {
            at: now,
            running,
            uninterruptible,
        },
        Some(last) => {
            let decay = (-(now - last.at).as_secs_f64() / TAU_SECONDS).exp();
            LoadAverage {
                at: now,
                running: last.running * decay + running * (1.0 - decay),
                uninterruptible: last.uninterruptible * decay + uninterruptible * (1.0 - decay),
            }
        }
    };
    *load = Some(next);
    s.load_average = Some((next.running * 1000.0, next.uninterruptible * 1000.0));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_average_moves_toward_the_count_with_a_ten_second_constant() {
        let start = LoadAverage {
            at: Instant::now(),
            running: 0.0,
            uninterruptible: 0.0,
        };
        let decay = (-10.0f64 / TAU_SECONDS).exp();
        // After one time constant at a steady 4 running tasks: 4 * (1 - 1/e).
        let after = start.running * decay + 4.0 * (1.0 - decay);
        assert!((after - 2.528).abs() < 0.001, "{after}");
    }
}
