//! What the collectors and the join keep about one cgroup from one collection to the next: the
//! network probe of its first process, its smoothed task counts, its rendered labels and its
//! early-fetch backoff. The engine owns it, keyed by the cgroup's path and inode (a cgroup
//! removed and made again under the same path starts afresh), and drops it with the cgroup;
//! discovery's `Target` stays the cgroup's identity and its kept files.

use std::collections::HashMap;
use std::ops::Deref;
use std::sync::{Arc, Mutex};

use super::network::PidProbe;
use super::tasks::LoadAverage;
use crate::discovery::Target;
use crate::meta::join::{RefreshBackoff, Resolved};

#[derive(Debug, Default)]
pub struct TargetState {
    /// Its first process, as the network collector last probed it.
    pub probe: Mutex<Option<PidProbe>>,
    /// The smoothed task counts of the load averages, and when they were last updated.
    pub load: Mutex<Option<LoadAverage>>,
    /// Labels resolved against the pod metadata, for the generation they were built from.
    pub resolved: Mutex<Option<Arc<Resolved>>>,
    /// When this cgroup, unknown to the pod metadata, may next ask for an early fetch.
    pub refresh: Mutex<RefreshBackoff>,
}

/// A cgroup of this collection with its state.
#[derive(Debug, Clone)]
pub struct Tracked {
    pub target: Arc<Target>,
    pub state: Arc<TargetState>,
}

impl Deref for Tracked {
    type Target = Target;

    fn deref(&self) -> &Target {
        &self.target
    }
}

/// Every cgroup's state, by path; entries not asked for in a collection are dropped after it.
#[derive(Debug, Default)]
pub struct StateTable {
    by_path: HashMap<String, Entry>,
    collection: u64,
}

#[derive(Debug)]
struct Entry {
    inode: u64,
    seen: u64,
    state: Arc<TargetState>,
}

impl StateTable {
    /// Starts a collection: what is not asked for until [`StateTable::end_collection`] goes.
    pub fn begin_collection(&mut self) {
        self.collection += 1;
    }

    pub fn track(&mut self, target: Arc<Target>) -> Tracked {
        let collection = self.collection;
        let entry = match self.by_path.get_mut(&target.path) {
            Some(e) if e.inode == target.inode => e,
            _ => {
                self.by_path.insert(
                    target.path.clone(),
                    Entry {
                        inode: target.inode,
                        seen: collection,
                        state: Arc::default(),
                    },
                );
                self.by_path
                    .get_mut(&target.path)
                    .unwrap_or_else(|| unreachable!("inserted above"))
            }
        };
        entry.seen = collection;
        Tracked {
            state: Arc::clone(&entry.state),
            target,
        }
    }

    pub fn end_collection(&mut self) {
        let collection = self.collection;
        self.by_path.retain(|_, e| e.seen == collection);
    }

    pub fn is_empty(&self) -> bool {
        self.by_path.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::discovery::{CgroupKind, Dirs};
    use crate::labels::Labels;

    fn target(path: &str, inode: u64) -> Arc<Target> {
        Arc::new(Target {
            path: path.to_owned(),
            kind: CgroupKind::Raw,
            inode,
            dirs: Dirs::default(),
            labels: Labels::default(),
            created: Default::default(),
            files: Default::default(),
        })
    }

    #[test]
    fn state_follows_the_cgroup_not_the_path() {
        let mut table = StateTable::default();
        table.begin_collection();
        let a = table.track(target("/a", 1));
        *a.state.resolved.lock().expect("lock") = Some(Arc::new(Resolved::default()));
        table.end_collection();
        table.begin_collection();
        let same = table.track(target("/a", 1));
        assert!(
            Arc::ptr_eq(&a.state, &same.state),
            "kept across collections"
        );
        table.end_collection();
        table.begin_collection();
        let again = table.track(target("/a", 2));
        assert!(
            !Arc::ptr_eq(&a.state, &again.state),
            "a new cgroup under the same path"
        );
        assert!(again.state.resolved.lock().expect("lock").is_none());
        table.end_collection();
        table.begin_collection();
        table.end_collection();
        assert!(table.is_empty(), "gone cgroups are dropped");
    }
}
