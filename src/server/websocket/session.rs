//! One call over an upgraded connection, from the first frame to the Close.
//!
//! Two futures share the session's task: the reader takes the client's frames, builds each
//! request message and hands it to the upstream call (over a bounded channel: a slow
//! upstream stops the reading, and TCP then stops the client); the writer starts the call,
//! sends each response message as it arrives (a slow client stops the reading of the
//! upstream's response, and HTTP/2 flow control then stops the upstream), pings the client
//! and answers its pings. The client's Close ends only the request side; the writer goes on
//! until the call ends, then says how it ended. Whichever way the session ends, dropping it
//! drops the upstream call, which cancels it.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{stream, SinkExt, StreamExt};
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::io::{ReadHalf, WriteHalf};
use tokio::sync::{mpsc, oneshot, watch, Notify};
use tokio::time::{Instant, Interval};
use tokio_tungstenite::tungstenite::error::ProtocolError;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;

use super::super::body::BoxError;
use super::super::call_clock::CallClock;
use super::super::deadline;
use super::super::gateway::Gateway;
use super::super::rest::CallSetup;
use super::super::rest_stream::{Event, Events};
use super::halves::{ReadOnly, WriteOnly};
use super::messages::{Ending, Mapping};
use crate::error::GatewayError;
use crate::grpc::frame::Outgoing;
use crate::upstream::call::{self, CallBody};

type Socket = TokioIo<Upgraded>;
type FromClient = WebSocketStream<ReadOnly<ReadHalf<Socket>>>;
type ToClient = WebSocketStream<WriteOnly<WriteHalf<Socket>>>;

/// Request messages in flight between the client and the upstream call.
const REQUEST_BUFFER: usize = 4;

/// The piece of the socket read at once (tungstenite's default, 128 KiB, would be held by
/// every idle session).
const READ_BUFFER: usize = 16 << 10;

/// How long the gateway waits for the client to answer its Close before closing the socket.
const CLOSE_WAIT: Duration = Duration::from_secs(5);

/// What a session needs to run its call.
pub(super) struct Call {
    pub(super) gateway: Arc<Gateway>,
    pub(super) mapping: Mapping,
    pub(super) setup: CallSetup,
    /// For the session's log line.
    pub(super) request_id: String,
}

/// What the reader and the writer both see.
#[derive(Debug)]
struct Shared {
    clock: CallClock,
    /// The kind of data frame the client sent last.
    binary: AtomicBool,
    /// A frame came from the client since the last ping.
    heard: AtomicBool,
    /// The reader is waiting for the upstream to take a message (so it reads no pongs).
    waiting: AtomicBool,
    /// The client sent its Close.
    closed: AtomicBool,
    /// The payload of the client's last ping, for the writer to answer.
    ping: Mutex<Option<Bytes>>,
    pinged: Notify,
}

impl Shared {
    fn pinged_with(&self, data: Bytes) {
        if let Ok(mut slot) = self.ping.lock() {
            *slot = Some(data);
        }
        self.pinged.notify_one();
    }

    fn take_ping(&self) -> Option<Bytes> {
        self.ping.lock().ok().and_then(|mut slot| slot.take())
    }
}

/// Where the reader puts request messages: the one message of a server-streaming call, or
/// the request stream of a client or bidi stream.
enum Requests {
    First(Option<oneshot::Sender<Bytes>>),
    Stream(mpsc::Sender<Result<Frame<Bytes>, BoxError>>),
}

/// What the writer's call sends: the first message once it comes, or the stream.
enum RequestBody {
    First(oneshot::Receiver<Bytes>),
    Stream(crate::upstream::UpstreamBody),
}

impl Requests {
    async fn send(&mut self, frame: Bytes, method: &str) -> Result<(), GatewayError> {
        match self {
            Requests::First(slot) => match slot.take() {
                Some(tx) => {
                    let _ = tx.send(frame);
                    Ok(())
                }
                None => Err(GatewayError::invalid_argument(format!(
                    "{method} takes one request message; a second one came"
                ))),
            },
            // A closed channel: the call has ended, and the writer reports how.
            Requests::Stream(tx) => {
                let _ = tx.send(Ok(Frame::data(frame))).await;
                Ok(())
            }
        }
    }
}

/// The ping timer (every interval the client must have sent something since the last ping),
/// and the gateway's shutdown.
struct Pinger {
    interval: Option<Interval>,
    outstanding: bool,
    shutdown: watch::Receiver<bool>,
}

impl Pinger {
    fn new(every: Duration, shutdown: watch::Receiver<bool>) -> Pinger {
        let interval = (!every.is_zero()).then(|| {
            let mut interval = tokio::time::interval_at(Instant::now() + every, every);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            interval
        });
        Pinger {
            interval,
            outstanding: false,
            shutdown,
        }
    }

    /// Completes when the gateway shuts down.
    async fn shutdown(shutdown: &mut watch::Receiver<bool>) {
        if shutdown.wait_for(|closing| *closing).await.is_err() {
            std::future::pending::<()>().await;
        }
    }

    async fn tick(interval: &mut Option<Interval>) {
        match interval {
            Some(interval) => {
                interval.tick().await;
            }
            None => std::future::pending().await,
        }
    }
}

/// Runs the session on `socket` until the call and the connection end.
pub(super) async fn run(call: Call, socket: Socket) {
    let started = std::time::Instant::now();
    let settings = call.gateway.settings();
    let limit = settings.max_request_bytes;
    // The reading half buffers at most one message, read in small pieces; the writing half
    // reads nothing and writes each frame as it is sent.
    let reading = WebSocketConfig::default()
        .max_message_size(Some(limit))
        .max_frame_size(Some(limit))
        .read_buffer_size(READ_BUFFER);
    let writing = WebSocketConfig::default().read_buffer_size(0);
    let (read, write) = tokio::io::split(socket);
    let mut from =
        WebSocketStream::from_raw_socket(ReadOnly(read), Role::Server, Some(reading)).await;
    let mut to =
        WebSocketStream::from_raw_socket(WriteOnly(write), Role::Server, Some(writing)).await;
    let shared = Shared {
        clock: CallClock::new(None, settings.stream_idle_timeout),
        binary: AtomicBool::new(false),
        heard: AtomicBool::new(false),
        waiting: AtomicBool::new(false),
        closed: AtomicBool::new(false),
        ping: Mutex::new(None),
        pinged: Notify::new(),
    };
    // Held until the session is over: a shutdown waits for it (within its grace).
    let _open = call.gateway.sessions_closing.subscribe();
    let ending = call.exchange(&mut from, &mut to, &shared).await;
    call.finish(&mut from, &mut to, &shared, &ending).await;
    call.log(&ending, started);
}

impl Call {
    /// Runs the reader and the writer until one of them says how the session ends.
    async fn exchange(&self, from: &mut FromClient, to: &mut ToClient, shared: &Shared) -> Ending {
        let (requests, body) = self.request_channel();
        let reader = self.read(from, requests, shared);
        let writer = self.write(to, body, shared);
        tokio::pin!(reader, writer);
        let mut reading = true;
        loop {
            tokio::select! {
                end = &mut reader, if reading => match end {
                    None => reading = false,
                    Some(ending) => return ending,
                },
                ending = &mut writer => return ending,
            }
        }
    }

    fn request_channel(&self) -> (Requests, RequestBody) {
        if !self.mapping.plan.method.is_client_streaming() {
            let (tx, rx) = oneshot::channel();
            return (Requests::First(Some(tx)), RequestBody::First(rx));
        }
        let (tx, rx) = mpsc::channel::<Result<Frame<Bytes>, BoxError>>(REQUEST_BUFFER);
        let frames = stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|f| (f, rx)) });
        let body = StreamBody::new(frames).boxed_unsync();
        (Requests::Stream(tx), RequestBody::Stream(body))
    }

    /// Reads the client's frames until its Close (`None`: the request side is done) or the
    /// end of the session.
    async fn read(
        &self,
        from: &mut FromClient,
        mut requests: Requests,
        shared: &Shared,
    ) -> Option<Ending> {
        let method = self.mapping.plan.method_name().to_owned();
        loop {
            let message = match from.next().await {
                None => return Some(Ending::Gone),
                Some(Err(e)) => return Some(self.read_error(e)),
                Some(Ok(message)) => message,
            };
            shared.heard.store(true, Ordering::Relaxed);
            let (payload, binary) = match message {
                Message::Text(text) => (Bytes::from(text), false),
                Message::Binary(data) => (data, true),
                Message::Ping(data) => {
                    shared.pinged_with(data);
                    continue;
                }
                Message::Close(_) => {
                    shared.closed.store(true, Ordering::Relaxed);
                    return None;
                }
                Message::Pong(_) | Message::Frame(_) => continue,
            };
            shared.binary.store(binary, Ordering::Relaxed);
            shared.clock.message();
            self.gateway.metrics.bytes_in(payload.len() as u64);
            let frame = match self.mapping.request(&payload, binary) {
                Ok(frame) => frame,
                Err(error) => return Some(Ending::Failed(error)),
            };
            shared.waiting.store(true, Ordering::Relaxed);
            let sent = requests.send(frame, &method).await;
            shared.waiting.store(false, Ordering::Relaxed);
            if let Err(error) = sent {
                return Some(Ending::Failed(error));
            }
        }
    }

    fn read_error(&self, error: WsError) -> Ending {
        let limit = self.gateway.settings().max_request_bytes;
        match error {
            WsError::Capacity(_) => Ending::Close(
                CloseCode::Size,
                format!("a message exceeds the limit of {limit} bytes (--max-request-bytes)"),
            ),
            WsError::Utf8(_) => {
                Ending::Close(CloseCode::Invalid, "a text frame is not UTF-8".into())
            }
            WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake) => Ending::Gone,
            WsError::Protocol(e) => Ending::Close(CloseCode::Protocol, format!("{e}")),
            _ => Ending::Gone,
        }
    }

    /// Starts the call and sends its responses until it ends.
    async fn write(&self, to: &mut ToClient, body: RequestBody, shared: &Shared) -> Ending {
        let shutdown = self.gateway.sessions_closing.subscribe();
        let mut pinger = Pinger::new(self.gateway.settings().websocket_ping_interval, shutdown);
        match self.respond(to, body, shared, &mut pinger).await {
            Ok(()) => Ending::Ok,
            Err(ending) => ending,
        }
    }

    async fn respond(
        &self,
        to: &mut ToClient,
        body: RequestBody,
        shared: &Shared,
        pinger: &mut Pinger,
    ) -> Result<(), Ending> {
        let body = match body {
            // A server stream starts with the client's first frame; a client that closes
            // without one made no call.
            RequestBody::First(first) => match self.guard(to, shared, pinger, first).await? {
                Ok(frame) => call::single_frame(Outgoing::whole(frame)),
                Err(_) => return Ok(()),
            },
            RequestBody::Stream(body) => CallBody::Streamed(body),
        };
        let started = self
            .guard(to, shared, pinger, self.start(body, shared))
            .await?;
        let Some(mut events) = started.map_err(Ending::Failed)? else {
            return Ok(());
        };
        loop {
            match self.guard(to, shared, pinger, events.next()).await? {
                Event::Message(payload) => {
                    let binary = shared.binary.load(Ordering::Relaxed);
                    let message = self
                        .mapping
                        .response(payload, binary)
                        .map_err(Ending::Failed)?;
                    self.send(to, message).await?;
                }
                Event::End(Ok(())) => return Ok(()),
                Event::End(Err(error)) => return Err(Ending::Failed(error)),
            }
        }
    }

    /// Sends the request and waits for the response's headers, within the deadline; `None`
    /// for a call that ended OK without a message (trailers-only).
    async fn start(&self, body: CallBody, shared: &Shared) -> Result<Option<Events>, GatewayError> {
        let plan = &self.mapping.plan;
        let upstream = self.gateway.upstream_of(plan)?;
        let limit = self.gateway.settings().max_response_bytes;
        let deadline = deadline::from_now(self.setup.deadline);
        let headers = self.setup.headers.clone();
        let start = call::start(upstream, plan, body, headers, self.setup.deadline);
        let response = deadline::within_at(deadline, start).await?;
        let (head, body) = response.into_parts();
        if call::trailers_only(&head.headers, plan)? {
            return Ok(None);
        }
        call::check_grpc_response(head.status, &head.headers)?;
        let clock = shared.clock.clone();
        Ok(Some(Events::of_call(
            body,
            head.headers,
            limit,
            deadline,
            clock,
        )))
    }

    /// Awaits `work` while keeping the session's time: the idle limit, the pings, and the
    /// answers to the client's pings.
    async fn guard<T>(
        &self,
        to: &mut ToClient,
        shared: &Shared,
        pinger: &mut Pinger,
        work: impl Future<Output = T>,
    ) -> Result<T, Ending> {
        tokio::pin!(work);
        loop {
            tokio::select! {
                biased;
                expiry = shared.clock.expired() => {
                    return Err(Ending::Close(CloseCode::Away, expiry.error().message));
                }
                () = shared.pinged.notified() => {
                    if let Some(data) = shared.take_ping() {
                        self.send(to, Message::Pong(data)).await?;
                    }
                }
                () = Pinger::tick(&mut pinger.interval) => self.ping(to, shared, pinger).await?,
                () = Pinger::shutdown(&mut pinger.shutdown) => {
                    return Err(Ending::Close(CloseCode::Away, "the gateway is shutting down".into()));
                }
                value = &mut work => return Ok(value),
            }
        }
    }

    /// Pings the client, unless it answered nothing to the last ping: then it is gone. A
    /// client that sent its Close is not pinged (it may not answer any more).
    async fn ping(
        &self,
        to: &mut ToClient,
        shared: &Shared,
        pinger: &mut Pinger,
    ) -> Result<(), Ending> {
        if shared.closed.load(Ordering::Relaxed) {
            return Ok(());
        }
        let heard =
            shared.heard.swap(false, Ordering::Relaxed) || shared.waiting.load(Ordering::Relaxed);
        if pinger.outstanding && !heard {
            return Err(Ending::Gone);
        }
        pinger.outstanding = true;
        self.send(to, Message::Ping(Bytes::new())).await
    }

    /// Sends one frame, within `--write-timeout`: a client that takes nothing for that long
    /// is gone.
    async fn send(&self, to: &mut ToClient, message: Message) -> Result<(), Ending> {
        let size = message.len() as u64;
        let limit = self.gateway.settings().write_timeout;
        let sent = match limit.is_zero() {
            true => to.send(message).await.is_ok(),
            false => matches!(
                tokio::time::timeout(limit, to.send(message)).await,
                Ok(Ok(()))
            ),
        };
        if !sent {
            return Err(Ending::Gone);
        }
        self.gateway.metrics.bytes_out(size);
        Ok(())
    }

    /// Says how the session ended: the error frame of a failed call, then the Close; then
    /// waits (briefly) for the client's Close before the connection is dropped.
    async fn finish(
        &self,
        from: &mut FromClient,
        to: &mut ToClient,
        shared: &Shared,
        ending: &Ending,
    ) {
        let Some(close) = ending.close_frame() else {
            return;
        };
        if let Ending::Failed(error) = ending {
            if self.send(to, self.mapping.error(error)).await.is_err() {
                return;
            }
        }
        if self.send(to, Message::Close(Some(close))).await.is_err() {
            return;
        }
        if shared.closed.load(Ordering::Relaxed) {
            return;
        }
        let answered = async {
            while let Some(Ok(message)) = from.next().await {
                if message.is_close() {
                    break;
                }
            }
        };
        let _ = tokio::time::timeout(CLOSE_WAIT, answered).await;
    }

    /// The session's line in the access log (the upgrade has its own, from the edge).
    fn log(&self, ending: &Ending, started: std::time::Instant) {
        // The number, as on the access lines; absent when the call did not end (the client
        // closed first or vanished).
        let grpc_code = match ending {
            Ending::Failed(error) => Some(error.code as u16),
            Ending::Ok => Some(crate::grpc::Code::Ok as u16),
            Ending::Close(..) | Ending::Gone => None,
        };
        tracing::info!(
            target: "protogate::access",
            request_id = %self.request_id,
            route = &*self.mapping.plan.label,
            protocol = "websocket",
            event = "closed",
            close_code = ending.code(),
            grpc_code,
            duration_ms = started.elapsed().as_secs_f64() * 1000.0,
        );
    }
}
