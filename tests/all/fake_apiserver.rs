//! A real HTTP "API server" for the apiserver-mode test: `GET /api/v1/pods` answers a list,
//! `?watch=true` a streamed watch (one JSON event per line) that the test feeds, drops, or
//! answers with `410 Gone` to force a re-list. Counts lists and watches and records the
//! `resourceVersion` each watch resumed from.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::body::{Bytes, Frame, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;

#[derive(Default)]
pub struct State {
    pub pods: Vec<serde_json::Value>,
    pub resource_version: u64,
    pub lists: usize,
    pub watches: usize,
    /// `resourceVersion` of each watch request.
    pub watch_from: Vec<String>,
    /// Bearer tokens seen.
    pub tokens: Vec<String>,
    /// The next watch answers 410 Gone.
    pub gone: bool,
    open: Vec<tokio::sync::mpsc::UnboundedSender<Bytes>>,
}

pub struct FakeApiServer {
    pub addr: SocketAddr,
    pub state: Arc<Mutex<State>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FakeApiServer {
    pub fn start(pods: Vec<serde_json::Value>) -> FakeApiServer {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("addr");
        let state = Arc::new(Mutex::new(State {
            pods,
            resource_version: 100,
            ..State::default()
        }));
        let shared = Arc::clone(&state);
        let (stop, thread) = crate::fake_kubelet::serve_on_thread(listener, move |tcp| {
            let state = Arc::clone(&shared);
            async move {
                let service =
                    hyper::service::service_fn(move |req| answer(req, Arc::clone(&state)));
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), service)
                    .await;
            }
        });
        FakeApiServer {
            addr,
            state,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Sends a watch event (`ADDED`, `MODIFIED`, `DELETED`) to every open watch and applies
    /// it to the list.
    pub fn event(&self, kind: &str, mut pod: serde_json::Value) {
        let mut s = self.state.lock().expect("state");
        s.resource_version += 1;
        let rv = s.resource_version.to_string();
        pod["metadata"]["resourceVersion"] = serde_json::Value::String(rv);
        let uid = pod["metadata"]["uid"].clone();
        s.pods.retain(|p| p["metadata"]["uid"] != uid);
        if kind != "DELETED" {
            s.pods.push(pod.clone());
        }
        pod["kind"] = "Pod".into();
        pod["apiVersion"] = "v1".into();
        let line =
            serde_json::to_vec(&serde_json::json!({"type": kind, "object": pod})).expect("json");
        let mut line = line;
        line.push(b'\n');
        let bytes = Bytes::from(line);
        s.open.retain(|tx| tx.send(bytes.clone()).is_ok());
    }

    /// Ends every open watch (as a load balancer or an API-server restart does).
    pub fn drop_watches(&self) {
        self.state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .open
            .clear();
    }
}

impl Drop for FakeApiServer {
    fn drop(&mut self) {
        self.drop_watches();
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

type Body = BoxBody<Bytes, Infallible>;

async fn answer(
    req: Request<Incoming>,
    state: Arc<Mutex<State>>,
) -> Result<Response<Body>, Infallible> {
    let query = req.uri().query().unwrap_or("").to_owned();
    let param = |k: &str| {
        query
            .split('&')
            .find_map(|kv| kv.strip_prefix(&format!("{k}=")))
            .map(str::to_owned)
    };
    let mut s = state.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(t) = req
        .headers()
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        s.tokens.push(t.to_owned());
    }
    if req.uri().path() != "/api/v1/pods" {
        let mut r = Response::new(Full::new(Bytes::from_static(b"{}")).boxed());
        *r.status_mut() = hyper::StatusCode::NOT_FOUND;
        return Ok(r);
    }
    if param("watch").as_deref() == Some("true") || param("watch").as_deref() == Some("1") {
        s.watches += 1;
        s.watch_from
            .push(param("resourceVersion").unwrap_or_default());
        if std::mem::take(&mut s.gone) {
            let gone = serde_json::json!({"type": "ERROR", "object": {"kind": "Status", "apiVersion": "v1",
                "status": "Failure", "reason": "Expired", "code": 410, "message": "too old resource version"}});
            let mut line = serde_json::to_vec(&gone).expect("json");
            line.push(b'\n');
            return Ok(Response::new(Full::new(Bytes::from(line)).boxed()));
        }
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Bytes>();
        s.open.push(tx);
        let stream = futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv()
                .await
                .map(|b| (Ok::<_, Infallible>(Frame::data(b)), rx))
        });
        return Ok(Response::new(StreamBody::new(stream).boxed()));
    }
    s.lists += 1;
    let list = serde_json::json!({"kind": "PodList", "apiVersion": "v1",
        "metadata": {"resourceVersion": s.resource_version.to_string()}, "items": s.pods});
    Ok(Response::new(
        Full::new(Bytes::from(serde_json::to_vec(&list).expect("json"))).boxed(),
    ))
}
