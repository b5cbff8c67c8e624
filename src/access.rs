//! What a request's access log line says beyond its request and response: the body bytes it
//! read and the upstream endpoint that answered it, and how fast. The code that knows these
//! (the body reader, the upstream balancer) runs in the request's task, far from the edge
//! that writes the line, so they note them in a task-local [`Note`] the edge opens around
//! each request instead of threading it through every handler. Outside such a scope noting
//! does nothing.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

tokio::task_local! {
    static NOTE: Arc<Note>;
}

/// One request's notes.
#[derive(Debug, Default)]
pub struct Note {
    bytes_in: AtomicU64,
    upstream: Mutex<Option<(SocketAddr, Duration)>>,
}

impl Note {
    /// Request body bytes read.
    pub fn bytes_in(&self) -> u64 {
        self.bytes_in.load(Ordering::Relaxed)
    }

    /// The endpoint of the last upstream attempt that answered, and the time to its headers.
    pub fn upstream(&self) -> Option<(SocketAddr, Duration)> {
        self.upstream.lock().ok().and_then(|held| *held)
    }
}

/// Runs `f` with `note` as the request's notes.
pub async fn scope<F: std::future::Future>(note: Arc<Note>, f: F) -> F::Output {
    NOTE.scope(note, f).await
}

/// Notes `n` request body bytes read.
pub fn read(n: u64) {
    let _ = NOTE.try_with(|note| note.bytes_in.fetch_add(n, Ordering::Relaxed));
}

/// Notes that `endpoint` answered after `took`.
pub fn answered(endpoint: SocketAddr, took: Duration) {
    let _ = NOTE.try_with(|note| {
        if let Ok(mut held) = note.upstream.lock() {
            *held = Some((endpoint, took));
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn notes_reach_the_scope_and_nothing_else() {
        read(5);
        let note = Arc::new(Note::default());
        let addr: SocketAddr = "10.0.0.1:5000".parse().unwrap();
        scope(note.clone(), async {
            read(3);
            read(4);
            answered(addr, Duration::from_millis(7));
        })
        .await;
        assert_eq!(note.bytes_in(), 7);
        assert_eq!(note.upstream(), Some((addr, Duration::from_millis(7))));
    }
}
