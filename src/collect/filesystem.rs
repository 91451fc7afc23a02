//! The host's filesystems on the root row, as the kubelet's cAdvisor reports them: capacity,
//! usage and inodes (`statvfs` of each mounted filesystem of a reported type) and the block
//! device counters of `/proc/diskstats` for those on a block device.
//!
//! `statvfs` of a network filesystem whose server is gone blocks for as long as the server
//! stays away, so it never runs on the scrape path: a scrape that finds the figures older than
//! [`USAGE_REFRESH`] starts one refresh on a thread of its own and serves what the last one
//! found (none before the first has finished). A refresh still stuck on a dead mount is not
//! started again; its filesystems keep their last figures. The mount list comes from PID 1's
//! mountinfo (the host's mounts), re-read with the other host figures.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{fresh, Ctx};
use crate::discovery::CgroupKind;
use crate::parse::procfs::{self, Filesystem};
use crate::snapshot::{ContainerSample, FsStats, FsUsage};

/// How old the `statvfs` figures may get before a scrape asks for new ones. Capacity changes
/// with resizes, usage slowly; cAdvisor refreshes its filesystem figures every minute.
pub const USAGE_REFRESH: Duration = Duration::from_secs(10);

/// What the collector keeps between collections.
#[derive(Debug, Default)]
pub struct FsCache {
    /// The reported filesystems of the host's mount table.
    mounts: Option<(Instant, Arc<Vec<Filesystem>>)>,
    usage: Arc<Mutex<UsageTable>>,
}

#[derive(Debug, Default)]
struct UsageTable {
    by_device: HashMap<String, FsUsage>,
    refreshed_at: Option<Instant>,
    in_flight: bool,
}

/// `rootfs`: where the host's root directory is visible (`/`, or the host's `/` mounted into
/// podstat's container).
pub fn collect(ctx: &mut Ctx, samples: &mut [ContainerSample], rootfs: &Path) {
    let Some(root) = samples
        .iter()
        .position(|s| s.target.kind == CgroupKind::Root)
    else {
        return;
    };
    let mounts = match fresh(&ctx.fs.mounts) {
        Some(mounts) => mounts,
        None => {
            let mounts = Arc::new(host_filesystems(ctx));
            ctx.fs.mounts = Some((Instant::now(), Arc::clone(&mounts)));
            mounts
        }
    };
    refresh_usage_in_background(&ctx.fs.usage, &mounts, rootfs);
    wait_for_the_first_refresh(&ctx.fs.usage);
    let proc_root = ctx.proc_root.clone();
    let disks: Vec<procfs_core::DiskStat> = match ctx.reader.read(&proc_root, "diskstats") {
        Ok(bytes) => match procfs::diskstats(bytes) {
            Ok(disks) => disks,
            Err(e) => {
                ctx.record_error("diskstats not understood", &proc_root.join("diskstats"), &e);
                Vec::new()
            }
        },
        Err(e) => {
            ctx.record_read_error("read failed", &e);
            Vec::new()
        }
    };
    let usage = ctx.fs.usage.lock().unwrap_or_else(|p| p.into_inner());
    samples[root].stats.filesystems = mounts
        .iter()
        .map(|fs| FsStats {
            device: Arc::from(fs.device.as_str()),
            usage: usage.by_device.get(&fs.device).copied(),
            disk: (fs.major != 0)
                .then(|| {
                    disks.iter().find(|d| {
                        u32::try_from(d.major) == Ok(fs.major)
                            && u32::try_from(d.minor) == Ok(fs.minor)
                    })
                })
                .flatten()
                .cloned(),
        })
        .collect();
}

/// The filesystem on device `dev` (an `st_dev`) among the host's reported ones: its device
/// label and its capacity (once its usage was measured).
pub fn backing(ctx: &Ctx, dev: u64) -> Option<(Arc<str>, u64)> {
    let (major, minor) = (nix::sys::stat::major(dev), nix::sys::stat::minor(dev));
    let (_, mounts) = ctx.fs.mounts.as_ref()?;
    let fs = mounts
        .iter()
        .find(|fs| u64::from(fs.major) == major && u64::from(fs.minor) == minor)?;
    let usage = ctx.fs.usage.lock().unwrap_or_else(|p| p.into_inner());
    let capacity = usage.by_device.get(&fs.device)?.capacity_bytes;
    Some((Arc::from(fs.device.as_str()), capacity))
}

/// The reported filesystems of the host (PID 1's mount table, else podstat's own).
fn host_filesystems(ctx: &mut Ctx) -> Vec<Filesystem> {
    let proc_root = ctx.proc_root.clone();
    let read = ctx
        .reader
        .read(&proc_root.join("1"), "mountinfo")
        .map(<[u8]>::to_vec)
        .or_else(|_| {
            ctx.reader
                .read(&proc_root.join("self"), "mountinfo")
                .map(<[u8]>::to_vec)
        });
    match read {
        Ok(bytes) => procfs::filesystems(&bytes).unwrap_or_else(|e| {
            ctx.record_error(
                "mountinfo not understood",
                &proc_root.join("1/mountinfo"),
                &e,
            );
            Vec::new()
        }),
        Err(e) => {
            ctx.record_read_error("read failed", &e);
            Vec::new()
        }
    }
}

/// Starts a refresh of the `statvfs` figures on a thread of its own when they are older than
/// [`USAGE_REFRESH`] and none is running.
fn refresh_usage_in_background(
    table: &Arc<Mutex<UsageTable>>,
    mounts: &Arc<Vec<Filesystem>>,
    rootfs: &Path,
) {
    {
        let mut t = table.lock().unwrap_or_else(|p| p.into_inner());
        let due = t
            .refreshed_at
            .is_none_or(|at| at.elapsed() >= USAGE_REFRESH);
        if !due || t.in_flight {
            return;
        }
        t.in_flight = true;
    }
    let (table_for_thread, mounts, rootfs) =
        (Arc::clone(table), Arc::clone(mounts), rootfs.to_path_buf());
    let spawned = std::thread::Builder::new()
        .name("podstat-statvfs".into())
        .spawn(move || {
            for fs in mounts.iter() {
                let usage = statvfs(&rootfs, &fs.mount_point);
                let mut t = table_for_thread.lock().unwrap_or_else(|p| p.into_inner());
                match usage {
                    Some(u) => t.by_device.insert(fs.device.clone(), u),
                    None => t.by_device.remove(&fs.device),
                };
            }
            let mut t = table_for_thread.lock().unwrap_or_else(|p| p.into_inner());
            t.by_device
                .retain(|device, _| mounts.iter().any(|fs| &fs.device == device));
            t.refreshed_at = Some(Instant::now());
            t.in_flight = false;
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "cannot start the filesystem usage thread");
        table.lock().unwrap_or_else(|p| p.into_inner()).in_flight = false;
    }
}

/// How long the first collection waits for the first refresh, so that `podstat once` and the
/// first scrape have the figures; later collections never wait.
const FIRST_WAIT: Duration = Duration::from_secs(1);

fn wait_for_the_first_refresh(table: &Mutex<UsageTable>) {
    let deadline = Instant::now() + FIRST_WAIT;
    while Instant::now() < deadline {
        let t = table.lock().unwrap_or_else(|p| p.into_inner());
        if t.refreshed_at.is_some() || !t.in_flight {
            return;
        }
        drop(t);
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// `statvfs` of `mount_point` as seen under `rootfs`; None where it cannot be inspected.
fn statvfs(rootfs: &Path, mount_point: &Path) -> Option<FsUsage> {
    let path: PathBuf = rootfs.join(mount_point.strip_prefix("/").unwrap_or(mount_point));
    let st = nix::sys::statvfs::statvfs(&path).ok()?;
    let unit = st.fragment_size();
    let capacity = st.blocks().saturating_mul(unit);
    let free = st.blocks_free().saturating_mul(unit);
    Some(FsUsage {
        capacity_bytes: capacity,
        used_bytes: capacity.saturating_sub(free),
        inodes: st.files(),
        inodes_free: st.files_free(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statvfs_of_a_real_filesystem_adds_up() {
        let dir = tempfile::tempdir().expect("tempdir");
        let u = statvfs(Path::new("/"), dir.path()).expect("statvfs");
        assert!(
            u.capacity_bytes > 0 && u.used_bytes <= u.capacity_bytes,
            "{u:?}"
        );
        assert!(u.inodes_free <= u.inodes || u.inodes == 0, "{u:?}");
        assert_eq!(
            statvfs(Path::new("/"), Path::new("/nonexistent/mount")),
            None
        );
    }

    #[test]
    fn usage_is_refreshed_off_the_scrape_path_and_not_twice_at_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let table = Arc::new(Mutex::new(UsageTable::default()));
        let mounts = Arc::new(vec![Filesystem {
            device: "/dev/test".into(),
            mount_point: dir.path().to_path_buf(),
            major: 0,
            minor: 0,
        }]);
        refresh_usage_in_background(&table, &mounts, Path::new("/"));
        let deadline = Instant::now() + Duration::from_secs(5);
        while table.lock().expect("lock").refreshed_at.is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        let t = table.lock().expect("lock");
        assert!(t.by_device.contains_key("/dev/test"));
        assert!(!t.in_flight);
        let at = t.refreshed_at;
        drop(t);
        // Fresh: a second call starts nothing.
        refresh_usage_in_background(&table, &mounts, Path::new("/"));
        assert_eq!(table.lock().expect("lock").refreshed_at, at);
        assert!(!table.lock().expect("lock").in_flight);
    }
}
