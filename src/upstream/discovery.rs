//! Where an upstream's endpoints are: the `host:port` entries of its URL, resolved on first
//! use and again every `resolve_interval`, and the endpoint set that follows the answers.
//!
//! A Kubernetes ClusterIP Service balances per TCP connection, so long-lived HTTP/2
//! connections pin to a few pods; a headless Service instead answers one address per ready
//! pod, and re-resolving it is how pods that come and go are found. Entries that are
//! addresses already (a static list) are not re-resolved at all.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Weak};
use std::time::Duration;

use arc_swap::ArcSwap;
use http::uri::{Authority, Scheme};
use tokio::sync::OnceCell;

use super::connect::Connector;
use super::endpoint::Endpoint;
use super::{Unreachable, UpstreamOptions};

/// An upstream URL, parsed: the scheme and its `host:port` entries.
#[derive(Debug, Clone)]
pub(super) struct Target {
    pub scheme: Scheme,
    entries: Vec<Entry>,
}

/// One `host:port` of a URL.
#[derive(Debug, Clone, PartialEq)]
struct Entry {
    /// As written (brackets kept around IPv6 addresses).
    text: String,
    /// The host without brackets.
    host: String,
    port: u16,
    /// Set when the host is an address, which needs no resolution.
    ip: Option<IpAddr>,
}

impl Target {
    /// Parses `http://host:port[,host:port...]` or the same with `https://`.
    pub(super) fn parse(url: &str) -> Result<Target, String> {
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| format!("upstream {url:?} is not a URL like http://host:port"))?;
        let scheme = match scheme.to_ascii_lowercase().as_str() {
            "http" => Scheme::HTTP,
            "https" => Scheme::HTTPS,
            _ => {
                return Err(format!(
                "upstream {url:?}: only http:// (h2c) and https:// (TLS) upstreams are supported"
            ))
            }
        };
        let hosts = rest.strip_suffix('/').unwrap_or(rest);
        if hosts.contains(['/', '?', '#']) {
            return Err(format!("upstream {url:?} must not have a path"));
        }
        let entries = hosts
            .split(',')
            .map(|entry| Entry::parse(entry.trim()).map_err(|e| format!("upstream {url:?}: {e}")))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Target { scheme, entries })
    }

    /// The first entry, the default `:authority` of requests.
    pub(super) fn authority(&self) -> Result<Authority, String> {
        let first = &self.entries[0].text;
        first
            .parse()
            .map_err(|e| format!("upstream host {first:?}: {e}"))
    }

    /// The first entry's host, the default TLS server name.
    pub(super) fn first_host(&self) -> &str {
        &self.entries[0].host
    }

    /// Whether every entry is an address, so that resolving again can change nothing.
    fn is_static(&self) -> bool {
        self.entries.iter().all(|e| e.ip.is_some())
    }

    /// Every address the entries stand for now, sorted and without duplicates.
    async fn resolve(&self) -> Result<Vec<SocketAddr>, Unreachable> {
        let mut addrs = Vec::new();
        for entry in &self.entries {
            match entry.ip {
                Some(ip) => addrs.push(SocketAddr::new(ip, entry.port)),
                None => addrs.extend(
                    tokio::net::lookup_host((entry.host.as_str(), entry.port))
                        .await
                        .map_err(|e| {
                            let detail = format!("cannot resolve {}: {e}", entry.host);
                            Unreachable::new("name resolution failed", detail)
                        })?,
                ),
            }
        }
        addrs.sort();
        addrs.dedup();
        match addrs.is_empty() {
            true => Err(Unreachable::new(
                "its name resolves to no address",
                "its name resolves to no address".into(),
            )),
            false => Ok(addrs),
        }
    }
}

impl Entry {
    fn parse(text: &str) -> Result<Entry, String> {
        if text.is_empty() {
            return Err("empty host in the list".into());
        }
        let authority: Authority = text
            .parse()
            .map_err(|e| format!("{text:?} is not host:port: {e}"))?;
        if text.contains('@') {
            return Err(format!("{text:?}: user information is not supported"));
        }
        let port = authority
            .port_u16()
            .ok_or_else(|| format!("{text:?} needs a port"))?;
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        Ok(Entry {
            text: text.to_string(),
            ip: host.parse().ok(),
            host,
            port,
        })
    }
}

/// The endpoints of one upstream, replaced whole when resolution answers differently.
pub(super) struct EndpointSet {
    target: Target,
    connector: Arc<Connector>,
    connections: usize,
    interval: Duration,
    /// The bound on one resolution (getaddrinfo has no timeout of its own).
    resolve_timeout: Duration,
    endpoints: ArcSwap<Vec<Arc<Endpoint>>>,
    started: OnceCell<()>,
}

impl EndpointSet {
    pub(super) fn new(
        target: Target,
        connector: Arc<Connector>,
        options: &UpstreamOptions,
    ) -> Self {
        EndpointSet {
            target,
            connector,
            connections: options.connections.max(1),
            interval: options.resolve_interval.max(Duration::from_millis(100)),
            resolve_timeout: options.connect_timeout.max(Duration::from_secs(1)),
            endpoints: ArcSwap::from_pointee(Vec::new()),
            started: OnceCell::new(),
        }
    }

    /// The endpoints now, resolving them first on the first call. A first resolution that
    /// fails is an error for this request and is tried again by the next one.
    pub(super) async fn current(self: &Arc<Self>) -> Result<Arc<Vec<Arc<Endpoint>>>, Unreachable> {
        self.started.get_or_try_init(|| self.start()).await?;
        Ok(self.endpoints.load_full())
    }

    /// The endpoints now, without resolving (empty before the first request).
    pub(super) fn snapshot(&self) -> Arc<Vec<Arc<Endpoint>>> {
        self.endpoints.load_full()
    }

    async fn start(self: &Arc<Self>) -> Result<(), Unreachable> {
        let addrs = self.resolve().await?;
        self.update(&addrs);
        if !self.target.is_static() {
            tokio::spawn(refresh(Arc::downgrade(self), self.interval));
        }
        Ok(())
    }

    async fn resolve(&self) -> Result<Vec<SocketAddr>, Unreachable> {
        tokio::time::timeout(self.resolve_timeout, self.target.resolve())
            .await
            .map_err(|_| {
                let detail = format!("name resolution took over {:?}", self.resolve_timeout);
                Unreachable::new("name resolution timed out", detail)
            })?
    }

    /// Keeps the endpoints still resolved (with their connections and health), adds the new
    /// ones, and retires the rest: their requests in flight finish on the connections they
    /// hold, which close when the last one ends.
    fn update(&self, addrs: &[SocketAddr]) {
        let current = self.endpoints.load_full();
        if current.len() == addrs.len() && current.iter().zip(addrs).all(|(e, a)| e.addr == *a) {
            return;
        }
        let next: Vec<Arc<Endpoint>> = addrs
            .iter()
            .map(|addr| {
                current
                    .iter()
                    .find(|e| e.addr == *addr)
                    .cloned()
                    .unwrap_or_else(|| {
                        Arc::new(Endpoint::new(
                            *addr,
                            self.connector.clone(),
                            self.connections,
                        ))
                    })
            })
            .collect();
        for gone in current.iter().filter(|e| !addrs.contains(&e.addr)) {
            gone.retire();
        }
        tracing::info!(
            upstream = %self.connector.label(),
            endpoints = ?addrs,
            "upstream endpoints changed"
        );
        self.endpoints.store(Arc::new(next));
    }
}

/// Re-resolves every `interval` until the upstream is dropped. A failed resolution keeps the
/// endpoints as they were: a DNS hiccup must not empty a working set.
async fn refresh(set: Weak<EndpointSet>, interval: Duration) {
    loop {
        tokio::time::sleep(interval).await;
        let Some(set) = set.upgrade() else { return };
        match set.resolve().await {
            Ok(addrs) => set.update(&addrs),
            Err(e) => tracing::warn!(
                upstream = %set.connector.label(),
                error = %e,
                "re-resolving the upstream failed; keeping its endpoints"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_into_entries() {
        let t = Target::parse("http://127.0.0.1:5000,127.0.0.2:5000/").unwrap();
        assert_eq!(t.scheme, Scheme::HTTP);
        assert!(t.is_static());
        assert_eq!(t.authority().unwrap().as_str(), "127.0.0.1:5000");
        let t = Target::parse("https://vps-headless.ns.svc:8443").unwrap();
        assert_eq!(t.scheme, Scheme::HTTPS);
        assert!(!t.is_static());
        assert_eq!(t.first_host(), "vps-headless.ns.svc");
        let t = Target::parse("http://[::1]:5000").unwrap();
        assert_eq!(t.first_host(), "::1");
        assert!(t.is_static());
    }

    #[test]
    fn bad_urls_say_why() {
        for (url, needle) in [
            ("127.0.0.1:5000", "not a URL"),
            ("ftp://a:1", "only http://"),
            ("http://a", "needs a port"),
            ("http://a:1/v1", "must not have a path"),
            ("http://a:1,,b:2", "empty host"),
            ("http://u@a:1", "user information"),
        ] {
            let e = Target::parse(url).unwrap_err();
            assert!(e.contains(needle), "{url}: {e}");
        }
    }

    #[test]
    fn an_update_keeps_known_endpoints_and_retires_the_rest() {
        let target = Target::parse("http://127.0.0.1:1").unwrap();
        let connector = Arc::new(Connector::new(Arc::from("t"), None, Duration::from_secs(1)));
        let set = EndpointSet::new(target, connector, &UpstreamOptions::default());
        let [a, b, c]: [SocketAddr; 3] =
            ["127.0.0.1:1", "127.0.0.2:1", "127.0.0.3:1"].map(|s| s.parse().unwrap());
        set.update(&[a, b]);
        let first = set.snapshot();
        set.update(&[a, b]);
        assert!(
            Arc::ptr_eq(&first, &set.snapshot()),
            "no change, no new set"
        );
        set.update(&[b, c]);
        let second = set.snapshot();
        let addrs: Vec<SocketAddr> = second.iter().map(|e| e.addr).collect();
        assert_eq!(addrs, [b, c]);
        assert!(
            Arc::ptr_eq(&first[1], &second[0]),
            "b keeps its connections"
        );
        assert!(first[0].is_retired(), "a is drained");
        assert!(!second[0].is_retired() && !second[1].is_retired());
    }

    #[tokio::test]
    async fn static_lists_resolve_without_dns() {
        let t = Target::parse("http://127.0.0.2:7,127.0.0.1:7,127.0.0.2:7").unwrap();
        let addrs = t.resolve().await.unwrap();
        assert_eq!(
            addrs,
            vec![
                "127.0.0.1:7".parse().unwrap(),
                "127.0.0.2:7".parse().unwrap()
            ]
        );
    }
}
