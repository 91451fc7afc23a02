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
use hyper::header::{HeaderValue, ACCEPT_ENCODING, CONTENT_ENCODING, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;

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

fn health_json(agent: &Agent, for_readiness: bool) -> (StatusCode, String) {
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
    (
        if ok {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        },
        body,
    )
}

async fn handle(
    agent: Arc<Agent>,
    gzip_enabled: bool,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return Ok(respond(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "method not allowed\n",
        ));
    }
    let response = match req.uri().path() {
        "/metrics" => {
            let gzip = gzip_enabled && accepts_gzip(req.headers().get(ACCEPT_ENCODING));
            // Collected and compressed right here, on the runtime's only thread: handing the
            // work to a blocking thread and back cost ~0.3-0.4 ms per scrape on the development
            // VM (2-3 % at 100 containers, `benches/ab.sh`), more than the wake-ups' syscalls
            // suggest. Requests that arrive meanwhile (a health probe, the other Prometheus of
            // an HA pair) wait for it, ~0.2 s at 1000 containers; the second scrape is then
            // served the same collection.
            let rendered = agent.scrape();
            let compressed = gzip.then(|| rendered.gzipped());
            if rendered.kept_bytes() >= KEEP_BELOW {
                release_when_stale(&agent, rendered.made_at);
            }
            let body = match compressed {
                Some(bytes) => Either::Left(Full::new(bytes)),
                None => Either::Right(MetricsStream(rendered.chunks())),
            };
            let mut r = with_body(StatusCode::OK, METRICS_CONTENT_TYPE, body);
            if gzip {
                r.headers_mut().insert(CONTENT_ENCODING, HeaderValue::from_static("gzip"));
            }
            r
        }
        "/cardinality" => {
            let a = Arc::clone(&agent);
            let top = req
                .uri()
                .query()
                .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("top=")))
                .and_then(|v| v.parse().ok())
                .unwrap_or(20);
            match tokio::task::spawn_blocking(move || {
                let body = a.scrape().to_vec();
                crate::expose::cardinality::report(&String::from_utf8_lossy(&body)).render(top)
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
        "/healthz" | "/-/healthy" => {
            let (status, body) = health_json(&agent, false);
            respond(status, "application/json", body)
        }
        "/readyz" | "/-/ready" => {
            let (status, body) = health_json(&agent, true);
            respond(status, "application/json", body)
        }
        "/" => respond(
            StatusCode::OK,
            "text/html; charset=utf-8",
            "<html><head><title>podstat</title></head><body><h1>podstat</h1><p><a href=\"/metrics\">/metrics</a> <a href=\"/healthz\">/healthz</a> <a href=\"/readyz\">/readyz</a> <a href=\"/cardinality\">/cardinality</a></p></body></html>\n",
        ),
        _ => respond(StatusCode::NOT_FOUND, "text/plain", "not found\n"),
    };
    Ok(response)
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
pub async fn serve(
    agent: Arc<Agent>,
    listener: tokio::net::TcpListener,
    gzip_enabled: bool,
    shutdown: impl std::future::Future<Output = ()>,
) -> std::io::Result<()> {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let http = hyper::server::conn::http1::Builder::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
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
                let agent = Arc::clone(&agent);
                let service = hyper::service::service_fn(move |req| handle(Arc::clone(&agent), gzip_enabled, req));
                let conn = http
                    .serve_connection(TokioIo::new(stream), service);
                let conn = graceful.watch(conn);
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        tracing::debug!(%peer, error = %e, "connection ended with an error");
                    }
                });
            }
            () = &mut shutdown => break,
        }
    }
    tracing::info!("shutting down: draining connections");
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(Duration::from_secs(10)) => tracing::warn!("connections still open after 10s; exiting"),
    }
    Ok(())
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
