//! The agent's shared state: one collection engine behind a lock, the last rendered body, and
//! the health of each component.
//!
//! Concurrent scrapes share one collection: a scrape takes the lock, and if the body it finds
//! is younger than `min_collect_interval_ms` (because another scrape just made it) it serves
//! that body instead of reading every cgroup again. Once it is older than that, no scrape can
//! be served from it, so a large one is let go ([`Agent::release_stale`]) rather than held
//! until the next scrape: at 1000 containers it is ~2.8 MiB (samples and gzip body) of the
//! RSS. Nothing else runs between scrapes.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::collect::Engine;
use crate::config::{Config, GzipWriter};
use crate::discovery::CgroupLayout;
use bytes::Bytes;

use crate::config::MetadataSource;
use crate::exposition::encode::Encoder;
use crate::exposition::names::{self, FamilyCursor};
use crate::exposition::selfmetrics::{self, HttpStatsSource};
use crate::meta::MetaStore;
use crate::parse::procfs;
use crate::policy::Policy;
use crate::snapshot::ContainerSample;
use hinted_deflate::{GzipCarry, HintedGzip, LineHint};

/// One collection, ready to serve to every scrape that asks within the interval.
///
/// It keeps the collected samples, not the encoded text: the text is encoded in chunks while
/// it is sent ([`Rendered::chunks`]), so podstat never holds a whole body (about 9 KiB per
/// container, 9 MiB at 1000) in memory. The gzip form, which every Prometheus asks for and
/// which is ~25x smaller, is made once per collection and kept.
pub struct Rendered {
    containers: Vec<ContainerSample>,
    /// Container families to emit (`[filters] drop_metrics`).
    mask: Vec<bool>,
    /// Machine and self-metric families, encoded at collection time (a few KiB).
    tail: Vec<u8>,
    gzip: OnceLock<Bytes>,
    /// What the previous body's compression left for this one (shared with the agent).
    gzip_carry: Arc<Mutex<GzipCarry>>,
    gzip_writer: GzipWriter,
    pub made_at: Instant,
}

/// Bytes per streamed chunk: large enough that per-chunk overhead vanishes, small enough to
/// stay in cache and out of the RSS.
pub const CHUNK: usize = 64 * 1024;

/// A position in a [`Rendered`] body; each call to [`Chunks::next_chunk`] encodes the next piece.
pub struct Chunks {
    rendered: Arc<Rendered>,
    cursor: FamilyCursor,
    containers_done: bool,
    done: bool,
}

impl Chunks {
    /// Appends the next piece of the body to `out`; false once the body is complete.
    pub fn next_chunk(&mut self, out: &mut Vec<u8>) -> bool {
        self.next_chunk_with(Encoder::new(std::mem::take(out)), out, &mut None)
    }

    /// [`Chunks::next_chunk`], also appending to `hints` where each container line's parts
    /// are (offsets into `out`).
    pub fn next_chunk_hinted(&mut self, out: &mut Vec<u8>, hints: &mut Vec<LineHint>) -> bool {
        let mut kept = Some(std::mem::take(hints));
        let more = self.next_chunk_with(Encoder::new(std::mem::take(out)), out, &mut kept);
        *hints = kept.unwrap_or_default();
        more
    }

    fn next_chunk_with(
        &mut self,
        mut enc: Encoder,
        out: &mut Vec<u8>,
        hints: &mut Option<Vec<LineHint>>,
    ) -> bool {
        if self.done {
            *out = enc.buf;
            return false;
        }
        enc.hints = hints.take();
        let limit = enc.buf.len() + CHUNK;
        if !self.containers_done {
            self.containers_done = names::encode_containers_until(
                &mut enc,
                &self.rendered.containers,
                &self.rendered.mask,
                &mut self.cursor,
                limit,
            );
        }
        if self.containers_done && enc.buf.len() < limit {
            enc.buf.extend_from_slice(&self.rendered.tail);
            self.done = true;
        }
        *out = enc.buf;
        *hints = enc.hints;
        true
    }
}

impl Rendered {
    /// The body, in pieces of about [`CHUNK`] bytes.
    pub fn chunks(self: &Arc<Self>) -> Chunks {
        Chunks {
            rendered: Arc::clone(self),
            cursor: FamilyCursor::default(),
            containers_done: false,
            done: false,
        }
    }

    /// The whole body at once (`podstat once`, tests).
    pub fn to_vec(self: &Arc<Self>) -> Vec<u8> {
        let mut out = Vec::new();
        let mut chunks = self.chunks();
        while chunks.next_chunk(&mut out) {}
        out
    }

    /// The gzip form, compressed once per collection however many scrapers ask, from chunks
    /// as they are encoded so the plain text never exists whole. The encoder tells the gzip
    /// writer where each line's label prefix is, so it copies instead of searching
    /// (`hinted_deflate`, crates/hinted-deflate).
    pub fn gzipped(self: &Arc<Self>) -> Bytes {
        self.gzip
            .get_or_init(|| {
                if self.gzip_writer == GzipWriter::ZlibRs {
                    return Bytes::from(self.stock_gzip());
                }
                // Busy (another collection's body being compressed) or poisoned: start afresh.
                let carry = match self.gzip_carry.try_lock() {
                    Ok(mut c) => std::mem::take(&mut *c),
                    Err(_) => GzipCarry::default(),
                };
                let mut gz = HintedGzip::resume(carry);
                let mut hints = Vec::new();
                let mut chunks = self.chunks();
                while chunks.next_chunk_hinted(gz.window(), &mut hints) {
                    gz.compress_appended(&hints);
                    hints.clear();
                }
                let (mut compressed, carry) = gz.finish_carry();
                if let Ok(mut c) = self.gzip_carry.lock() {
                    *c = carry;
                }
                if compressed.len() >= KEEP_BELOW {
                    compressed.shrink_to_fit();
                    return Bytes::from(compressed);
                }
                Bytes::from_owner(RecycledBody {
                    buf: compressed,
                    home: Arc::clone(&self.gzip_carry),
                })
            })
            .clone()
    }

    /// The body through flate2 (zlib-rs, level 1), chunk by chunk: `gzip_writer = "zlib-rs"`.
    fn stock_gzip(self: &Arc<Self>) -> Vec<u8> {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        let mut chunk = Vec::new();
        let mut chunks = self.chunks();
        while chunks.next_chunk(&mut chunk) {
            // Writing into a Vec cannot fail.
            let _ = std::io::Write::write_all(&mut gz, &chunk);
            chunk.clear();
        }
        gz.finish().unwrap_or_default()
    }

    /// Roughly what keeping this collection holds: its samples and, once made, its gzip body.
    pub fn kept_bytes(&self) -> usize {
        self.containers.capacity() * std::mem::size_of::<ContainerSample>()
            + self.tail.capacity()
            + self.gzip.get().map_or(0, Bytes::len)
    }
}

/// Collections and gzip bodies at least this large are not kept between scrapes (see the
/// module doc); smaller ones are, which costs little memory and spares the allocator.
pub const KEEP_BELOW: usize = 1024 * 1024;

/// A gzip body whose buffer goes back to the compressor when the last response or collection
/// holding it lets go, so the next body is written into pages already mapped.
struct RecycledBody {
    buf: Vec<u8>,
    home: Arc<Mutex<GzipCarry>>,
}

impl AsRef<[u8]> for RecycledBody {
    fn as_ref(&self) -> &[u8] {
        &self.buf
    }
}

impl Drop for RecycledBody {
    fn drop(&mut self) {
        // Never waits: while a body is being compressed its carry is out of the lock anyway,
        // and a buffer not kept is simply freed.
        if let Ok(mut carry) = self.home.try_lock() {
            carry.recycle_output(std::mem::take(&mut self.buf));
        }
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
    meta: Arc<MetaStore>,
    /// Replaced whole by a config reload (SIGHUP); each collection uses one.
    policy: Mutex<Arc<Policy>>,
    min_interval: Duration,
    ready: AtomicBool,
    health: Mutex<ReaderHealth>,
    gzip_carry: Arc<Mutex<GzipCarry>>,
    gzip_writer: GzipWriter,
    /// The listener's connections, for their self-metrics (set when serving).
    http: OnceLock<Arc<dyn HttpStatsSource>>,
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
    #[error("invalid config: {0}")]
    Config(String),
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
        let policy = Policy::new(config).map_err(StartError::Config)?;
        let source = match config.kubernetes.source {
            MetadataSource::None => "none",
            MetadataSource::Kubelet => "kubelet",
            MetadataSource::ApiServer => "apiserver",
        };
        Ok(Agent {
            meta: Arc::new(MetaStore::new(
                source,
                config.kubernetes.wait_for_first_list.0,
            )),
            policy: Mutex::new(Arc::new(policy)),
            inner: Mutex::new(Inner {
                engine,
                totals: selfmetrics::Totals::default(),
                last: None,
            }),
            min_interval: Duration::from_millis(config.server.min_collect_interval_ms),
            ready: AtomicBool::new(false),
            health: Mutex::new(ReaderHealth::default()),
            gzip_carry: Arc::default(),
            gzip_writer: config.server.gzip_writer,
            http: OnceLock::new(),
            mode,
        })
    }

    /// Returns a body no older than the minimum interval, collecting if needed. Blocking (file
    /// reads, and waiting for a collection in progress): the server calls it on its runtime
    /// thread on purpose (`http::server`), anything else from a blocking thread.
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
        let index = self.meta.current();
        let policy = self.policy();
        let snapshot = inner.engine.collect(&index, &policy);
        if snapshot.wants_metadata_refresh {
            self.meta.request_refresh();
        }
        inner.totals.add(&snapshot);
        // Drop the previous collection before keeping the new one: at most one is held here
        // (responses still being sent hold their own).
        inner.last = None;
        let mut enc = Encoder::new(Vec::with_capacity(8 * 1024));
        selfmetrics::encode_machine(&mut enc, &snapshot, &policy.drop_metrics);
        selfmetrics::encode_self(&mut enc, &snapshot, &inner.totals, self.mode);
        if let Some(http) = self.http.get() {
            selfmetrics::encode_http(&mut enc, &http.http_stats());
        }
        let meta_health = self.meta.health();
        if meta_health.source != "none" {
            selfmetrics::encode_metadata(&mut enc, &meta_health);
        }
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
            containers: snapshot.containers,
            mask: policy.mask.clone(),
            tail: enc.buf,
            gzip: OnceLock::new(),
            gzip_carry: Arc::clone(&self.gzip_carry),
            gzip_writer: self.gzip_writer,
            made_at: Instant::now(),
        });
        inner.last = Some(Arc::clone(&rendered));
        rendered
    }

    /// The filters and series budget in force.
    pub fn policy(&self) -> Arc<Policy> {
        Arc::clone(&self.policy.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Puts new filters and a new series budget in force from the next collection on (a
    /// config reload). The collection kept for `min_collect_interval_ms` is let go, so no
    /// scrape is served the old filters after the reload returns.
    pub fn replace_policy(&self, policy: Policy) {
        *self.policy.lock().unwrap_or_else(|p| p.into_inner()) = Arc::new(policy);
        if let Ok(mut inner) = self.inner.lock() {
            inner.last = None;
        }
    }

    /// Reports the listener's connection counters in the self-metrics.
    pub fn report_connections(&self, connections: Arc<dyn HttpStatsSource>) {
        let _ = self.http.set(connections);
    }

    /// How long a collection is served to later scrapes.
    pub fn min_interval(&self) -> Duration {
        self.min_interval
    }

    /// Drops the kept collection once it is too old to serve; returns whether it did. Never
    /// waits: a collection in progress replaces the kept one anyway. Responses still being
    /// sent hold their own reference, so this only frees memory no scrape can use again.
    pub fn release_stale(&self) -> bool {
        let Ok(mut inner) = self.inner.try_lock() else {
            return false;
        };
        match &inner.last {
            Some(last) if last.made_at.elapsed() >= self.min_interval => {
                inner.last = None;
                true
            }
            _ => false,
        }
    }

    /// The capacity of the buffer kept for the next gzip body (tests: see
    /// [`GzipCarry::recycle_output`]).
    pub fn spare_gzip_capacity(&self) -> usize {
        self.gzip_carry
            .lock()
            .map_or(0, |c| c.spare_output_capacity())
    }

    /// The pod metadata store the sources publish into.
    pub fn meta(&self) -> &Arc<MetaStore> {
        &self.meta
    }

    /// A collection succeeded and, with a metadata source, the first pod list is in (or its
    /// wait is over).
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire) && self.meta.first_list_settled()
    }

    pub fn reader_health(&self) -> ReaderHealth {
        self.health
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}
