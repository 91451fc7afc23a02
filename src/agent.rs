//! The agent's shared state: one collection engine behind a lock, the last rendered body, and
//! the health of each component.
//!
//! Concurrent scrapes share one collection: a scrape takes the lock, and if the body it finds
//! is younger than `min_collect_interval_ms` (because another scrape just made it) it serves
//! that body instead of reading every cgroup again. Nothing runs between scrapes.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::collect::Engine;
use crate::config::Config;
use crate::discovery::CgroupLayout;
use crate::expose::encode::Encoder;
use crate::expose::{names, selfmetrics};
use crate::parse::procfs;

/// One encoded exposition, shared by every scrape that asks within the interval.
pub struct Rendered {
    pub body: Vec<u8>,
    gzip: OnceLock<Vec<u8>>,
    pub made_at: Instant,
}

impl Rendered {
    /// The gzip form (level 1: ~4x the encode cost instead of ~26x at the default level),
    /// compressed once per collection however many scrapers ask.
    pub fn gzipped(&self) -> &[u8] {
        self.gzip.get_or_init(|| {
            use std::io::Write;
            let mut enc = flate2::write::GzEncoder::new(
                Vec::with_capacity(self.body.len() / 4),
                flate2::Compression::fast(),
            );
            // Writing into a Vec cannot fail.
            let _ = enc.write_all(&self.body);
            enc.finish().unwrap_or_default()
        })
    }
}

/// Health of the cgroup reader, for `/healthz` and `/readyz`.
#[derive(Debug, Clone, Default)]
pub struct ReaderHealth {
    pub last_success: Option<Instant>,
    pub last_error: Option<String>,
    pub containers: usize,
}

struct Inner {
    engine: Engine,
    totals: selfmetrics::Totals,
    last: Option<Arc<Rendered>>,
}

pub struct Agent {
    inner: Mutex<Inner>,
    min_interval: Duration,
    ready: AtomicBool,
    health: Mutex<ReaderHealth>,
    pub mode: &'static str,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot read {path}: {source}")]
    Mountinfo {
        path: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    NoCgroups(String),
}

/// Finds the cgroup hierarchies: mountinfo first, then probing the directory.
pub fn detect_layout(config: &Config) -> Result<CgroupLayout, StartError> {
    let mountinfo_path = config.paths.proc_root.join("self").join("mountinfo");
    let layout = match std::fs::read(&mountinfo_path) {
        Ok(bytes) => {
            let mounts = procfs::cgroup_mounts(&bytes).unwrap_or_else(|e| {
                tracing::warn!(file = %mountinfo_path.display(), error = %e, "mountinfo not understood; probing the cgroup root instead");
                Vec::new()
            });
            CgroupLayout::from_mounts(&mounts, &config.paths.cgroup_root)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => CgroupLayout::default(),
        Err(source) => {
            return Err(StartError::Mountinfo {
                path: mountinfo_path.display().to_string(),
                source,
            })
        }
    };
    let layout = if layout.mode().is_some() {
        layout
    } else {
        CgroupLayout::probe(&config.paths.cgroup_root)
    };
    if layout.mode().is_none() {
        return Err(StartError::NoCgroups(format!(
            "no cgroup v1 or v2 hierarchy found at {} (set --cgroup-root)",
            config.paths.cgroup_root.display()
        )));
    }
    Ok(layout)
}

impl Agent {
    pub fn new(config: &Config) -> Result<Agent, StartError> {
        let layout = detect_layout(config)?;
        let mode = layout.mode().map(|m| m.as_str()).unwrap_or("unknown");
        tracing::info!(
            mode,
            walk_root = %layout.walk_root().map(Path::display).map(|d| d.to_string()).unwrap_or_default(),
            "cgroup hierarchy detected"
        );
        let engine = Engine::new(config, layout).map_err(StartError::NoCgroups)?;
        Ok(Agent {
            inner: Mutex::new(Inner {
                engine,
                totals: selfmetrics::Totals::default(),
                last: None,
            }),
            min_interval: Duration::from_millis(config.server.min_collect_interval_ms),
            ready: AtomicBool::new(false),
            health: Mutex::new(ReaderHealth::default()),
            mode,
        })
    }

    /// Returns a body no older than the minimum interval, collecting if needed. Blocking: call
    /// from a blocking thread.
    pub fn scrape(&self) -> Arc<Rendered> {
        let mut inner = match self.inner.lock() {
            Ok(g) => g,
            // A panic in a previous collection must not take the endpoint down for good.
            Err(poisoned) => poisoned.into_inner(),
        };
        if let Some(last) = &inner.last {
            if last.made_at.elapsed() < self.min_interval {
                return Arc::clone(last);
            }
        }
        let snapshot = inner.engine.collect();
        inner.totals.add(&snapshot);
        let mut enc = Encoder {
            buf: Vec::with_capacity(
                inner
                    .last
                    .as_ref()
                    .map_or(64 * 1024, |l| l.body.len() + 4096),
            ),
        };
        names::encode_containers(&mut enc, &snapshot.containers);
        selfmetrics::encode_machine(&mut enc, &snapshot);
        selfmetrics::encode_self(&mut enc, &snapshot, &inner.totals, self.mode);
        {
            let mut h = self.health.lock().unwrap_or_else(|p| p.into_inner());
            if snapshot.discovery_failed {
                h.last_error = Some("cgroup discovery failed (see logs)".into());
            } else {
                h.last_success = Some(Instant::now());
                h.last_error = None;
                h.containers = snapshot.containers.len();
                self.ready.store(true, Ordering::Release);
            }
        }
        let rendered = Arc::new(Rendered {
            body: enc.buf,
            gzip: OnceLock::new(),
            made_at: Instant::now(),
        });
        inner.last = Some(Arc::clone(&rendered));
        rendered
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    pub fn reader_health(&self) -> ReaderHealth {
        self.health
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}
