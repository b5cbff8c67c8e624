//! TLS on the serving port: HTTP/1.1 and HTTP/2 by ALPN, and a rotated certificate served
//! to new connections without a restart. Certificates are made by the test.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use crate::support::certs::{certs, client_tls, Pair, Pki};
use crate::support::*;
use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use protogate::server::{Gateway, Settings};
use protogate::snapshot::Snapshot;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio_rustls::client::TlsStream;

/// The gateway served over TLS with the certificate files of `pair`.
struct TlsGateway {
    addr: SocketAddr,
    _backend: Backend,
    _stop: oneshot::Sender<()>,
}

async fn start(pair: &Pair) -> TlsGateway {
    let backend = Backend::start(reply_with(Bytes::new())).await;
    let options = protogate::upstream::UpstreamOptions::default();
    let (upstreams, map) =
        protogate::upstream::build_all(Some(&backend.url), &[], &options).unwrap();
    let snapshot = Snapshot::build(&library_sources(), &Default::default(), Some(&map)).unwrap();
    // Detection gets a second (30 s by default), so the silent-client test is quick.
    let settings = Settings {
        detection_timeout: Duration::from_secs(1),
        ..Settings::default()
    };
    let gateway = Gateway::new(snapshot, upstreams, settings);
    let config = protogate::tls::server_config(&pair.cert, &pair.key).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(protogate::server::serve_tls(
        listener,
        gateway,
        config,
        async move {
            let _ = stopped.await;
        },
        Duration::from_secs(1),
    ));
    TlsGateway {
        addr,
        _backend: backend,
        _stop: stop,
    }
}

/// A TLS connection to `addr` as `localhost`, trusting `ca`, offering `alpn`.
async fn connect(addr: SocketAddr, ca: &Path, alpn: &[&[u8]]) -> TlsStream<TcpStream> {
    let connector = tokio_rustls::TlsConnector::from(client_tls(ca, alpn));
    let tcp = bounded(TcpStream::connect(addr)).await.unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    bounded(connector.connect(name, tcp)).await.unwrap()
}

fn presented(stream: &TlsStream<TcpStream>) -> CertificateDer<'static> {
    let (_, session) = stream.get_ref();
    session.peer_certificates().unwrap()[0].clone().into_owned()
}

fn alpn(stream: &TlsStream<TcpStream>) -> Option<Vec<u8>> {
    stream.get_ref().1.alpn_protocol().map(<[u8]>::to_vec)
}

type H1 = hyper::client::conn::http1::SendRequest<Empty<Bytes>>;

async fn http1(stream: TlsStream<TcpStream>) -> H1 {
    let (sender, conn) = bounded(hyper::client::conn::http1::handshake(TokioIo::new(stream)))
        .await
        .unwrap();
    tokio::spawn(conn);
    sender
}

async fn get_on(sender: &mut H1, path: &str) -> (StatusCode, http::Version) {
    let request = Request::get(path)
        .header("host", "localhost")
        .body(Empty::new())
        .unwrap();
    let response = bounded(sender.send_request(request)).await.unwrap();
    let version = response.version();
    let status = response.status();
    bounded(response.into_body().collect()).await.unwrap();
    (status, version)
}

#[tokio::test]
async fn rest_over_tls_with_http1_and_http2_by_alpn() {
    let pki = Pki::new("gateway");
    let pair = pki.server("server", &["localhost"], "first");
    let gw = start(&pair).await;

    let stream = connect(gw.addr, &pki.ca, &[b"h2", b"http/1.1"]).await;
    assert_eq!(alpn(&stream).as_deref(), Some(&b"h2"[..]));
    let (mut sender, conn) = bounded(hyper::client::conn::http2::handshake(
        TokioExecutor::new(),
        TokioIo::new(stream),
    ))
    .await
    .unwrap();
    tokio::spawn(conn);
    let request = Request::get("https://localhost/v2/books/b1")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let response = bounded(sender.send_request(request)).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.version(), http::Version::HTTP_2);

    let stream = connect(gw.addr, &pki.ca, &[b"http/1.1"]).await;
    assert_eq!(alpn(&stream).as_deref(), Some(&b"http/1.1"[..]));
    let mut h1 = http1(stream).await;
    assert_eq!(
        get_on(&mut h1, "/v2/books/b1").await,
        (StatusCode::OK, http::Version::HTTP_11)
    );
    assert_eq!(get_on(&mut h1, "/healthz").await.0, StatusCode::OK);
}

#[tokio::test]
async fn plain_http_on_the_tls_port_gets_no_answer() {
    let pki = Pki::new("gateway");
    let gw = start(&pki.server("server", &["localhost"], "first")).await;
    let tcp = bounded(TcpStream::connect(gw.addr)).await.unwrap();
    let (mut sender, conn) = bounded(hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(
        TokioIo::new(tcp),
    ))
    .await
    .unwrap();
    tokio::spawn(conn);
    let request = Request::get("/healthz")
        .header("host", "localhost")
        .body(Empty::new())
        .unwrap();
    assert!(bounded(sender.send_request(request)).await.is_err());
}

/// A client that completes the handshake and then sends nothing, or stops inside the HTTP/2
/// preface, is closed once the protocol detection time is up.
#[tokio::test]
async fn a_client_silent_after_the_handshake_is_closed() {
    let pki = Pki::new("gateway");
    let gw = start(&pki.server("server", &["localhost"], "first")).await;
    let silent = connect(gw.addr, &pki.ca, &[b"h2"]).await;
    let mut partial = connect(gw.addr, &pki.ca, &[b"h2"]).await;
    partial.write_all(b"PRI * HTTP/2.0\r\n").await.unwrap();
    partial.flush().await.unwrap();
    for mut stream in [silent, partial] {
        let closed = tokio::time::timeout(TIMEOUT, async {
            let mut buf = [0u8; 256];
            while let Ok(n) = stream.read(&mut buf).await {
                if n == 0 {
                    break;
                }
            }
        });
        assert!(closed.await.is_ok(), "still open after {TIMEOUT:?}");
    }
}

/// Replaces `target`'s files with `source`'s the way a Secret volume or cert-manager does:
/// new files renamed over the old ones.
fn rotate(source: &Pair, target: &Pair) {
    let dir = target.cert.parent().unwrap();
    for (from, to) in [(&source.key, &target.key), (&source.cert, &target.cert)] {
        let tmp = dir.join("rotating.tmp");
        std::fs::copy(from, &tmp).unwrap();
        std::fs::rename(&tmp, to).unwrap();
    }
}

#[tokio::test]
async fn a_rotated_certificate_is_served_to_new_connections() {
    let pki = Pki::new("gateway");
    let live = pki.server("live", &["localhost"], "first");
    let first = certs(&live.cert).remove(0);
    let gw = start(&live).await;

    let stream = connect(gw.addr, &pki.ca, &[b"http/1.1"]).await;
    assert_eq!(presented(&stream), first);
    let mut old = http1(stream).await;
    assert_eq!(get_on(&mut old, "/healthz").await.0, StatusCode::OK);

    let next = pki.server("next", &["localhost"], "second");
    let second = certs(&next.cert).remove(0);
    rotate(&next, &live);
    let stream = connect(gw.addr, &pki.ca, &[b"http/1.1"]).await;
    assert_eq!(presented(&stream), second, "the new certificate is served");
    let mut new = http1(stream).await;
    assert_eq!(get_on(&mut new, "/v2/books/b1").await.0, StatusCode::OK);
    // The connection made before the rotation goes on.
    assert_eq!(get_on(&mut old, "/v2/books/b1").await.0, StatusCode::OK);
}

#[tokio::test]
async fn a_broken_rotation_keeps_the_previous_certificate() {
    let pki = Pki::new("gateway");
    let live = pki.server("live", &["localhost"], "first");
    let first = certs(&live.cert).remove(0);
    let gw = start(&live).await;

    // A certificate whose key has not arrived yet: the pair does not match.
    let next = pki.server("next", &["localhost"], "second");
    let tmp = live.cert.with_extension("tmp");
    std::fs::copy(&next.cert, &tmp).unwrap();
    std::fs::rename(&tmp, &live.cert).unwrap();
    let stream = connect(gw.addr, &pki.ca, &[b"http/1.1"]).await;
    assert_eq!(presented(&stream), first, "the old pair stays in service");

    // The key follows: the new pair is served.
    rotate(&next, &live);
    let stream = connect(gw.addr, &pki.ca, &[b"http/1.1"]).await;
    assert_eq!(presented(&stream), certs(&next.cert).remove(0));
}

#[test]
fn a_bad_pair_fails_at_start_up() {
    let pki = Pki::new("gateway");
    let a = pki.server("a", &["localhost"], "a");
    let b = pki.server("b", &["localhost"], "b");
    let e = protogate::tls::server_config(&a.cert, &b.key).unwrap_err();
    assert!(e.contains("a.pem") && e.contains("b.key"), "{e}");
    let e = protogate::tls::server_config(&pki.path("none.pem"), &a.key).unwrap_err();
    assert!(e.contains("none.pem"), "{e}");
    let e = protogate::tls::server_config(&a.cert, &a.cert).unwrap_err();
    assert!(e.contains("private key"), "{e}");
}
