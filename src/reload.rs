//! Hot reload: rebuild the snapshot from the same sources off the request path, validate it
//! fully, and swap it atomically; a bad new set keeps the old snapshot. Triggers are SIGHUP
//! and, with `--watch-descriptors`, changes under the directories holding the descriptor
//! files (a Kubernetes ConfigMap update swaps a `..data` symlink in that directory, which a
//! watch on the file itself would miss). With descriptors from the upstreams' reflection,
//! every reload fetches them again, and so does a timer, which swaps only when they changed.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;

use crate::descriptor::Sources;
use crate::route::RouteOptions;
use crate::server::Gateway;
use crate::snapshot::{Snapshot, SnapshotError, UpstreamMap};

/// Everything a snapshot is built from, kept to build it again.
#[derive(Debug, Clone)]
pub struct ReloadSource {
    pub sources: Sources,
    pub options: RouteOptions,
    pub upstreams: UpstreamMap,
}

impl ReloadSource {
    pub fn build(&self) -> Result<Snapshot, SnapshotError> {
        Snapshot::build(&self.sources, &self.options, Some(&self.upstreams))
    }

    /// The directories to watch: those holding descriptor sets and protos, and the include
    /// roots (recursively).
    fn watched(&self) -> Vec<(PathBuf, RecursiveMode)> {
        let files = self.sources.descriptor_sets.iter();
        let mut dirs: BTreeSet<PathBuf> = files.filter_map(|f| parent(f)).collect();
        let protos = self.sources.protos.iter();
        dirs.extend(
            protos
                .filter(|p| p.is_absolute() || p.exists())
                .filter_map(|p| parent(p)),
        );
        let mut watched: Vec<_> = dirs
            .into_iter()
            .map(|d| (d, RecursiveMode::NonRecursive))
            .collect();
        let includes = self.sources.includes.iter();
        watched.extend(includes.map(|d| (d.clone(), RecursiveMode::Recursive)));
        watched
    }
}

fn parent(file: &Path) -> Option<PathBuf> {
    let dir = file.parent()?;
    Some(if dir.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        dir.to_path_buf()
    })
}

/// The outcome of one reload, for logs and metrics.
#[derive(Debug)]
pub enum Outcome {
    Swapped { routes: usize },
    Kept(SnapshotError),
}

/// Rebuilds the gateway's snapshot off the reactor and swaps it in when it is valid
/// (fetching reflection descriptors again first, when they are a source).
pub async fn reload(gateway: &Arc<Gateway>, source: &ReloadSource) -> Outcome {
    let mut source = source.clone();
    if let Err(e) = refetch(gateway, &mut source).await {
        return report(gateway, Outcome::Kept(e));
    }
    build_and_swap(gateway, source).await
}

/// Fetches the reflection descriptors of every upstream into `source`, if they are a source.
async fn refetch(gateway: &Gateway, source: &mut ReloadSource) -> Result<(), SnapshotError> {
    if !source.sources.from_reflection {
        return Ok(());
    }
    let upstreams: Vec<_> = (0..).map_while(|i| gateway.upstream(i).cloned()).collect();
    source.sources.fetched_sets = crate::reflection_source::fetch_all(&upstreams)
        .await
        .map_err(SnapshotError::Build)?;
    Ok(())
}

async fn build_and_swap(gateway: &Arc<Gateway>, source: ReloadSource) -> Outcome {
    let built = tokio::task::spawn_blocking(move || source.build()).await;
    let outcome = match built {
        Ok(Ok(snapshot)) => {
            let routes = snapshot.routes.len();
            gateway.swap(snapshot);
            Outcome::Swapped { routes }
        }
        Ok(Err(e)) => Outcome::Kept(e),
        Err(e) => Outcome::Kept(SnapshotError::Build(format!("the reload task failed: {e}"))),
    };
    report(gateway, outcome)
}

/// Logs and counts an outcome.
fn report(gateway: &Gateway, outcome: Outcome) -> Outcome {
    match &outcome {
        Outcome::Swapped { routes } => tracing::info!(routes, "descriptors reloaded"),
        Outcome::Kept(e) => {
            tracing::error!(error = %e, "reload failed; the previous descriptors stay in service")
        }
    }
    gateway
        .metrics()
        .reload(matches!(outcome, Outcome::Swapped { .. }));
    outcome
}

/// Reloads on SIGHUP, and on file changes when `watch` is set, until the process ends.
pub fn spawn_triggers(
    gateway: Arc<Gateway>,
    source: ReloadSource,
    watch: bool,
) -> anyhow::Result<()> {
    spawn_triggers_every(gateway, source, watch, None)
}

/// [`spawn_triggers`], and with `refresh` a timer that fetches the reflection descriptors
/// again that often and reloads when they changed.
pub fn spawn_triggers_every(
    gateway: Arc<Gateway>,
    source: ReloadSource,
    watch: bool,
    refresh: Option<Duration>,
) -> anyhow::Result<()> {
    let (tx, rx) = mpsc::channel::<()>(1);
    spawn_sighup(tx.clone())?;
    let watcher = if watch {
        Some(watch_files(&source, tx)?)
    } else {
        None
    };
    tokio::spawn(async move {
        let _watcher = watcher;
        run(gateway, source, rx, refresh).await;
    });
    Ok(())
}

/// Waits for triggers, lets a burst of them settle, then reloads once; on each refresh tick,
/// fetches the reflection descriptors and reloads only when they changed.
async fn run(
    gateway: Arc<Gateway>,
    mut source: ReloadSource,
    mut rx: mpsc::Receiver<()>,
    refresh: Option<Duration>,
) {
    const SETTLE: Duration = Duration::from_millis(300);
    let mut ticks = refresh.filter(|d| !d.is_zero()).map(|every| {
        let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticks
    });
    loop {
        let tick = tokio::select! {
            trigger = rx.recv() => {
                if trigger.is_none() {
                    break;
                }
                while let Ok(Some(())) = tokio::time::timeout(SETTLE, rx.recv()).await {}
                false
            }
            () = next_tick(&mut ticks) => true,
        };
        let mut next = source.clone();
        if let Err(e) = refetch(&gateway, &mut next).await {
            report(&gateway, Outcome::Kept(e));
            continue;
        }
        if tick && next.sources.fetched_sets == source.sources.fetched_sets {
            tracing::debug!("reflection descriptors unchanged");
            continue;
        }
        if let Outcome::Swapped { .. } = build_and_swap(&gateway, next.clone()).await {
            source = next;
        }
    }
}

async fn next_tick(ticks: &mut Option<tokio::time::Interval>) {
    match ticks {
        Some(ticks) => {
            ticks.tick().await;
        }
        None => std::future::pending().await,
    }
}

#[cfg(unix)]
fn spawn_sighup(tx: mpsc::Sender<()>) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hup = signal(SignalKind::hangup())?;
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            let _ = tx.try_send(());
        }
    });
    Ok(())
}

#[cfg(not(unix))]
fn spawn_sighup(_tx: mpsc::Sender<()>) -> anyhow::Result<()> {
    Ok(())
}

fn watch_files(
    source: &ReloadSource,
    tx: mpsc::Sender<()>,
) -> anyhow::Result<notify::RecommendedWatcher> {
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if event.is_ok_and(|e| !e.kind.is_access()) {
            let _ = tx.try_send(());
        }
    })?;
    for (dir, mode) in source.watched() {
        watcher
            .watch(&dir, mode)
            .map_err(|e| anyhow::anyhow!("cannot watch {}: {e}", dir.display()))?;
    }
    Ok(watcher)
}
