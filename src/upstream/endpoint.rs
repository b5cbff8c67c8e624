//! One endpoint (an address of an upstream): its HTTP/2 connections, its health, and its
//! load (requests in flight), which the balancer compares.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use http::{Request, Response};
use hyper::client::conn::http2::SendRequest;
use tokio::sync::Mutex;

use super::body::{Load, UpstreamResponseBody};
use super::connect::{Connector, Driver};
use super::random::random_below;
use super::{ConnectionCounts, EndpointStatus, Unreachable, UpstreamBody};

/// A connection slot's state, for the connection metrics.
const IDLE: u8 = 0;
const CONNECTING: u8 = 1;
const CONNECTED: u8 = 2;
const FAILED: u8 = 3;

/// The first pause before reconnecting to an unhealthy endpoint; it doubles per failure.
const BACKOFF_FIRST: Duration = Duration::from_millis(100);
/// The longest pause between reconnection attempts.
const BACKOFF_MAX: Duration = Duration::from_secs(10);

/// Why a request did not get a response from this endpoint.
pub(super) enum SendFailure {
    /// Nothing reached the upstream, so the request can go elsewhere. `refused` when no
    /// connection could be opened (the endpoint is down), not when one was found closed.
    Unsent {
        request: Box<Request<UpstreamBody>>,
        error: Unreachable,
        refused: bool,
    },
    /// The request was, or may have been, sent to `addr`: it must not be repeated.
    Sent {
        error: hyper::Error,
        addr: SocketAddr,
    },
}

/// Which connection a request was sent on: its slot, and the slot's connection then.
#[derive(Clone, Copy)]
struct Used {
    index: usize,
    generation: u64,
}

/// One HTTP/2 connection, opened on first use and again after it closes.
struct Slot {
    /// Held while connecting, so that concurrent requests share one new connection.
    sender: Mutex<Option<SendRequest<UpstreamBody>>>,
    state: AtomicU8,
    /// Which connection the state describes: a closed one must not overwrite its successor.
    generation: AtomicU64,
}

/// One address of an upstream.
pub(super) struct Endpoint {
    pub addr: SocketAddr,
    connector: Arc<Connector>,
    slots: Box<[Slot]>,
    next: AtomicUsize,
    in_flight: Arc<AtomicUsize>,
    unhealthy: AtomicBool,
    /// A background reconnection is running.
    recovering: AtomicBool,
    /// Resolution no longer lists it: no new requests, no reconnection.
    retired: AtomicBool,
}

impl Endpoint {
    pub(super) fn new(addr: SocketAddr, connector: Arc<Connector>, connections: usize) -> Endpoint {
        let slots = (0..connections.max(1))
            .map(|_| Slot {
                sender: Mutex::new(None),
                state: AtomicU8::new(IDLE),
                generation: AtomicU64::new(0),
            })
            .collect();
        Endpoint {
            addr,
            connector,
            slots,
            next: AtomicUsize::new(0),
            in_flight: Arc::new(AtomicUsize::new(0)),
            unhealthy: AtomicBool::new(false),
            recovering: AtomicBool::new(false),
            retired: AtomicBool::new(false),
        }
    }

    pub(super) fn is_healthy(&self) -> bool {
        !self.unhealthy.load(Ordering::Relaxed)
    }

    /// Requests sent here whose response has not ended.
    pub(super) fn load(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    pub(super) fn status(&self) -> EndpointStatus {
        EndpointStatus {
            addr: self.addr,
            healthy: self.is_healthy(),
            in_flight: self.load(),
        }
    }

    pub(super) fn retire(&self) {
        self.retired.store(true, Ordering::Relaxed);
    }

    #[cfg(test)]
    pub(super) fn is_retired(&self) -> bool {
        self.retired.load(Ordering::Relaxed)
    }

    pub(super) fn count_connections(&self, counts: &mut ConnectionCounts) {
        for slot in self.slots.iter() {
            match slot.state.load(Ordering::Relaxed) {
                CONNECTING => counts.connecting += 1,
                CONNECTED => counts.connected += 1,
                FAILED => counts.failed += 1,
                _ => {}
            }
        }
    }

    /// Sends `request` on one of the connections, opening it if needed.
    pub(super) async fn send(
        self: &Arc<Self>,
        request: Request<UpstreamBody>,
    ) -> Result<Response<UpstreamResponseBody>, SendFailure> {
        // Counted from now, so that the balancer sees requests waiting for a connection too.
        let load = Load::new(&self.in_flight);
        let (used, mut sender) = match self.connection().await {
            Ok(picked) => picked,
            Err(error) => {
                return Err(SendFailure::Unsent {
                    request: Box::new(request),
                    error,
                    refused: true,
                })
            }
        };
        match sender.try_send_request(request).await {
            Ok(response) => Ok(response.map(|body| UpstreamResponseBody::new(body, load))),
            Err(mut e) => match e.take_message() {
                Some(request) => {
                    self.forget(used);
                    Err(SendFailure::Unsent {
                        request: Box::new(request),
                        error: Unreachable::new(
                            "the connection closed",
                            format!("the connection to {} closed", self.addr),
                        ),
                        refused: false,
                    })
                }
                None => {
                    let error = e.into_error();
                    if crate::error::h2_reset(&error).is_some_and(|r| r.go_away) {
                        self.forget(used);
                    }
                    Err(SendFailure::Sent {
                        error,
                        addr: self.addr,
                    })
                }
            },
        }
    }

    /// Stops sending new requests on a connection that closed or is going away (its streams
    /// in flight finish on it): the slot opens a new one for its next request, so a retry
    /// does not meet the same connection again. Nothing happens when the slot already moved
    /// on to a newer connection, or is opening one.
    fn forget(&self, used: Used) {
        let slot = &self.slots[used.index];
        if let Ok(mut held) = slot.sender.try_lock() {
            if slot.generation.load(Ordering::Relaxed) == used.generation {
                *held = None;
            }
        }
    }

    /// A connection to send on: the next slot's, round robin among the serving thread's own
    /// (`slot_for`). When that one is being opened by another request, an open one is used
    /// instead of waiting for it.
    async fn connection(
        self: &Arc<Self>,
    ) -> Result<(Used, SendRequest<UpstreamBody>), Unreachable> {
        let turn = self.next.fetch_add(1, Ordering::Relaxed);
        let index = slot_for(turn, self.slots.len(), crate::workers::current());
        if let Some(open) = self.open_at(index) {
            return Ok(open);
        }
        if self.slots[index].state.load(Ordering::Relaxed) == CONNECTING {
            if let Some(open) = (0..self.slots.len()).find_map(|i| self.open_at(i)) {
                return Ok(open);
            }
        }
        // Boxed: connecting (TCP, TLS, the HTTP/2 handshake) is a large future that the
        // request's own should not carry when the connection is already open.
        let sender = Box::pin(self.open(index)).await?;
        let generation = self.slots[index].generation.load(Ordering::Relaxed);
        Ok((Used { index, generation }, sender))
    }

    /// Slot `index`'s connection if it is open and not being replaced.
    fn open_at(&self, index: usize) -> Option<(Used, SendRequest<UpstreamBody>)> {
        let slot = &self.slots[index];
        let held = slot.sender.try_lock().ok()?;
        let sender = held.as_ref().filter(|s| !s.is_closed())?.clone();
        let generation = slot.generation.load(Ordering::Relaxed);
        Some((Used { index, generation }, sender))
    }

    /// The slot's connection, opened now if it has none or its last one closed.
    async fn open(
        self: &Arc<Self>,
        index: usize,
    ) -> Result<SendRequest<UpstreamBody>, Unreachable> {
        let slot = &self.slots[index];
        let mut held = slot.sender.lock().await;
        if let Some(sender) = held.as_ref().filter(|s| !s.is_closed()) {
            return Ok(sender.clone());
        }
        *held = None;
        let attempt = Attempt::start(&slot.state);
        match self.connector.connect(self.addr).await {
            Ok((sender, driver)) => {
                let generation = slot.generation.fetch_add(1, Ordering::Relaxed) + 1;
                attempt.finish(CONNECTED);
                self.drive(index, generation, driver);
                if self.unhealthy.swap(false, Ordering::Relaxed) {
                    tracing::info!(upstream = %self.connector.label(), endpoint = %self.addr, "upstream endpoint up");
                }
                *held = Some(sender.clone());
                Ok(sender)
            }
            Err(e) => {
                attempt.finish(FAILED);
                tracing::debug!(upstream = %self.connector.label(), endpoint = %self.addr, error = %e, "upstream connection failed");
                self.mark_unhealthy();
                Err(e)
            }
        }
    }

    /// Runs the connection; when it ends, frees its slot, and when it broke, takes the
    /// endpoint out until a reconnection succeeds.
    fn drive(self: &Arc<Self>, index: usize, generation: u64, driver: Driver) {
        let endpoint = Arc::downgrade(self);
        tokio::spawn(async move {
            let result = driver.await;
            let Some(endpoint) = endpoint.upgrade() else {
                return;
            };
            let slot = &endpoint.slots[index];
            if slot.generation.load(Ordering::Relaxed) == generation {
                let state = if result.is_ok() { IDLE } else { FAILED };
                slot.state.store(state, Ordering::Relaxed);
            }
            if let Err(e) = result {
                tracing::debug!(upstream = %endpoint.connector.label(), endpoint = %endpoint.addr, error = %e, "upstream connection broke");
                endpoint.mark_unhealthy();
            }
        });
    }

    /// Skips the endpoint while others are healthy, and starts reconnecting in the background
    /// (one task per endpoint).
    fn mark_unhealthy(self: &Arc<Self>) {
        if !self.unhealthy.swap(true, Ordering::Relaxed) {
            tracing::warn!(upstream = %self.connector.label(), endpoint = %self.addr, "upstream endpoint down");
        }
        if self.retired.load(Ordering::Relaxed) || self.recovering.swap(true, Ordering::AcqRel) {
            return;
        }
        tokio::spawn(recover(Arc::downgrade(self)));
    }
}

/// The slot a request takes on its `turn`, out of `slots`. On serving thread `index` of
/// `count`, the slots `index`, `index + count`, ... are its own: their connections were
/// opened there and run there, so sending on one wakes no other thread. With fewer slots
/// than threads, threads share them.
fn slot_for(turn: usize, slots: usize, worker: Option<(usize, usize)>) -> usize {
    match worker {
        Some((index, count)) if slots > index => {
            let own = (slots - index).div_ceil(count);
            index + (turn % own) * count
        }
        Some((index, _)) => index % slots,
        None => turn % slots,
    }
}

/// Reconnects to an unhealthy endpoint after pauses that double from [`BACKOFF_FIRST`] to
/// [`BACKOFF_MAX`], jittered so that gateways do not reconnect in step; a success makes it
/// healthy. Holds no reference while it sleeps, so a dropped upstream ends it.
async fn recover(endpoint: Weak<Endpoint>) {
    let mut pause = BACKOFF_FIRST;
    loop {
        tokio::time::sleep(jittered(pause)).await;
        pause = (pause * 2).min(BACKOFF_MAX);
        let Some(endpoint) = endpoint.upgrade() else {
            return;
        };
        if endpoint.retired.load(Ordering::Relaxed) {
            return;
        }
        if !endpoint.is_healthy() {
            match endpoint.open(0).await {
                Ok(_) => endpoint.unhealthy.store(false, Ordering::Relaxed),
                Err(_) => continue,
            }
        }
        // Healthy again; stop, unless it failed again before the flag was down.
        endpoint.recovering.store(false, Ordering::Release);
        if endpoint.is_healthy() || endpoint.recovering.swap(true, Ordering::AcqRel) {
            return;
        }
    }
}

/// A pause between half and all of `pause`.
fn jittered(pause: Duration) -> Duration {
    let millis = u64::try_from(pause.as_millis()).unwrap_or(u64::MAX).max(2);
    let half = millis / 2;
    Duration::from_millis(half + random_below(usize::try_from(half).unwrap_or(usize::MAX)) as u64)
}

/// Marks a slot as connecting until the attempt finishes; an attempt abandoned midway (its
/// request was cancelled) leaves the slot idle rather than connecting forever.
struct Attempt<'a> {
    state: &'a AtomicU8,
    finished: bool,
}

impl<'a> Attempt<'a> {
    fn start(state: &'a AtomicU8) -> Self {
        state.store(CONNECTING, Ordering::Relaxed);
        Attempt {
            state,
            finished: false,
        }
    }

    fn finish(mut self, state: u8) {
        self.state.store(state, Ordering::Relaxed);
        self.finished = true;
    }
}

impl Drop for Attempt<'_> {
    fn drop(&mut self) {
        if !self.finished {
            self.state.store(IDLE, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::slot_for;

    fn taken(slots: usize, worker: Option<(usize, usize)>) -> Vec<usize> {
        (0..6).map(|turn| slot_for(turn, slots, worker)).collect()
    }

    #[test]
    fn each_serving_thread_keeps_to_its_own_slots() {
        assert_eq!(taken(2, Some((0, 2))), [0; 6]);
        assert_eq!(taken(2, Some((1, 2))), [1; 6]);
        assert_eq!(taken(5, Some((0, 2))), [0, 2, 4, 0, 2, 4]);
        assert_eq!(taken(5, Some((1, 2))), [1, 3, 1, 3, 1, 3]);
    }

    #[test]
    fn threads_share_when_there_are_fewer_slots() {
        assert_eq!(taken(2, Some((3, 4))), [1; 6]);
        assert_eq!(taken(1, Some((1, 2))), [0; 6]);
    }

    #[test]
    fn off_the_serving_threads_every_slot_takes_its_turn() {
        assert_eq!(taken(3, None), [0, 1, 2, 0, 1, 2]);
    }
}
