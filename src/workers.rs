//! Serving threads: one event loop per core (a current-thread tokio runtime on a thread of
//! its own). The accept loop hands each connection to one of them, and everything the
//! connection's requests start runs there too: hyper's tasks, the upstream call and the
//! upstream HTTP/2 connection that carries it (each thread uses its own upstream
//! connections, see `upstream::endpoint`). A request therefore never wakes another thread,
//! which on a multi-threaded runtime costs a futex wake-up and a context switch at each hop
//! between the client's task and the upstream connection's.
//!
//! The price is that a thread busy with one large request does not hand its other
//! connections to an idle one; connections are spread evenly when they arrive.

use std::cell::Cell;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use anyhow::Context;
use tokio::runtime::Handle;
use tokio::sync::oneshot;

thread_local! {
    /// On a serving thread: its index and how many there are.
    static WORKER: Cell<Option<(usize, usize)>> = const { Cell::new(None) };
}

/// The serving thread this code runs on, as (index, count), or `None` off them (tests, the
/// admin port, background tasks of the main runtime).
pub(crate) fn current() -> Option<(usize, usize)> {
    WORKER.with(Cell::get)
}

/// The serving threads. Dropping this stops them; the tasks still on them are dropped.
pub struct Workers {
    handles: Vec<Handle>,
    next: AtomicUsize,
    /// Each thread runs until its sender is dropped.
    _stops: Vec<oneshot::Sender<()>>,
}

impl std::fmt::Debug for Workers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Workers")
            .field("threads", &self.handles.len())
            .finish()
    }
}

impl Workers {
    /// Starts `count` serving threads (at least one).
    pub fn start(count: usize) -> anyhow::Result<Arc<Workers>> {
        let count = count.max(1);
        let mut handles = Vec::with_capacity(count);
        let mut stops = Vec::with_capacity(count);
        for index in 0..count {
            let (handle, stop) = start_thread(index, count)?;
            handles.push(handle);
            stops.push(stop);
        }
        Ok(Arc::new(Workers {
            handles,
            next: AtomicUsize::new(0),
            _stops: stops,
        }))
    }

    /// Runs `task` on the next serving thread, round robin.
    pub fn spawn<F>(&self, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let index = self.next.fetch_add(1, Ordering::Relaxed) % self.handles.len();
        drop(self.handles[index].spawn(task));
    }
}

/// The number of serving threads when none is given: one per CPU this process may use.
pub fn default_count() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
}

fn start_thread(index: usize, count: usize) -> anyhow::Result<(Handle, oneshot::Sender<()>)> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start a serving thread's runtime")?;
    let handle = runtime.handle().clone();
    let (stop, stopped) = oneshot::channel::<()>();
    std::thread::Builder::new()
        .name(format!("protogate-serve-{index}"))
        .spawn(move || {
            WORKER.with(|worker| worker.set(Some((index, count))));
            // Returns when the sender is dropped; the runtime and its tasks go with it.
            let _ = runtime.block_on(stopped);
        })
        .context("cannot start a serving thread")?;
    Ok((handle, stop))
}
