//! Directory watches that let discovery skip listing a cgroup directory whose children did
//! not change since the last walk.
//!
//! Listing a directory costs an open, an fstat, two getdents and a close, and cgroupfs emits
//! every control file in the listing (a v1 memory cgroup has ~30), so walking the tree was the
//! largest cost podstat had that a plain reader of the same files does not. Cgroups are created
//! and removed with mkdir/rmdir through the VFS, which reports them to inotify on the parent
//! directory like on any filesystem (checked on cgroup v1, hybrid and v2), so a directory with
//! a live watch and no event since it was listed has the same children as then.
//!
//! Anything that makes a watch untrustworthy falls back to listing: a failed `add_watch`
//! (the `max_user_watches` limit, a filesystem without inotify), an inotify instance that
//! cannot be created, and a queue overflow, after which every directory is listed once.

use std::collections::HashSet;
use std::ffi::OsString;
use std::path::Path;

use nix::errno::Errno;
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify, WatchDescriptor};

/// The events that change a directory's list of subdirectories, or end the watch.
fn child_events() -> AddWatchFlags {
    AddWatchFlags::IN_CREATE
        | AddWatchFlags::IN_DELETE
        | AddWatchFlags::IN_MOVED_FROM
        | AddWatchFlags::IN_MOVED_TO
        | AddWatchFlags::IN_DELETE_SELF
        | AddWatchFlags::IN_MOVE_SELF
        | AddWatchFlags::IN_ONLYDIR
}

/// What happened since the last [`DirWatcher::drain`].
#[derive(Debug, Default)]
pub struct Changes {
    /// Watches whose directory gained, lost or renamed a child (or went away itself).
    pub dirty: HashSet<WatchDescriptor>,
    /// Children removed from (or renamed away from) a watched directory, by name: one listed
    /// again under the same name is a new cgroup even if its inode number was reused.
    pub removed: HashSet<(WatchDescriptor, OsString)>,
    /// The kernel dropped events: no watched directory can be trusted until listed again.
    pub overflow: bool,
}

impl Changes {
    /// True when the directory watched by `wd` must be listed again.
    pub fn touches(&self, wd: Option<WatchDescriptor>) -> bool {
        match wd {
            Some(wd) => self.overflow || self.dirty.contains(&wd),
            None => true,
        }
    }

    /// True when a child called `name` left the directory watched by `wd` since the last walk.
    pub fn removed(&self, wd: Option<WatchDescriptor>, name: &str) -> bool {
        wd.is_some_and(|wd| self.removed.contains(&(wd, OsString::from(name))))
    }

    pub fn clear(&mut self) {
        self.dirty.clear();
        self.removed.clear();
        self.overflow = false;
    }
}

/// One inotify instance for the whole walk, or none when watching is off or unavailable.
#[derive(Debug)]
pub struct DirWatcher {
    inotify: Option<Inotify>,
    watches: usize,
}

impl DirWatcher {
    /// A watcher when `enabled`; a failure to create one is logged and leaves discovery
    /// listing every directory, as with `enabled = false`.
    pub fn new(enabled: bool) -> DirWatcher {
        let inotify = if enabled {
            match Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC) {
                Ok(i) => Some(i),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot create an inotify instance; every cgroup directory will be listed on every collection");
                    None
                }
            }
        } else {
            None
        };
        DirWatcher {
            inotify,
            watches: 0,
        }
    }

    /// Starts watching `dir`. Call before listing it, so that a child created between the
    /// listing and the watch cannot be missed. None: `dir` must be listed on every walk.
    pub fn watch(&mut self, dir: &Path) -> Option<WatchDescriptor> {
        let inotify = self.inotify.as_ref()?;
        match inotify.add_watch(dir, child_events()) {
            Ok(wd) => {
                self.watches += 1;
                Some(wd)
            }
            Err(Errno::ENOSPC) => {
                tracing::warn!(dir = %dir.display(), "inotify watch limit reached (fs.inotify.max_user_watches); this directory will be listed on every collection");
                None
            }
            // The directory went away before it could be watched: nothing to list either.
            Err(_) => None,
        }
    }

    /// Stops watching a directory that is no longer walked. The kernel has already dropped
    /// the watch of a directory that was removed; that EINVAL is expected.
    pub fn unwatch(&mut self, wd: WatchDescriptor) {
        if let Some(inotify) = &self.inotify {
            let _ = inotify.rm_watch(wd);
            self.watches = self.watches.saturating_sub(1);
        }
    }

    /// Watches held now.
    pub fn watches(&self) -> usize {
        self.watches
    }

    /// Moves every pending event into `changes` without blocking.
    pub fn drain(&mut self, changes: &mut Changes) {
        let Some(inotify) = &self.inotify else { return };
        loop {
            match inotify.read_events() {
                Ok(events) if events.is_empty() => return,
                Ok(events) => {
                    for event in events {
                        if event.mask.contains(AddWatchFlags::IN_Q_OVERFLOW) {
                            changes.overflow = true;
                        } else {
                            let gone = AddWatchFlags::IN_DELETE | AddWatchFlags::IN_MOVED_FROM;
                            if event.mask.intersects(gone) {
                                if let Some(name) = event.name {
                                    changes.removed.insert((event.wd, name));
                                }
                            }
                            changes.dirty.insert(event.wd);
                        }
                    }
                }
                Err(Errno::EAGAIN) => return,
                Err(Errno::EINTR) => continue,
                Err(e) => {
                    // Not expected from an inotify descriptor; treat it like lost events.
                    tracing::warn!(error = %e, "reading inotify events failed; listing every cgroup directory once");
                    changes.overflow = true;
                    return;
                }
            }
        }
    }
}
