//! TLS to the upstream: a CA file, the server name override, mutual TLS, and the failures
//! each misconfiguration gives. Certificates are made by the test.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::support::certs::{backend_tls, Pair, Pki};
use crate::support::*;
use protogate::demo::backend::{self, Handlers, Reply};
use protogate::server::{Gateway, Settings};
use protogate::snapshot::Snapshot;
use protogate::upstream::{UpstreamOptions, UpstreamTls};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

/// A gRPC backend over TLS that records the paths it was called with.
struct TlsBackend {
    port: u16,
    calls: Arc<Mutex<Vec<String>>>,
    _stop: oneshot::Sender<()>,
}

impl TlsBackend {
    /// Serves with `pair`; requires client certificates issued by `client_ca` when set.
    async fn start(pair: &Pair, client_ca: Option<&Path>) -> TlsBackend {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let calls = Arc::new(Mutex::new(Vec::new()));
        let recorded = calls.clone();
        let unary = backend::handler(move |call| {
            recorded.lock().unwrap().push(call.path.clone());
            async move {
                match call.path.as_str() {
                    "/grpc.health.v1.Health/Check" => {
                        Err(tonic::Status::unimplemented("no health service"))
                    }
                    _ => Ok(Reply::default()),
                }
            }
        });
        let handlers = Handlers {
            unary,
            streaming: None,
        };
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(backend::serve_tls(
            listener,
            handlers,
            backend_tls(pair, client_ca),
            async move {
                let _ = stopped.await;
            },
        ));
        TlsBackend {
            port,
            calls,
            _stop: stop,
        }
    }

    fn book_calls(&self) -> usize {
        let calls = self.calls.lock().unwrap();
        calls
            .iter()
            .filter(|p| *p == "/testapi.v1.Library/GetBook")
            .count()
    }
}

fn options(tls: UpstreamTls) -> UpstreamOptions {
    UpstreamOptions {
        connections: 2,
        connect_timeout: Duration::from_secs(2),
        tls,
        ..Default::default()
    }
}

async fn gateway(url: &str, options: UpstreamOptions) -> Gw {
    let (upstreams, map) = protogate::upstream::build_all(Some(url), &[], &options).unwrap();
    let snapshot = Snapshot::build(&library_sources(), &Default::default(), Some(&map)).unwrap();
    start_with(Gateway::new(snapshot, upstreams, Settings::default())).await
}

fn trusting(pki: &Pki) -> UpstreamTls {
    UpstreamTls {
        ca_file: Some(pki.ca.clone()),
        ..Default::default()
    }
}

async fn get_book(gw: &Gw) -> Resp {
    get(&format!("{}/v2/books/b1", gw.base)).await
}

fn message(resp: &Resp) -> String {
    resp.json()["message"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[tokio::test]
async fn tls_upstream_verified_with_a_ca_file() {
    let pki = Pki::new("upstream");
    let server = pki.server("server", &["localhost", "127.0.0.1"], "backend");
    let backend = TlsBackend::start(&server, None).await;

    // By address (an IP SAN) and by name (a DNS SAN).
    for host in ["127.0.0.1", "localhost"] {
        let url = format!("https://{host}:{}", backend.port);
        let gw = gateway(&url, options(trusting(&pki))).await;
        let resp = get_book(&gw).await;
        assert_eq!(resp.status, 200, "{host}: {:?}", resp.body);
        let ready = get(&format!("{}/readyz", gw.base)).await;
        assert_eq!(ready.status, 200, "{:?}", ready.body);
    }
    assert_eq!(backend.book_calls(), 2);
}

#[tokio::test]
async fn an_untrusted_certificate_is_unavailable() {
    let pki = Pki::new("upstream");
    let server = pki.server("server", &["127.0.0.1"], "backend");
    let backend = TlsBackend::start(&server, None).await;
    let other = Pki::new("other");
    let url = format!("https://127.0.0.1:{}", backend.port);

    let gw = gateway(&url, options(trusting(&other))).await;
    let resp = get_book(&gw).await;
    assert_eq!(resp.status, 503);
    let text = message(&resp);
    assert_eq!(
        text,
        "service testapi.v1.Library is unavailable: \
         TLS handshake failed: the upstream's certificate is not trusted"
    );
    assert_eq!(backend.book_calls(), 0);
}

#[tokio::test]
async fn the_server_name_can_differ_from_the_host() {
    let pki = Pki::new("upstream");
    // Issued for a Service name only, reached by address.
    let server = pki.server("server", &["vps.prod.svc"], "backend");
    let backend = TlsBackend::start(&server, None).await;
    let url = format!("https://127.0.0.1:{}", backend.port);

    let gw = gateway(&url, options(trusting(&pki))).await;
    let resp = get_book(&gw).await;
    assert_eq!(resp.status, 503);
    let text = message(&resp);
    assert!(
        text.ends_with("certificate is not valid for its name"),
        "{text}"
    );
    assert!(
        !text.contains("127.0.0.1") && !text.contains("vps.prod.svc"),
        "{text}"
    );

    let tls = UpstreamTls {
        server_name: Some("vps.prod.svc".into()),
        ..trusting(&pki)
    };
    let gw = gateway(&url, options(tls)).await;
    let resp = get_book(&gw).await;
    assert_eq!(resp.status, 200, "{:?}", resp.body);
    assert_eq!(backend.book_calls(), 1);
}

#[tokio::test]
async fn mutual_tls_presents_the_client_certificate() {
    let pki = Pki::new("upstream");
    let server = pki.server("server", &["127.0.0.1"], "backend");
    let client = pki.client("client", "protogate");
    let backend = TlsBackend::start(&server, Some(&pki.ca)).await;
    let url = format!("https://127.0.0.1:{}", backend.port);

    let tls = UpstreamTls {
        client_cert: Some(client.cert.clone()),
        client_key: Some(client.key.clone()),
        ..trusting(&pki)
    };
    let gw = gateway(&url, options(tls)).await;
    for _ in 0..3 {
        let resp = get_book(&gw).await;
        assert_eq!(resp.status, 200, "{:?}", resp.body);
    }
    assert_eq!(backend.book_calls(), 3);

    // Without a client certificate the backend ends the connection: no call reaches it.
    let gw = gateway(&url, options(trusting(&pki))).await;
    let resp = get_book(&gw).await;
    assert_eq!(resp.status, 503, "{:?}", resp.body);
    assert_eq!(backend.book_calls(), 3);
}

#[tokio::test]
async fn a_client_certificate_from_another_ca_is_refused() {
    let pki = Pki::new("upstream");
    let server = pki.server("server", &["127.0.0.1"], "backend");
    let backend = TlsBackend::start(&server, Some(&pki.ca)).await;
    let strangers = Pki::new("stranger");
    let stranger = strangers.client("client", "intruder");
    let tls = UpstreamTls {
        client_cert: Some(stranger.cert.clone()),
        client_key: Some(stranger.key.clone()),
        ..trusting(&pki)
    };
    let gw = gateway(&format!("https://127.0.0.1:{}", backend.port), options(tls)).await;
    let resp = get_book(&gw).await;
    assert_eq!(resp.status, 503, "{:?}", resp.body);
    assert_eq!(backend.book_calls(), 0);
}

#[test]
fn bad_tls_settings_fail_at_start_up() {
    let pki = Pki::new("upstream");
    let client = pki.client("client", "protogate");
    let cases = [
        (
            UpstreamTls {
                ca_file: Some(pki.path("missing.pem")),
                ..Default::default()
            },
            "missing.pem",
        ),
        (
            UpstreamTls {
                client_cert: Some(client.cert.clone()),
                ..trusting(&pki)
            },
            "needs its key",
        ),
        (
            UpstreamTls {
                client_cert: Some(client.cert.clone()),
                client_key: Some(pki.ca.clone()),
                ..trusting(&pki)
            },
            "private key",
        ),
        (
            UpstreamTls {
                server_name: Some("not a name!".into()),
                ..trusting(&pki)
            },
            "server name",
        ),
    ];
    for (tls, needle) in cases {
        let e = protogate::upstream::build_all(Some("https://127.0.0.1:1"), &[], &options(tls))
            .unwrap_err()
            .to_string();
        assert!(e.contains(needle), "{needle}: {e}");
    }
    // TLS settings do not matter to h2c upstreams.
    let tls = UpstreamTls {
        ca_file: Some(pki.path("missing.pem")),
        ..Default::default()
    };
    assert!(protogate::upstream::build_all(Some("http://127.0.0.1:1"), &[], &options(tls)).is_ok());
}
