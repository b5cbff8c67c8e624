//! What a handler tells the edge about its response, for the metrics and the access log: the
//! route it matched and, for an error, its code and whose fault it was; and what an accepted
//! WebSocket upgrade asks the edge to keep for it.

use std::any::Any;
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

use crate::error::ErrorSource;
use crate::grpc::Code;

/// The route a response was served by.
#[derive(Debug, Clone)]
pub(crate) struct RouteTag(pub(crate) Arc<str>);

/// The gRPC code a response ended with (when it is not OK), and whose fault that was.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ErrorTag {
    pub(crate) code: Code,
    pub(crate) source: ErrorSource,
}

/// What the edge hands to an accepted upgrade's session to keep while it lasts (the
/// admission permits), put in the 101's extensions: a session counts against the
/// concurrency limits until it closes, not only until its handshake is answered.
#[derive(Debug, Clone)]
pub(crate) struct SessionHold(Arc<Mutex<Option<oneshot::Sender<Held>>>>);

/// Whatever the edge keeps for a request until it is done.
type Held = Box<dyn Any + Send>;

impl SessionHold {
    pub(crate) fn new() -> (SessionHold, oneshot::Receiver<Held>) {
        let (tx, rx) = oneshot::channel();
        (SessionHold(Arc::new(Mutex::new(Some(tx)))), rx)
    }

    /// Gives `held` to the session, to drop when it ends.
    pub(crate) fn keep(&self, held: Held) {
        if let Some(tx) = self.0.lock().ok().and_then(|mut slot| slot.take()) {
            let _ = tx.send(held);
        }
    }
}
