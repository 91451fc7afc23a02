//! The writable layer of Docker and CRI-O containers, where the kubelet's cAdvisor reports one:
//! `container_fs_usage_bytes` (the bytes of the layer's files), `_inodes_total` (the inodes
//! they use: cAdvisor's figure, not the filesystem's), `_inodes_free` (0, as cAdvisor writes
//! it) and `_limit_bytes` (the capacity of the filesystem under the layer), on the container's
//! row, labelled with that filesystem's device. containerd containers get none, as from the
//! kubelet (it takes their filesystem figures from the runtime, not from cAdvisor).
//!
//! The layer is the `upperdir` of the overlay on `/` in the mount table of one of the
//! container's processes, looked up once per container. Measuring it means walking every file
//! in it, which on a busy disk takes seconds, so it never runs on the scrape path: a thread of
//! its own walks the layers that are due, each at most once per [`WALK_PERIOD`] (cAdvisor's
//! period), one walk at a time, and scrapes serve what the last walk found (nothing before the
//! first has finished).

use std::collections::{HashMap, HashSet};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::filesystem;
use super::Ctx;
use crate::discovery::{CgroupKind, Runtime};
use crate::parse::procfs;
use crate::snapshot::{ContainerSample, FsStats, FsUsage};

/// How often one layer is walked again.
pub const WALK_PERIOD: Duration = Duration::from_secs(60);

/// What the collector keeps between collections.
#[derive(Debug, Default)]
pub struct LayerCache {
    /// Each container's layer by cgroup path, once found; None: its root is not an overlay.
    layers: HashMap<String, Option<Layer>>,
    walks: Arc<Mutex<WalkTable>>,
}

#[derive(Debug, Clone)]
struct Layer {
    /// The upper directory as podstat sees it (under `rootfs`).
    dir: PathBuf,
    /// The filesystem under it (`st_dev`).
    device: u64,
}

#[derive(Debug, Default)]
struct WalkTable {
    /// The last walk of each layer directory: when, and its (bytes, inodes).
    by_dir: HashMap<PathBuf, (Instant, Option<(u64, u64)>)>,
    in_flight: bool,
}

pub fn collect(ctx: &mut Ctx, samples: &mut [ContainerSample], rootfs: &Path) {
    let mut live: HashSet<&str> = HashSet::new();
    for sample in samples.iter() {
        if !has_layer(&sample.target.kind) {
            continue;
        }
        let path = sample.target.path.as_str();
        live.insert(path);
        if ctx.layers.layers.contains_key(path) {
            continue;
        }
        // Found through a process: a container without one is looked up at a later scrape.
        let Some(pid) = sample.stats.first_pid else {
            continue;
        };
        let dir = ctx.proc_root.join(pid.to_string());
        let layer = match ctx.reader.read(&dir, "mountinfo") {
            Ok(bytes) => match procfs::root_overlay_upperdir(bytes) {
                Ok(upper) => upper.and_then(|upper| {
                    let dir = rootfs.join(upper.strip_prefix("/").unwrap_or(&upper));
                    let device = std::fs::metadata(&dir).ok()?.dev();
                    Some(Layer { dir, device })
                }),
                Err(e) => {
                    ctx.record_error("mountinfo not understood", &dir.join("mountinfo"), &e);
                    None
                }
            },
            // The process exited since the listing: looked up again at the next scrape.
            Err(_) => continue,
        };
        ctx.layers.layers.insert(path.to_owned(), layer);
    }
    ctx.layers
        .layers
        .retain(|path, _| live.contains(path.as_str()));
    let dirs: HashSet<&Path> = ctx
        .layers
        .layers
        .values()
        .flatten()
        .map(|l| l.dir.as_path())
        .collect();
    walk_in_background(&ctx.layers.walks, &dirs);

    let walks = ctx.layers.walks.lock().unwrap_or_else(|p| p.into_inner());
    for sample in samples.iter_mut() {
        let Some(Some(layer)) = ctx.layers.layers.get(&sample.target.path) else {
            continue;
        };
        let Some((_, Some((bytes, inodes)))) = walks.by_dir.get(&layer.dir) else {
            continue;
        };
        let Some((device, capacity)) = filesystem::backing(ctx, layer.device) else {
            continue;
        };
        sample.stats.filesystems.push(FsStats {
            device,
            usage: Some(FsUsage {
                capacity_bytes: capacity,
                used_bytes: *bytes,
                inodes: *inodes,
                inodes_free: 0,
            }),
            disk: None,
        });
    }
}

/// Docker and CRI-O containers, the runtimes whose layers cAdvisor measures. A bare ID (the
/// cgroupfs driver) may be containerd's, so it is left out.
fn has_layer(kind: &CgroupKind) -> bool {
    matches!(
        kind,
        CgroupKind::Container {
            runtime: Runtime::Docker | Runtime::CriO,
            ..
        }
    )
}

/// Starts a walk of the layers of `dirs` that are due on a thread of its own, unless one is
/// running; forgets the walks of layers that are gone. Only the due ones are copied: this
/// runs at every scrape.
fn walk_in_background(table: &Arc<Mutex<WalkTable>>, dirs: &HashSet<&Path>) {
    let due: Vec<PathBuf> = {
        let mut t = table.lock().unwrap_or_else(|p| p.into_inner());
        t.by_dir.retain(|dir, _| dirs.contains(dir.as_path()));
        if t.in_flight {
            return;
        }
        let due: Vec<PathBuf> = dirs
            .iter()
            .filter(|d| {
                t.by_dir
                    .get(**d)
                    .is_none_or(|(at, _)| at.elapsed() >= WALK_PERIOD)
            })
            .map(|d| d.to_path_buf())
            .collect();
        if due.is_empty() {
            return;
        }
        t.in_flight = true;
        due
    };
    let table_for_thread = Arc::clone(table);
    let spawned = std::thread::Builder::new()
        .name("podstat-layers".into())
        .spawn(move || {
            for dir in due {
                let usage = dir_usage(&dir).ok();
                table_for_thread
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .by_dir
                    .insert(dir, (Instant::now(), usage));
            }
            table_for_thread
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .in_flight = false;
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "cannot start the writable-layer thread");
        table.lock().unwrap_or_else(|p| p.into_inner()).in_flight = false;
    }
}

/// Bytes (allocated blocks, as `du` counts them) and inodes under `dir`, itself included, on
/// its own filesystem only, each hard-linked inode once. Entries that vanish during the walk
/// are skipped: a container writes while it is measured.
pub fn dir_usage(dir: &Path) -> std::io::Result<(u64, u64)> {
    let top = std::fs::symlink_metadata(dir)?;
    let device = top.dev();
    let (mut bytes, mut inodes) = (top.blocks().saturating_mul(512), 1u64);
    let mut linked: HashSet<u64> = HashSet::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            // The entry's own metadata: a symlink is not followed.
            let Ok(meta) = entry.metadata() else {
                continue;
            };
            if meta.dev() != device
                || (meta.nlink() > 1 && !meta.is_dir() && !linked.insert(meta.ino()))
            {
                continue;
            }
            bytes = bytes.saturating_add(meta.blocks().saturating_mul(512));
            inodes += 1;
            if meta.is_dir() {
                stack.push(entry.path());
            }
        }
    }
    Ok((bytes, inodes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directorys_usage_counts_blocks_and_inodes_and_hard_links_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let sub = dir.path().join("sub");
        std::fs::create_dir(&sub).expect("mkdir");
        std::fs::write(sub.join("a"), vec![7u8; 100_000]).expect("write");
        std::fs::hard_link(sub.join("a"), dir.path().join("a-again")).expect("link");
        std::os::unix::fs::symlink("/usr", dir.path().join("usr")).expect("symlink");
        let (bytes, inodes) = dir_usage(dir.path()).expect("walk");
        // The top, sub, one inode for a and a-again, the symlink itself.
        assert_eq!(inodes, 4);
        let blocks = |p: &Path| std::fs::symlink_metadata(p).expect("stat").blocks() * 512;
        let expected = blocks(dir.path())
            + blocks(&sub)
            + blocks(&sub.join("a"))
            + blocks(&dir.path().join("usr"));
        assert_eq!(bytes, expected);
        assert!(bytes >= 100_000, "{bytes}");
        assert!(dir_usage(&dir.path().join("absent")).is_err());
    }
}
