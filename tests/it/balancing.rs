//! Several endpoints behind one upstream: traffic spread by least load, an endpoint that
//! stops taken out without client errors, connect failures retried elsewhere, and the
//! endpoint set from a static list or a DNS name.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::support::*;
use protogate::demo::backend::{self, Handlers, Reply};
use protogate::server::{Gateway, Settings};
use protogate::snapshot::Snapshot;
use protogate::upstream::{Upstream, UpstreamOptions};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A backend on one loopback address that counts its calls and can be stopped for good.
struct Replica {
    addr: SocketAddr,
    calls: Arc<AtomicUsize>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl Replica {
    async fn start(listener: TcpListener, delay: Option<Duration>) -> Replica {
        let addr = listener.local_addr().unwrap();
        let calls = Arc::new(AtomicUsize::new(0));
        let counted = calls.clone();
        let unary = backend::handler(move |call| {
            let counted = counted.clone();
            async move {
                if call.path == "/grpc.health.v1.Health/Check" {
                    return Err(tonic::Status::unimplemented("no health service"));
                }
                counted.fetch_add(1, Ordering::SeqCst);
                if let Some(d) = delay {
                    tokio::time::sleep(d).await;
                }
                Ok(Reply::default())
            }
        });
        let handlers = Handlers {
            unary,
            streaming: None,
        };
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(backend::serve_all(listener, handlers, async move {
            let _ = stopped.await;
        }));
        Replica {
            addr,
            calls,
            stop: Some(stop),
            task,
        }
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    /// Stops accepting and closes every connection, as when the pod goes away; returns once
    /// the listener is closed.
    async fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        bounded(&mut self.task).await.unwrap();
    }
}

/// Listeners on 127.0.0.1, 127.0.0.2, 127.0.0.3 with one port, so that one `host:port` list
/// (or one name with three addresses) covers them.
async fn three_listeners() -> Vec<TcpListener> {
    for _ in 0..20 {
        let first = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = first.local_addr().unwrap().port();
        let second = TcpListener::bind(("127.0.0.2", port)).await;
        let third = TcpListener::bind(("127.0.0.3", port)).await;
        if let (Ok(second), Ok(third)) = (second, third) {
            return vec![first, second, third];
        }
    }
    panic!("no port free on 127.0.0.1, 127.0.0.2 and 127.0.0.3 at once");
}

fn static_url(replicas: &[Replica]) -> String {
    let hosts: Vec<String> = replicas.iter().map(|r| r.addr.to_string()).collect();
    format!("http://{}", hosts.join(","))
}

/// The gateway for the library API with one upstream at `url`.
async fn gateway(url: &str, options: UpstreamOptions) -> (Gw, Arc<Upstream>) {
    let (upstreams, map) = protogate::upstream::build_all(Some(url), &[], &options).unwrap();
    let upstream = upstreams[0].clone();
    let snapshot = Snapshot::build(&library_sources(), &Default::default(), Some(&map)).unwrap();
    let gw = start_with(Gateway::new(snapshot, upstreams, Settings::default())).await;
    (gw, upstream)
}

fn options() -> UpstreamOptions {
    UpstreamOptions {
        connections: 2,
        connect_timeout: Duration::from_secs(2),
        ..Default::default()
    }
}

/// Sends `count` requests from `workers` concurrent clients; returns the statuses that were
/// not 200 with their bodies.
async fn load(base: &str, workers: usize, count: usize) -> Vec<(u16, String)> {
    let url = format!("{base}/v2/books/b1");
    let tasks: Vec<_> = (0..workers)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move {
                let mut failures = Vec::new();
                for _ in 0..count / workers {
                    let r = get(&url).await;
                    if r.status != 200 {
                        failures.push((
                            r.status.as_u16(),
                            String::from_utf8_lossy(&r.body).to_string(),
                        ));
                    }
                }
                failures
            })
        })
        .collect();
    let mut failures = Vec::new();
    for t in tasks {
        failures.extend(bounded(t).await.unwrap());
    }
    failures
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_share_the_traffic_and_one_stops_without_client_errors() {
    let mut replicas = Vec::new();
    for listener in three_listeners().await {
        replicas.push(Replica::start(listener, None).await);
    }
    let (gw, upstream) = gateway(&static_url(&replicas), options()).await;

    let failures = load(&gw.base, 4, 150).await;
    assert!(failures.is_empty(), "{failures:?}");
    let before: Vec<usize> = replicas.iter().map(Replica::calls).collect();
    assert_eq!(before.iter().sum::<usize>(), 148, "{before:?}");
    assert!(
        before.iter().all(|&n| n >= 10),
        "every replica serves: {before:?}"
    );

    // Stop the second replica while requests keep coming.
    let base = gw.base.clone();
    let traffic = tokio::spawn(async move { load(&base, 4, 200).await });
    bounded(async {
        while replicas.iter().map(Replica::calls).sum::<usize>() < 148 + 40 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await;
    replicas[1].stop().await;
    let at_stop = replicas[1].calls();
    let failures = bounded(traffic).await.unwrap();

    // Only requests the stopped replica held when it went away may fail: with 4 workers, at
    // most 4. Requests that found its connections closed, or could not connect, went to the
    // others.
    assert!(failures.len() <= 4, "{failures:?}");
    assert!(
        failures.iter().all(|(status, _)| *status >= 500),
        "{failures:?}"
    );
    // The connections' tasks end at their next step after the stop: a call already being
    // handled then may still be counted, nothing later is.
    assert!(
        replicas[1].calls() <= at_stop + 4,
        "the stopped replica got calls: {} after {at_stop}",
        replicas[1].calls()
    );
    let after: Vec<usize> = replicas.iter().map(Replica::calls).collect();
    assert!(after[0] > before[0] && after[2] > before[2], "{after:?}");
    // Every request was served or failed; one the stopped replica was handling when it went
    // away may be both counted there and failed.
    let served = after.iter().sum::<usize>();
    assert!(served <= 148 + 200, "{after:?}");
    assert!(
        served + failures.len() >= 148 + 200,
        "{after:?} {failures:?}"
    );

    let endpoints = upstream.endpoints();
    assert_eq!(endpoints.len(), 3);
    let stopped = endpoints
        .iter()
        .find(|e| e.addr == replicas[1].addr)
        .unwrap();
    assert!(!stopped.healthy, "{endpoints:?}");
    assert!(
        endpoints.iter().all(|e| e.in_flight == 0),
        "every response body released its endpoint: {endpoints:?}"
    );
    let counts = upstream.connection_counts();
    assert!(counts.connected >= 2, "{counts:?}");
    assert!(counts.failed >= 1, "{counts:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_less_loaded_replica_gets_more_requests() {
    let listeners = three_listeners().await;
    let mut listeners = listeners.into_iter();
    let slow = Replica::start(listeners.next().unwrap(), Some(Duration::from_millis(100))).await;
    let fast = Replica::start(listeners.next().unwrap(), None).await;
    let url = format!("http://{},{}", slow.addr, fast.addr);
    let (gw, upstream) = gateway(&url, options()).await;

    let failures = load(&gw.base, 4, 80).await;
    assert!(failures.is_empty(), "{failures:?}");
    let (slow_calls, fast_calls) = (slow.calls(), fast.calls());
    assert_eq!(slow_calls + fast_calls, 80);
    assert!(
        fast_calls > 3 * slow_calls,
        "slow {slow_calls}, fast {fast_calls}"
    );
    assert!(upstream.endpoints().iter().all(|e| e.in_flight == 0));
}

#[tokio::test]
async fn a_refused_connection_is_retried_on_another_endpoint() {
    let listeners = three_listeners().await;
    let live_addr = listeners[0].local_addr().unwrap();
    let dead_addr = listeners[1].local_addr().unwrap();
    drop(listeners);
    let live = Replica::start(TcpListener::bind(live_addr).await.unwrap(), None).await;
    let (gw, upstream) = gateway(&format!("http://{dead_addr},{live_addr}"), options()).await;

    let failures = load(&gw.base, 1, 30).await;
    assert!(failures.is_empty(), "{failures:?}");
    assert_eq!(live.calls(), 30);
    let dead = upstream
        .endpoints()
        .into_iter()
        .find(|e| e.addr == dead_addr)
        .unwrap();
    assert!(!dead.healthy);
}

#[tokio::test]
async fn when_every_endpoint_is_down_requests_fail_fast() {
    let listeners = three_listeners().await;
    let addrs: Vec<SocketAddr> = listeners.iter().map(|l| l.local_addr().unwrap()).collect();
    drop(listeners);
    let url = format!("http://{},{}", addrs[0], addrs[1]);
    let (gw, _) = gateway(&url, options()).await;
    for _ in 0..3 {
        let r = get(&format!("{}/v2/books/b1", gw.base)).await;
        assert_eq!(r.status, 503);
        let message = r.json()["message"].as_str().unwrap().to_string();
        assert!(message.contains("is unavailable"), "{message}");
        assert!(message.contains("cannot connect"), "{message}");
    }
    let ready = get(&format!("{}/readyz", gw.base)).await;
    assert_eq!(ready.status, 503);
    let text = String::from_utf8_lossy(&ready.body).to_string();
    assert!(
        text.contains(&addrs[0].to_string()) && text.contains(&addrs[1].to_string()),
        "{text}"
    );
}

#[tokio::test]
async fn an_endpoint_that_comes_back_is_used_again() {
    let listeners = three_listeners().await;
    let addrs: Vec<SocketAddr> = listeners.iter().map(|l| l.local_addr().unwrap()).collect();
    let mut listeners = listeners.into_iter();
    let first = Replica::start(listeners.next().unwrap(), None).await;
    drop(listeners);
    let url = format!("http://{},{}", addrs[0], addrs[1]);
    let (gw, upstream) = gateway(&url, options()).await;
    assert!(load(&gw.base, 1, 10).await.is_empty());
    assert_eq!(first.calls(), 10);

    // The second comes up: the background reconnection (100 ms, doubling) finds it.
    let second = Replica::start(TcpListener::bind(addrs[1]).await.unwrap(), None).await;
    bounded(async {
        while !upstream.endpoints().iter().all(|e| e.healthy) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(load(&gw.base, 2, 100).await.is_empty());
    assert!(second.calls() >= 10, "{}", second.calls());
}

#[tokio::test]
async fn a_dns_name_is_resolved_into_endpoints() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let replica = Replica::start(listener, None).await;
    let options = UpstreamOptions {
        resolve_interval: Duration::from_millis(100),
        ..options()
    };
    let (gw, upstream) = gateway(&format!("http://localhost:{port}"), options).await;
    assert!(upstream.endpoints().is_empty(), "resolved on first use");
    assert!(load(&gw.base, 2, 20).await.is_empty());
    assert_eq!(replica.calls(), 20);
    let endpoints = upstream.endpoints();
    assert!(
        endpoints
            .iter()
            .any(|e| e.addr == SocketAddr::new(IpAddr::from([127, 0, 0, 1]), port)),
        "{endpoints:?}"
    );
    // The request authority is the name as configured, not an address.
    let uri = upstream.uri(&"/a.B/C".parse().unwrap()).unwrap();
    assert_eq!(uri.to_string(), format!("http://localhost:{port}/a.B/C"));
}

#[test]
fn static_lists_work_in_service_upstream_flags_too() {
    // clap splits --service-upstream values at commas: the parts without `=` belong to
    // the previous value's list.
    let per_service = vec![
        "testapi.v1.Library=http://127.0.0.1:1".to_string(),
        "127.0.0.2:1".to_string(),
        "other.Svc=http://127.0.0.3:2".to_string(),
    ];
    let (list, map) = protogate::upstream::build_all(None, &per_service, &options()).unwrap();
    let urls: Vec<&str> = list.iter().map(|u| u.url()).collect();
    assert_eq!(
        urls,
        ["http://127.0.0.1:1,127.0.0.2:1", "http://127.0.0.3:2"]
    );
    assert_eq!(map.by_service["testapi.v1.Library"], 0);
    assert_eq!(map.by_service["other.Svc"], 1);
}
