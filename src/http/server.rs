//! HTTP server: `/metrics`, `/healthz`, `/readyz` (and the `/-/healthy`, `/-/ready` aliases).
//! hyper 1 without a router: five fixed paths do not need one.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use std::pin::Pin;
use std::task::{Context, Poll};

use http_body_util::{Either, Full};
use hyper::body::{Bytes, Frame, Incoming};
use hyper::header::{
    HeaderValue, ACCEPT_ENCODING, AUTHORIZATION, CONTENT_ENCODING, CONTENT_TYPE, WWW_AUTHENTICATE,
};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;

use super::connections::{Closed, ConnState, Connections, GuardedBody, Slot, Watched};
use super::delegated::{DelegatedAuth, Verdict};
use super::webconfig::{BasicAuth, WebConfig, WebConfigWatch};
use crate::agent::{Agent, Chunks, CHUNK, KEEP_BELOW};

/// A plain `/metrics` body, encoded chunk by chunk as hyper asks for it (chunked transfer
/// encoding), so the whole text never sits in memory.
pub struct MetricsStream(Chunks);

impl hyper::body::Body for MetricsStream {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let mut buf = Vec::with_capacity(CHUNK + 8 * 1024);
        // Encoding a chunk takes tens of microseconds: fine to do on the runtime thread.
        while buf.is_empty() {
            if !self.0.next_chunk(&mut buf) {
                return Poll::Ready(None);
            }
        }
        Poll::Ready(Some(Ok(Frame::data(Bytes::from(buf)))))
    }
}

type Body = Either<Full<Bytes>, MetricsStream>;

pub const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// True when the client accepts gzip (`gzip` listed without `q=0`).
pub fn accepts_gzip(header: Option<&HeaderValue>) -> bool {
    let Some(value) = header.and_then(|h| h.to_str().ok()) else {
        return false;
    };
    value.split(',').any(|part| {
        let mut pieces = part.split(';').map(str::trim);
        let coding = pieces.next().unwrap_or("");
        let zero_q = pieces.any(|p| {
            p.strip_prefix("q=")
                .and_then(|q| q.parse::<f32>().ok())
                .is_some_and(|q| q == 0.0)
        });
        (coding.eq_ignore_ascii_case("gzip") || coding == "*") && !zero_q
    })
}

fn respond(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Body> {
    with_body(status, content_type, Either::Left(Full::new(body.into())))
}

fn with_body(status: StatusCode, content_type: &'static str, body: Body) -> Response<Body> {
    let mut r = Response::new(body);
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

/// A JSON string literal (errors can hold quotes, backslashes and control characters).
fn json_string(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}

fn health_json(agent: &Agent, for_readiness: bool, detailed: bool) -> (StatusCode, String) {
    let h = agent.reader_health();
    let ready = agent.is_ready();
    let age = h.last_success.map(|t| t.elapsed().as_secs_f64());
    let reader_status = match (&h.last_error, ready) {
        (Some(_), _) => "error",
        (None, true) => "ok",
        (None, false) => "starting",
    };
    let ok = if for_readiness { ready } else { true };
    let m = agent.meta().health();
    let meta_age = m.last_success.map(|(at, _)| at.elapsed().as_secs_f64());
    // Metadata never gates readiness: without it podstat still serves every number, with
    // empty pod labels, which beats serving nothing.
    let meta_status = match (m.source, &m.last_error, meta_age) {
        ("none", _, _) => "disabled",
        (_, Some(_), Some(_)) => "stale",
        (_, Some(_), None) => "error",
        (_, None, Some(_)) => "ok",
        (_, None, None) => "starting",
    };
    let status_code = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    if !detailed {
        let word = if ok { "ok" } else { "unavailable" };
        return (status_code, format!("{{\"status\":\"{word}\"}}\n"));
    }
    let body = format!(
        "{{\"status\":\"{}\",\"components\":{{\"cgroup_reader\":{{\"status\":\"{}\",\"cgroup_mode\":\"{}\",\"containers\":{},\"last_success_age_seconds\":{},\"error\":{}}},\"metadata\":{{\"status\":\"{}\",\"source\":\"{}\",\"pods\":{},\"last_success_age_seconds\":{},\"error\":{}}}}}}}\n",
        if ok { "ok" } else { "unavailable" },
        reader_status,
        agent.mode,
        h.containers,
        age.map_or("null".to_string(), |a| format!("{a:.3}")),
        h.last_error.map_or("null".to_string(), |e| json_string(&e)),
        meta_status,
        m.source,
        m.pods,
        meta_age.map_or("null".to_string(), |a| format!("{a:.3}")),
        m.last_error.map_or("null".to_string(), |e| json_string(&e)),
    );
    (status_code, body)
}

/// What every connection of the listener shares.
pub struct Server {
    pub agent: Arc<Agent>,
    pub gzip: bool,
    pub connections: Arc<Connections>,
    pub web: WebConfigWatch,
    pub auth: BasicAuth,
    /// `[server] kubernetes_auth`: bearer tokens reviewed by the API server.
    pub delegated: Option<DelegatedAuth>,
}

/// Runs blocking work (a collection, a bcrypt check) without holding up the runtime's other
/// tasks: on the multi-threaded runtime the agent serves with, the worker hands its queue to
/// another thread first, so `/healthz` and `/readyz` are answered while a collection runs (a
/// 4 s collection on a loaded node used to time the probes out). Elsewhere (a current-thread
/// runtime in a test) it simply runs.
pub fn run_blocking<T>(work: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(work)
        }
        _ => work(),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Access {
    Granted,
    Unauthenticated,
    Forbidden,
    /// The API server could not review the token: refused, as any failure is.
    ReviewFailed,
}

/// Whether a request may read the metrics: open when neither basic auth (web config) nor
/// `kubernetes_auth` is on; otherwise valid basic credentials, or a bearer token that the API
/// server accepts and allows to get this node's nodes/metrics.
async fn access(server: &Server, web: &WebConfig, header: Option<&HeaderValue>) -> Access {
    if !web.auth_required() && server.delegated.is_none() {
        return Access::Granted;
    }
    let bearer = header.is_some_and(|h| h.as_bytes().starts_with(b"Bearer "));
    if let (Some(delegated), true) = (&server.delegated, bearer) {
        return match delegated.review(header).await {
            Ok(Verdict::Allowed) => Access::Granted,
            Ok(Verdict::Forbidden) => Access::Forbidden,
            Ok(Verdict::Unauthenticated) => Access::Unauthenticated,
            Err(e) => {
                tracing::warn!(error = %e, "token review failed; request refused");
                Access::ReviewFailed
            }
        };
    }
    if web.auth_required() && header.is_some() && server.auth.check(web, header).await {
        return Access::Granted;
    }
    Access::Unauthenticated
}

fn is_health_path(path: &str) -> bool {
    matches!(path, "/healthz" | "/-/healthy" | "/readyz" | "/-/ready")
}

async fn handle(
    server: Arc<Server>,
    conn: Arc<ConnState>,
    req: Request<Incoming>,
) -> Result<Response<GuardedBody<Body>>, Infallible> {
    let busy = server.connections.busy(&conn);
    let web = server.web.current();
    let mut response = route(&server, &web, req).await;
    for (name, value) in &web.headers {
        response.headers_mut().insert(name.clone(), value.clone());
    }
    Ok(response.map(|body| GuardedBody::new(body, Some(busy))))
}

async fn route(server: &Arc<Server>, web: &WebConfig, req: Request<Incoming>) -> Response<Body> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return respond(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "method not allowed\n",
        );
    }
    let path = req.uri().path();
    // Health endpoints answer everyone (the kubelet's probes carry no credentials), but tell
    // details (errors, container counts) only to a client that authenticates.
    let access = access(server, web, req.headers().get(AUTHORIZATION)).await;
    if access != Access::Granted && !is_health_path(path) {
        server.connections.count_unauthorized();
        return refused(access, web);
    }
    let authenticated = access == Access::Granted;
    let agent = &server.agent;
    match path {
        "/metrics" => metrics(server, &req).await,
        "/cardinality" => cardinality(agent, &req).await,
        "/healthz" | "/-/healthy" => {
            let (status, body) = health_json(agent, false, authenticated);
            respond(status, "application/json", body)
        }
        "/readyz" | "/-/ready" => {
            let (status, body) = health_json(agent, true, authenticated);
            respond(status, "application/json", body)
        }
        "/" => respond(
            StatusCode::OK,
            "text/html; charset=utf-8",
            "<html><head><title>podstat</title></head><body><h1>podstat</h1><p><a href=\"/metrics\">/metrics</a> <a href=\"/healthz\">/healthz</a> <a href=\"/readyz\">/readyz</a> <a href=\"/cardinality\">/cardinality</a></p></body></html>\n",
        ),
        _ => respond(StatusCode::NOT_FOUND, "text/plain", "not found\n"),
    }
}

/// The answer to a request without the access it needs: 401 with the challenge the listener
/// expects, 403, or 503 when the API server could not review a token.
fn refused(access: Access, web: &WebConfig) -> Response<Body> {
    let (status, text) = match access {
        Access::Forbidden => (StatusCode::FORBIDDEN, "forbidden\n"),
        Access::ReviewFailed => (
            StatusCode::SERVICE_UNAVAILABLE,
            "cannot check credentials now\n",
        ),
        _ => (StatusCode::UNAUTHORIZED, "unauthorized\n"),
    };
    let mut r = respond(status, "text/plain", text);
    if status == StatusCode::UNAUTHORIZED {
        let challenge = if web.auth_required() {
            "Basic realm=\"podstat\""
        } else {
            "Bearer"
        };
        r.headers_mut()
            .insert(WWW_AUTHENTICATE, HeaderValue::from_static(challenge));
    }
    r
}

/// `/metrics`: the current collection, gzipped when the client accepts it.
async fn metrics(server: &Arc<Server>, req: &Request<Incoming>) -> Response<Body> {
    let agent = &server.agent;
    // Right after a start, the first pod list (bounded by wait_for_first_list): series
    // without pod labels would enter Prometheus as series of their own.
    agent.meta().wait_first_list().await;
    let gzip = server.gzip && accepts_gzip(req.headers().get(ACCEPT_ENCODING));
    // Collected and compressed on this worker thread, which first hands the runtime's other
    // work to a second one (`run_blocking`): a hop to the blocking pool and back cost ~0.3-0.4
    // ms per scrape on the development VM (2-3 % at 100 containers, `benches/ab.sh`). A second
    // scrape arriving meanwhile (the other Prometheus of an HA pair) waits for the collection
    // in progress and is served the same one.
    let (rendered, compressed) = run_blocking(|| {
        let rendered = agent.scrape();
        let compressed = gzip.then(|| rendered.gzipped());
        (rendered, compressed)
    });
    if rendered.kept_bytes() >= KEEP_BELOW {
        release_when_stale(agent, rendered.made_at);
    }
    let body = match compressed {
        Some(bytes) => Either::Left(Full::new(bytes)),
        None => Either::Right(MetricsStream(rendered.chunks())),
    };
    let mut r = with_body(StatusCode::OK, METRICS_CONTENT_TYPE, body);
    if gzip {
        r.headers_mut()
            .insert(CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    }
    r
}

/// `/cardinality?top=N`: the report of a fresh collection, made off the runtime's threads.
async fn cardinality(agent: &Arc<Agent>, req: &Request<Incoming>) -> Response<Body> {
    let a = Arc::clone(agent);
    let top = req
        .uri()
        .query()
        .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("top=")))
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    match tokio::task::spawn_blocking(move || {
        let body = a.scrape().to_vec();
        crate::exposition::cardinality::report(&String::from_utf8_lossy(&body)).render(top)
    })
    .await
    {
        Ok(text) => respond(StatusCode::OK, "text/plain; charset=utf-8", text),
        Err(e) => {
            tracing::error!(error = %e, "cardinality task failed");
            respond(StatusCode::INTERNAL_SERVER_ERROR, "text/plain", "failed\n")
        }
    }
}

/// Lets the kept collection go once no scrape can be served from it (see
/// [`Agent::release_stale`]). Only for collections of at least [`KEEP_BELOW`] bytes; a smaller
/// one is kept until the next scrape replaces it. The timer's wake-ups (two, with tokio's
/// wheel) cost ~0.1 ms of CPU on the development VM (`/metrics` with only the root cgroup:
/// 0.61 ms per scrape with the timer, 0.51 without), which is worth it for the ~2.8 MiB a
/// 1000-container collection holds, not for the ~0.26 MiB of 100 containers. One timer per
/// such scrape: the agent still does nothing between scrapes.
fn release_when_stale(agent: &Arc<Agent>, made_at: std::time::Instant) {
    let agent = Arc::clone(agent);
    let at = made_at + agent.min_interval();
    tokio::spawn(async move {
        tokio::time::sleep_until(at.into()).await;
        agent.release_stale();
    });
}

/// Serves until `shutdown` resolves, then stops accepting and lets in-flight requests finish
/// (up to 10 s).
///
/// A listener sent on `moves` replaces the current one (a SIGHUP with a new `listen`): the
/// old socket stops accepting, its open connections carry on to their end.
pub async fn serve(
    server: Arc<Server>,
    mut listener: tokio::net::TcpListener,
    mut moves: tokio::sync::mpsc::Receiver<tokio::net::TcpListener>,
    shutdown: impl std::future::Future<Output = ()>,
) -> std::io::Result<()> {
    let (stop, stopping) = tokio::sync::watch::channel(false);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            Some(moved) = moves.recv() => {
                if let Ok(addr) = moved.local_addr() {
                    tracing::info!(listen = %addr, "now listening here; connections to the old address finish as they are");
                }
                listener = moved;
            }
            accepted = listener.accept() => {
                let (stream, peer): (tokio::net::TcpStream, SocketAddr) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // EMFILE and friends: back off instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                // Over the limit with every connection busy: closed at once (dropped here).
                let Some((slot, evicted)) = server.connections.admit(std::os::fd::AsRawFd::as_raw_fd(&stream)) else {
                    continue;
                };
                let _ = stream.set_nodelay(true);
                tokio::spawn(connection(Arc::clone(&server), stream, peer, slot, stopping.clone()));
                if evicted {
                    // Under a flood, let the connections just accepted read their requests
                    // before accepting more: a scraper's fresh connection is then busy, not
                    // next in line to be evicted.
                    tokio::task::yield_now().await;
                }
            }
            () = &mut shutdown => break,
        }
    }
    tracing::info!("shutting down: draining connections");
    let _ = stop.send(true);
    if !server.connections.drained(Duration::from_secs(10)).await {
        tracing::warn!("connections still open after 10s; exiting");
    }
    Ok(())
}

/// Serves one connection over any byte stream, with podstat's limits and access checks:
/// the HTTP fuzz target (`fuzz/`) drives the request path in memory through it.
pub async fn serve_stream<I>(server: &Arc<Server>, io: I)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let Some((slot, _)) = server.connections.admit(-1) else {
        return;
    };
    let (_stop, stopping) = tokio::sync::watch::channel(false);
    let peer = SocketAddr::from(([127, 0, 0, 1], 0));
    drive(server, Watched::new(io, &slot), peer, &slot, stopping).await;
}

/// One connection: the TLS handshake if the web config asks for one, then HTTP/1.1 until the
/// client closes, a limit closes it, or podstat stops.
async fn connection(
    server: Arc<Server>,
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    slot: Slot,
    stopping: tokio::sync::watch::Receiver<bool>,
) {
    let web = server.web.current();
    let Some(tls) = web.tls.clone() else {
        drive(&server, Watched::new(stream, &slot), peer, &slot, stopping).await;
        return;
    };
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let limits = server.connections.limits();
    tokio::select! {
        handshake = tokio::time::timeout(limits.header_timeout, acceptor.accept(stream)) => match handshake {
            Ok(Ok(tls_stream)) => drive(&server, Watched::new(tls_stream, &slot), peer, &slot, stopping).await,
            Ok(Err(e)) => {
                server.connections.count_tls_failure();
                tracing::debug!(%peer, error = %e, "TLS handshake failed");
            }
            Err(_) => server.connections.count(Closed::HeaderTimeout),
        },
        () = slot.state.evicted() => {}
    }
}

async fn drive<I>(
    server: &Arc<Server>,
    io: Watched<I>,
    peer: SocketAddr,
    slot: &Slot,
    mut stopping: tokio::sync::watch::Receiver<bool>,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = {
        let server = Arc::clone(server);
        let state = Arc::clone(&slot.state);
        hyper::service::service_fn(move |req| handle(Arc::clone(&server), Arc::clone(&state), req))
    };
    let conn =
        hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(io), service);
    tokio::pin!(conn);
    let closed = loop {
        let (at, _) = server.connections.deadline(&slot.state);
        tokio::select! {
            ended = conn.as_mut() => {
                if let Err(e) = ended {
                    tracing::debug!(%peer, error = %e, "connection ended with an error");
                }
                return;
            }
            () = slot.state.evicted() => break Some(None),
            _ = stopping.changed() => break None,
            // The deadline moves closer: the header timeout now runs.
            () = slot.state.request_started() => {}
            () = tokio::time::sleep_until(at.into()) => {
                // The deadline may have moved (a request came in) since it was computed.
                let (at, why) = server.connections.deadline(&slot.state);
                if at <= std::time::Instant::now() {
                    break Some(Some(why));
                }
            }
        }
    };
    match closed {
        // Evicted (counted by the eviction), idle, too slow: no response is owed (an evicted
        // or idle connection has none in flight), and its descriptor must go now, not after
        // hyper waits for half-sent headers to finish.
        Some(why) => {
            if let Some(why) = why {
                server.connections.count(why);
                tracing::debug!(%peer, reason = why.as_str(), "connection closed");
            }
        }
        // Shutting down: a response in flight is finished first, briefly.
        None => {
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(Duration::from_secs(5), conn).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gzip_negotiation() {
        let h = |s: &'static str| HeaderValue::from_static(s);
        assert!(accepts_gzip(Some(&h("gzip"))));
        assert!(accepts_gzip(Some(&h("deflate, gzip;q=0.5"))));
        assert!(!accepts_gzip(Some(&h("gzip;q=0"))));
        assert!(!accepts_gzip(Some(&h("identity"))));
        assert!(!accepts_gzip(None));
    }
}
