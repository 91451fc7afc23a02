//! A real HTTPS "kubelet" for the metadata tests: TLS with a certificate generated for this
//! run (rcgen), a bearer-token check, and `/pods` answering whatever the test sets: a status,
//! a body, a delay. It runs on its own thread and runtime and stops when dropped.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio_rustls::rustls;

/// What `/pods` answers.
#[derive(Clone)]
pub struct Behavior {
    pub status: u16,
    pub body: Vec<u8>,
    pub delay: Duration,
    pub token: String,
}

impl Behavior {
    pub fn ok(body: Vec<u8>, token: &str) -> Behavior {
        Behavior {
            status: 200,
            body,
            delay: Duration::ZERO,
            token: token.to_owned(),
        }
    }
}

/// The certificate (PEM) and key of a test kubelet, valid for 127.0.0.1 and localhost.
pub struct TestCert {
    pub cert_pem: String,
    cert_der: Vec<u8>,
    key_der: Vec<u8>,
}

impl TestCert {
    pub fn generate() -> TestCert {
        let ck = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()])
            .expect("generate certificate");
        TestCert {
            cert_pem: ck.cert.pem(),
            cert_der: ck.cert.der().to_vec(),
            key_der: ck.signing_key.serialize_der(),
        }
    }

    /// A rustls server config presenting this certificate.
    pub fn server_config(&self) -> Arc<rustls::ServerConfig> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("tls versions")
            .with_no_client_auth()
            .with_single_cert(
                vec![rustls::pki_types::CertificateDer::from(
                    self.cert_der.clone(),
                )],
                rustls::pki_types::PrivateKeyDer::Pkcs8(self.key_der.clone().into()),
            )
            .expect("server cert");
        Arc::new(config)
    }

    /// Writes the certificate as a CA file for podstat's `ca_file`.
    pub fn write_ca(&self, dir: &Path) -> PathBuf {
        let path = dir.join("ca.crt");
        std::fs::write(&path, &self.cert_pem).expect("write ca");
        path
    }
}

pub struct FakeKubelet {
    pub addr: SocketAddr,
    pub behavior: Arc<Mutex<Behavior>>,
    /// Requests answered, and those that carried the expected token.
    pub requests: Arc<AtomicUsize>,
    pub authorized: Arc<AtomicUsize>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FakeKubelet {
    /// Starts on a free loopback port.
    pub fn start(cert: &TestCert, behavior: Behavior) -> FakeKubelet {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        FakeKubelet::start_with(cert, behavior, listener)
    }

    /// Starts on `addr` (a port a test reserved earlier, for "kubelet down at start").
    pub fn start_on(cert: &TestCert, behavior: Behavior, addr: SocketAddr) -> FakeKubelet {
        let listener = std::net::TcpListener::bind(addr).expect("bind reserved port");
        FakeKubelet::start_with(cert, behavior, listener)
    }

    fn start_with(
        cert: &TestCert,
        behavior: Behavior,
        listener: std::net::TcpListener,
    ) -> FakeKubelet {
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("addr");
        let acceptor = tokio_rustls::TlsAcceptor::from(cert.server_config());
        let behavior = Arc::new(Mutex::new(behavior));
        let requests = Arc::new(AtomicUsize::new(0));
        let authorized = Arc::new(AtomicUsize::new(0));
        let (b, r, a) = (
            Arc::clone(&behavior),
            Arc::clone(&requests),
            Arc::clone(&authorized),
        );
        let (stop, thread) = serve_on_thread(listener, move |tcp| {
            let acceptor = acceptor.clone();
            let (b, r, a) = (Arc::clone(&b), Arc::clone(&r), Arc::clone(&a));
            async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let service = hyper::service::service_fn(move |req| {
                    answer(req, Arc::clone(&b), Arc::clone(&r), Arc::clone(&a))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            }
        });
        FakeKubelet {
            addr,
            behavior,
            requests,
            authorized,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    pub fn url(&self) -> String {
        format!("https://{}/pods", self.addr)
    }

    pub fn set(&self, f: impl FnOnce(&mut Behavior)) {
        f(&mut self.behavior.lock().expect("behavior"));
    }
}

impl Drop for FakeKubelet {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Accepts connections on `listener` in a thread of its own (own runtime), handing each to
/// `conn`, until the returned sender is used or dropped.
pub fn serve_on_thread<F, Fut>(
    listener: std::net::TcpListener,
    conn: F,
) -> (
    tokio::sync::oneshot::Sender<()>,
    std::thread::JoinHandle<()>,
)
where
    F: Fn(tokio::net::TcpStream) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
            loop {
                let (tcp, _) = tokio::select! {
                    accepted = listener.accept() => match accepted {
                        Ok(a) => a,
                        Err(_) => continue,
                    },
                    _ = &mut stopped => break,
                };
                tokio::spawn(conn(tcp));
            }
        });
    });
    (stop, thread)
}

async fn answer(
    req: Request<Incoming>,
    behavior: Arc<Mutex<Behavior>>,
    requests: Arc<AtomicUsize>,
    authorized: Arc<AtomicUsize>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    requests.fetch_add(1, Ordering::SeqCst);
    let b = behavior
        .lock()
        .map(|b| b.clone())
        .unwrap_or_else(|p| p.into_inner().clone());
    if !b.delay.is_zero() {
        tokio::time::sleep(b.delay).await;
    }
    let expected = format!("Bearer {}", b.token);
    let token_ok = req
        .headers()
        .get(hyper::header::AUTHORIZATION)
        .is_some_and(|v| v.as_bytes() == expected.as_bytes());
    let (status, body) = if req.uri().path() != "/pods" {
        (404, b"not found".to_vec())
    } else if !token_ok {
        (401, b"Unauthorized".to_vec())
    } else {
        authorized.fetch_add(1, Ordering::SeqCst);
        (b.status, b.body)
    };
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    Ok(r)
}
