//! HTTP server: `/metrics`, `/healthz`, `/readyz` (and the `/-/healthy`, `/-/ready` aliases).
//! hyper 1 without a router: five fixed paths do not need one.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderValue, ACCEPT_ENCODING, CONTENT_ENCODING, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;

use crate::agent::{Agent, Rendered};

struct PlainBody(Arc<Rendered>);
impl AsRef<[u8]> for PlainBody {
    fn as_ref(&self) -> &[u8] {
        &self.0.body
    }
}
struct GzipBody(Arc<Rendered>);
impl AsRef<[u8]> for GzipBody {
    fn as_ref(&self) -> &[u8] {
        self.0.gzipped()
    }
}

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
) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
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
    let body = format!(
        "{{\"status\":\"{}\",\"components\":{{\"cgroup_reader\":{{\"status\":\"{}\",\"cgroup_mode\":\"{}\",\"containers\":{},\"last_success_age_seconds\":{},\"error\":{}}}}}}}\n",
        if ok { "ok" } else { "unavailable" },
        reader_status,
        agent.mode,
        h.containers,
        age.map_or("null".to_string(), |a| format!("{a:.3}")),
        h.last_error.map_or("null".to_string(), |e| format!("{e:?}")),
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
) -> Result<Response<Full<Bytes>>, Infallible> {
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
            let a = Arc::clone(&agent);
            match tokio::task::spawn_blocking(move || a.scrape()).await {
                Ok(rendered) => {
                    // Serve the shared body without copying it (it can be megabytes).
                    let body = if gzip {
                        rendered.gzipped();
                        Bytes::from_owner(GzipBody(rendered))
                    } else {
                        Bytes::from_owner(PlainBody(rendered))
                    };
                    let mut r = respond(StatusCode::OK, METRICS_CONTENT_TYPE, body);
                    if gzip {
                        r.headers_mut().insert(CONTENT_ENCODING, HeaderValue::from_static("gzip"));
                    }
                    r
                }
                Err(e) => {
                    tracing::error!(error = %e, "collection task failed");
                    respond(StatusCode::INTERNAL_SERVER_ERROR, "text/plain", "collection failed\n")
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
            "<html><head><title>podstat</title></head><body><h1>podstat</h1><p><a href=\"/metrics\">/metrics</a> <a href=\"/healthz\">/healthz</a> <a href=\"/readyz\">/readyz</a></p></body></html>\n",
        ),
        _ => respond(StatusCode::NOT_FOUND, "text/plain", "not found\n"),
    };
    Ok(response)
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
