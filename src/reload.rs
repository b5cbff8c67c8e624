//! Hot reload: rebuild the snapshot from the same sources off the request path, validate it
//! fully, and swap it atomically; a bad new set keeps the old snapshot. Triggers are SIGHUP
//! and, with `--watch-descriptors`, changes under the directories holding the descriptor
//! files (a Kubernetes ConfigMap update swaps a `..data` symlink in that directory, which a
//! watch on the file itself would miss).

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

/// Rebuilds the gateway's snapshot off the reactor and swaps it in when it is valid.
pub async fn reload(gateway: &Arc<Gateway>, source: &ReloadSource) -> Outcome {
    let source = source.clone();
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
    let (tx, rx) = mpsc::channel::<()>(1);
    spawn_sighup(tx.clone())?;
    let watcher = if watch {
        Some(watch_files(&source, tx)?)
    } else {
        None
    };
    tokio::spawn(async move {
        let _watcher = watcher;
        run(gateway, source, rx).await;
    });
    Ok(())
}

/// Waits for triggers, lets a burst of them settle, then reloads once.
async fn run(gateway: Arc<Gateway>, source: ReloadSource, mut rx: mpsc::Receiver<()>) {
    const SETTLE: Duration = Duration::from_millis(300);
    while rx.recv().await.is_some() {
        while let Ok(Some(())) = tokio::time::timeout(SETTLE, rx.recv()).await {}
        reload(&gateway, &source).await;
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
