//! The listener's connections, bounded: at most `max_connections` open, each closed when it
//! idles too long, dawdles over its request headers, or must make room for a newer one.
//!
//! Without this, ~11,000 idle TCP connections filled RLIMIT_NOFILE, which the kept cgroup
//! descriptors share: new containers lost their series and `/healthz` timed out. Bounding the
//! count is not enough on its own (an attacker would just hold every slot), so a new connection
//! at capacity takes the slot of the one that has been idle longest: a scraper's connection is
//! busy or fresh when it matters, a flood's are idle. Only when every slot is busy sending a
//! response is the new one refused.
//!
//! hyper's own `header_read_timeout` also runs while a kept-alive connection waits for its next
//! request, which would make the header timeout the idle timeout too; the watchdog here tells
//! the two apart by whether any byte of the next request has arrived ([`Watched`]).

use std::collections::HashMap;
use std::io;
use std::os::fd::RawFd;
use std::pin::Pin;
use std::sync::atomic::{AtomicI32, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use hyper::body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;

use crate::exposition::selfmetrics::{HttpStats, HttpStatsSource};

/// `[server]` max_connections, header_read_timeout, idle_timeout.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max: usize,
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
}

/// Why podstat closed a connection (a client closing its own is not counted).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Closed {
    /// Made room for a newer connection.
    Evicted,
    /// No slot free and none idle: closed right after accept.
    Refused,
    /// No request for `idle_timeout`.
    Idle,
    /// Request headers (or the TLS handshake) not complete within `header_timeout`.
    HeaderTimeout,
    /// A response not taken by the client within `idle_timeout`.
    SlowClient,
}

impl Closed {
    pub const ALL: [Closed; 5] = [
        Closed::Evicted,
        Closed::Refused,
        Closed::Idle,
        Closed::HeaderTimeout,
        Closed::SlowClient,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Closed::Evicted => "evicted",
            Closed::Refused => "refused",
            Closed::Idle => "idle_timeout",
            Closed::HeaderTimeout => "header_timeout",
            Closed::SlowClient => "slow_client",
        }
    }
}

/// Counters for the self-metrics.
#[derive(Debug, Default)]
pub struct Stats {
    accepted: AtomicU64,
    closed: [AtomicU64; 5],
    tls_failures: AtomicU64,
    unauthorized: AtomicU64,
}

/// Every open connection's state, and the counters.
pub struct Connections {
    limits: Limits,
    base: Instant,
    open: Mutex<HashMap<u64, Arc<ConnState>>>,
    next_id: AtomicU64,
    stats: Stats,
}

/// What the watchdog of one connection needs to know; times in ms since [`Connections::base`].
#[derive(Debug)]
pub struct ConnState {
    /// Requests whose responses are not yet fully handed to the socket.
    busy: AtomicU32,
    /// When the connection opened, a request started, or the last response finished.
    since_ms: AtomicU64,
    /// When the first byte of the next request arrived; 0 while none has.
    first_byte_ms: AtomicU64,
    evict: Notify,
    /// Woken when a request's first byte arrives: the deadline moves closer.
    first_byte: Notify,
    /// The socket, for a peek before eviction (-1 in unit tests). The number can outlive the
    /// socket by a moment and name a newer one; a peek cannot harm either.
    fd: AtomicI32,
}

/// A slot held for one connection; dropping it frees the slot.
pub struct Slot {
    id: u64,
    pub state: Arc<ConnState>,
    home: Arc<Connections>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Ok(mut open) = self.home.open.lock() {
            open.remove(&self.id);
        }
    }
}

impl Connections {
    pub fn new(limits: Limits) -> Arc<Connections> {
        Arc::new(Connections {
            limits,
            base: Instant::now(),
            open: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            stats: Stats::default(),
        })
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    fn now_ms(&self) -> u64 {
        // +1: 0 means "no byte yet" in first_byte_ms.
        u64::try_from(self.base.elapsed().as_millis()).unwrap_or(u64::MAX) + 1
    }

    /// A slot for a just-accepted connection, closing the longest-idle one at capacity (the
    /// flag says whether it did); `None` when every slot is busy (the caller drops the
    /// connection).
    ///
    /// `fd` is the connection's socket, looked at (a peek) to see whether the client has sent
    /// anything: a scraper's request is usually in the socket by the time a flooded listener
    /// accepts it, while a flood's idle connections never send any, so the new connection
    /// starts out behind the idle ones in the eviction order.
    pub fn admit(self: &Arc<Self>, fd: RawFd) -> Option<(Slot, bool)> {
        let sent = has_data(fd);
        let now = self.now_ms();
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let mut evicted = false;
        if open.len() >= self.limits.max {
            // Idle ones before those part-way through their headers, then the oldest first
            // (ids break ties within a millisecond): a scraper's fresh connection is the last
            // to go, and its request arrives with its first byte.
            let mut candidates: Vec<(bool, u64, u64)> = open
                .iter()
                .filter(|(_, s)| s.busy.load(Ordering::Acquire) == 0)
                .map(|(id, s)| {
                    let started = s.first_byte_ms.load(Ordering::Relaxed) != 0;
                    (started, s.since_ms.load(Ordering::Relaxed), *id)
                })
                .collect();
            candidates.sort_unstable();
            // A connection that looks idle may have its request waiting in the socket, not
            // yet read because its task has not run (a loaded node, a flood): look before
            // evicting it, and pass over it if so. One part-way through its headers is passed
            // over if the rest of them is waiting too: a probe accepted with its whole request
            // must not lose its slot to a stream of half-open connections while its task
            // waits for a thread (seen: a /readyz reset under a flood on a loaded machine).
            let mut looked = 0;
            let victim = candidates.iter().find_map(|&(started, _, id)| {
                if looked < 16 {
                    looked += 1;
                    let state = open.get(&id)?;
                    let fd = state.fd.load(Ordering::Relaxed);
                    if !started && has_data(fd) {
                        state.first_byte_ms.store(now, Ordering::Release);
                        return None;
                    }
                    if started && has_whole_request(fd) {
                        return None;
                    }
                }
                Some(id)
            });
            evicted = match victim.and_then(|id| open.remove(&id)) {
                Some(state) => {
                    // notify_one keeps a permit, so a watchdog not waiting right now still sees it.
                    state.evict.notify_one();
                    self.count(Closed::Evicted);
                    true
                }
                None => {
                    self.count(Closed::Refused);
                    return None;
                }
            };
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let state = Arc::new(ConnState::default());
        state.since_ms.store(now, Ordering::Relaxed);
        state.fd.store(fd, Ordering::Relaxed);
        if sent {
            state.first_byte_ms.store(now, Ordering::Relaxed);
        }
        open.insert(id, Arc::clone(&state));
        self.stats.accepted.fetch_add(1, Ordering::Relaxed);
        Some((
            Slot {
                id,
                state,
                home: Arc::clone(self),
            },
            evicted,
        ))
    }

    pub fn count(&self, why: Closed) {
        let i = Closed::ALL.iter().position(|c| *c == why).unwrap_or(0);
        self.stats.closed[i].fetch_add(1, Ordering::Relaxed);
    }

    pub fn count_tls_failure(&self) {
        self.stats.tls_failures.fetch_add(1, Ordering::Relaxed);
    }

    pub fn count_unauthorized(&self) {
        self.stats.unauthorized.fetch_add(1, Ordering::Relaxed);
    }

    pub fn open_count(&self) -> usize {
        self.open.lock().map_or(0, |o| o.len())
    }

    pub fn stats(&self) -> HttpStats {
        let mut closed = [("", 0); 5];
        for (i, c) in Closed::ALL.iter().enumerate() {
            closed[i] = (c.as_str(), self.stats.closed[i].load(Ordering::Relaxed));
        }
        HttpStats {
            open: self.open_count(),
            limit: self.limits.max,
            accepted: self.stats.accepted.load(Ordering::Relaxed),
            closed,
            tls_failures: self.stats.tls_failures.load(Ordering::Relaxed),
            unauthorized: self.stats.unauthorized.load(Ordering::Relaxed),
        }
    }

    /// When the connection must be closed unless something happens first, and why.
    pub fn deadline(&self, state: &ConnState) -> (Instant, Closed) {
        let at = |ms: u64| self.base + Duration::from_millis(ms.saturating_sub(1));
        let since = state.since_ms.load(Ordering::Acquire);
        if state.busy.load(Ordering::Acquire) > 0 {
            return (at(since) + self.limits.idle_timeout, Closed::SlowClient);
        }
        match state.first_byte_ms.load(Ordering::Acquire) {
            0 => (at(since) + self.limits.idle_timeout, Closed::Idle),
            first => (
                at(first) + self.limits.header_timeout,
                Closed::HeaderTimeout,
            ),
        }
    }

    /// Marks a request as started; the guard marks its response finished when dropped.
    pub fn busy(self: &Arc<Self>, state: &Arc<ConnState>) -> BusyGuard {
        state.busy.fetch_add(1, Ordering::AcqRel);
        state.since_ms.store(self.now_ms(), Ordering::Release);
        state.first_byte_ms.store(0, Ordering::Release);
        BusyGuard {
            state: Arc::clone(state),
            home: Arc::clone(self),
        }
    }

    /// Waits until all slots are free (graceful shutdown), up to `limit`; false on time-out.
    pub async fn drained(&self, limit: Duration) -> bool {
        let until = Instant::now() + limit;
        while self.open_count() > 0 {
            if Instant::now() >= until {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        true
    }
}

impl Default for ConnState {
    fn default() -> Self {
        ConnState {
            busy: AtomicU32::new(0),
            since_ms: AtomicU64::new(0),
            first_byte_ms: AtomicU64::new(0),
            evict: Notify::new(),
            first_byte: Notify::new(),
            fd: AtomicI32::new(-1),
        }
    }
}

impl ConnState {
    /// Resolves when this connection must make room for a newer one.
    pub async fn evicted(&self) {
        self.evict.notified().await;
    }

    /// Resolves when the first byte of a request has arrived (see [`Watched`]).
    pub async fn request_started(&self) {
        self.first_byte.notified().await;
    }
}

/// What the client has sent and podstat not read yet, up to `buf`'s length (a peek, never
/// blocking; empty on any error).
fn peek(fd: RawFd, buf: &mut [u8]) -> &[u8] {
    use nix::sys::socket::{recv, MsgFlags};
    if fd < 0 {
        return &[];
    }
    match recv(fd, buf, MsgFlags::MSG_PEEK | MsgFlags::MSG_DONTWAIT) {
        Ok(n) => &buf[..n],
        Err(_) => &[],
    }
}

/// Whether the client has sent anything not read yet.
fn has_data(fd: RawFd) -> bool {
    !peek(fd, &mut [0u8; 1]).is_empty()
}

/// Whether a whole request is waiting in the socket, unread: plain HTTP headers up to their
/// blank line, or a TLS record (a handshake under way; its content cannot be judged).
fn has_whole_request(fd: RawFd) -> bool {
    let mut buf = [0u8; 4096];
    let head = peek(fd, &mut buf);
    head.first() == Some(&0x16) || head.windows(4).any(|w| w == b"\r\n\r\n")
}

/// Held while a response is being produced and sent (it travels inside the body).
pub struct BusyGuard {
    state: Arc<ConnState>,
    home: Arc<Connections>,
}

impl Drop for BusyGuard {
    fn drop(&mut self) {
        self.state
            .since_ms
            .store(self.home.now_ms(), Ordering::Release);
        self.state.first_byte_ms.store(0, Ordering::Release);
        self.state.busy.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A response body that keeps its connection marked busy until hyper has written all of it
/// (hyper drops the body then), so a big body to a slow reader counts as a busy connection.
pub struct GuardedBody<B> {
    inner: B,
    _guard: Option<BusyGuard>,
}

impl<B> GuardedBody<B> {
    pub fn new(inner: B, guard: Option<BusyGuard>) -> Self {
        GuardedBody {
            inner,
            _guard: guard,
        }
    }
}

impl<B: Body + Unpin> Body for GuardedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A connection's socket (plain or TLS) that notes when the first byte of a request arrives,
/// which starts the header timeout.
pub struct Watched<I> {
    inner: I,
    state: Arc<ConnState>,
    home: Arc<Connections>,
}

impl<I> Watched<I> {
    pub fn new(inner: I, slot: &Slot) -> Watched<I> {
        Watched {
            inner,
            state: Arc::clone(&slot.state),
            home: Arc::clone(&slot.home),
        }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Watched<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before
            && self.state.busy.load(Ordering::Acquire) == 0
            && self.state.first_byte_ms.load(Ordering::Acquire) == 0
        {
            let now = self.home.now_ms();
            self.state.first_byte_ms.store(now, Ordering::Release);
            self.state.first_byte.notify_one();
        }
        polled
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Watched<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

impl HttpStatsSource for Connections {
    fn http_stats(&self) -> HttpStats {
        self.stats()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(max: usize) -> Limits {
        Limits {
            max,
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(120),
        }
    }

    #[test]
    fn at_capacity_the_longest_idle_makes_room_and_busy_ones_stay() {
        let c = Connections::new(limits(2));
        let (first, _) = c.admit(-1).expect("room");
        let (second, _) = c.admit(-1).expect("room");
        // Full: the older idle one (first, same millisecond) is evicted.
        let (third, evicted) = c.admit(-1).expect("an idle one makes room");
        assert!(evicted);
        assert_eq!(c.open_count(), 2);
        assert!(!c.open.lock().expect("lock").contains_key(&first.id));
        // Both remaining busy: the next is refused.
        let _b2 = c.busy(&second.state);
        let _b3 = c.busy(&third.state);
        assert!(c.admit(-1).is_none());
        let s = c.stats();
        assert_eq!(s.closed[0], (Closed::Evicted.as_str(), 1));
        assert_eq!(s.closed[1], (Closed::Refused.as_str(), 1));
        drop(second);
        assert_eq!(c.open_count(), 1);
    }

    #[test]
    fn idle_connections_go_before_those_sending_a_request() {
        let c = Connections::new(limits(2));
        let (old, _) = c.admit(-1).expect("room");
        // The older one has begun its request; the newer one has sent nothing.
        old.state.first_byte_ms.store(c.now_ms(), Ordering::Release);
        let (silent, _) = c.admit(-1).expect("room");
        let _ = c.admit(-1).expect("room made");
        let open = c.open.lock().expect("lock");
        assert!(open.contains_key(&old.id) && !open.contains_key(&silent.id));
    }

    #[test]
    fn one_part_way_through_its_headers_keeps_its_slot_while_its_whole_request_waits() {
        use std::io::Write;
        use std::os::fd::AsRawFd;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let connect = |sent: &[u8]| {
            let mut client = std::net::TcpStream::connect(addr).expect("connect");
            client.write_all(sent).expect("send");
            let (server, _) = listener.accept().expect("accept");
            (client, server)
        };
        let (_c1, probe) = connect(b"GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n");
        let (_c2, dawdler) = connect(b"GET /metrics HTTP/1.1\r\nX-Slow: a");
        // Wait for both to be in the sockets.
        let deadline = Instant::now() + Duration::from_secs(5);
        while !(has_data(probe.as_raw_fd()) && has_data(dawdler.as_raw_fd())) {
            assert!(Instant::now() < deadline, "the requests never arrived");
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(has_whole_request(probe.as_raw_fd()));
        assert!(!has_whole_request(dawdler.as_raw_fd()));
        let c = Connections::new(limits(2));
        // Both began their requests; the probe is the older, so it would go first by age.
        let (p, _) = c.admit(probe.as_raw_fd()).expect("room");
        let (d, _) = c.admit(dawdler.as_raw_fd()).expect("room");
        let _ = c.admit(-1).expect("room made");
        let open = c.open.lock().expect("lock");
        assert!(
            open.contains_key(&p.id),
            "the probe with its whole request was evicted"
        );
        assert!(!open.contains_key(&d.id));
    }

    #[test]
    fn deadlines_follow_the_phase() {
        let c = Connections::new(limits(4));
        let (slot, _) = c.admit(-1).expect("room");
        assert_eq!(c.deadline(&slot.state).1, Closed::Idle);
        slot.state
            .first_byte_ms
            .store(c.now_ms(), Ordering::Release);
        assert_eq!(c.deadline(&slot.state).1, Closed::HeaderTimeout);
        let guard = c.busy(&slot.state);
        assert_eq!(c.deadline(&slot.state).1, Closed::SlowClient);
        drop(guard);
        let (at, why) = c.deadline(&slot.state);
        assert_eq!(why, Closed::Idle);
        assert!(at > Instant::now() + Duration::from_secs(100));
    }
}
