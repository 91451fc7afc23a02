//! Block IO per device: v2 `io.stat`, v1 `blkio.throttle.*_recursive`.
//!
//! On v1 podstat reads the throttle files (every bio passes the throttle layer whatever the
//! scheduler), not cAdvisor's BFQ/CFQ-first chain: on blk-mq kernels those scheduler files only
//! count IO that went through that scheduler.

use super::{CollectorDef, Ctx, Tracked, Vanished};
use crate::discovery::CgroupMode;
use crate::parse::blkio::{self, BlkioKind, DeviceIo};
use crate::reader::companion;
use crate::snapshot::{ContainerStats, DeviceStats};

pub const DEF: CollectorDef = CollectorDef {
    name: "diskio",
    enabled: |c| c.diskio,
    collect,
};

fn collect(ctx: &mut Ctx, t: &Tracked, s: &mut ContainerStats) -> Result<(), Vanished> {
    let mut devices: Vec<DeviceIo> = Vec::new();
    let found = if ctx.mode == CgroupMode::V2 {
        ctx.parse(t, t.dirs.unified.as_deref(), "io.stat", |b| {
            blkio::io_stat(b, &mut devices)
        })?
        .is_some()
    } else {
        let dir = t.dirs.blkio.as_deref();
        let mut found = false;
        for (bytes_file, ops_file) in [
            (
                "blkio.throttle.io_service_bytes_recursive",
                "blkio.throttle.io_serviced_recursive",
            ),
            (
                "blkio.throttle.io_service_bytes",
                "blkio.throttle.io_serviced",
            ),
        ] {
            // The operations first: the bytes move only when they do (reader/companion.rs).
            let mut ops_key = None;
            ctx.parse(t, dir, ops_file, |b| {
                let parsed = blkio::blkio_v1(b, BlkioKind::Ops, &mut devices);
                ops_key = parsed.is_ok().then(|| companion::key(b));
                parsed
            })?;
            if ctx
                .parse_keyed(t, dir, bytes_file, ops_key, |b| {
                    blkio::blkio_v1(b, BlkioKind::Bytes, &mut devices)
                })?
                .is_some()
            {
                found = true;
                break;
            }
            devices.clear();
        }
        found
    };
    if found {
        // Devices with no IO at all are noise (v1 lists every loop device).
        s.devices = devices
            .into_iter()
            .filter(|d| d.read_bytes | d.write_bytes | d.reads | d.writes != 0)
            .map(|io| {
                let labels = ctx.devices.labels(io.major, io.minor);
                DeviceStats {
                    device: labels.name,
                    major: labels.major,
                    minor: labels.minor,
                    io,
                }
            })
            .collect();
    }
    Ok(())
}
