//! The export queue: finished spans go into a bounded channel without waiting (a full queue
//! drops the span and counts it in `protogate_trace_spans_dropped_total`), and one task takes
//! them out in batches and exports them. A request never waits for the collector.

use std::time::Duration;

use opentelemetry::Context;
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::trace::{Span, SpanData, SpanExporter, SpanProcessor};
use prometheus_client::metrics::counter::Counter;
use tokio::sync::{mpsc, oneshot};

use super::config::TraceConfig;

/// Sends finished spans to the export task, dropping (and counting) what does not fit.
#[derive(Debug)]
pub(crate) struct QueueProcessor {
    spans: mpsc::Sender<SpanData>,
    dropped: Counter,
}

impl SpanProcessor for QueueProcessor {
    fn on_start(&self, _span: &mut Span, _cx: &Context) {}

    fn on_end(&self, span: SpanData) {
        if !span.span_context.is_sampled() {
            return;
        }
        if self.spans.try_send(span).is_err() {
            self.dropped.inc();
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        Ok(())
    }

    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        Ok(())
    }
}

/// Asks the export task to send everything queued now.
#[derive(Debug, Clone)]
pub(crate) struct Flusher(mpsc::Sender<oneshot::Sender<()>>);

impl Flusher {
    /// Exports what is queued, waiting at most `within`.
    pub(crate) async fn flush(&self, within: Duration) -> Result<(), &'static str> {
        let (done, exported) = oneshot::channel();
        let asked = async {
            self.0
                .send(done)
                .await
                .map_err(|_| "the exporter stopped")?;
            exported.await.map_err(|_| "the exporter stopped")
        };
        tokio::time::timeout(within, asked)
            .await
            .map_err(|_| "the collector did not take the spans in time")?
    }
}

/// The processor to give the tracer provider, and the flusher of its queue; spawns the export
/// task on the current runtime.
pub(crate) fn start<E>(
    exporter: E,
    config: &TraceConfig,
    dropped: Counter,
) -> (QueueProcessor, Flusher)
where
    E: SpanExporter + 'static,
{
    let (spans, queued) = mpsc::channel(config.max_queue_size);
    let (flushes, asked) = mpsc::channel(1);
    let batches = Batches {
        exporter,
        max_batch: config.max_export_batch_size,
        delay: config.schedule_delay,
        timeout: config.export_timeout,
        failures: Failures::default(),
    };
    tokio::spawn(batches.run(queued, asked));
    (QueueProcessor { spans, dropped }, Flusher(flushes))
}

/// The export task's state.
struct Batches<E> {
    exporter: E,
    max_batch: usize,
    delay: Duration,
    timeout: Duration,
    failures: Failures,
}

/// How often a failing collector is logged: once, then at most once a minute, with the count.
const WARN_EVERY: Duration = Duration::from_secs(60);

/// Exports that failed since the last warning, and when that was.
#[derive(Debug, Default)]
struct Failures {
    warned: Option<tokio::time::Instant>,
    unlogged: u64,
}

impl Failures {
    /// Counts a failed export of `spans`, and logs it unless a warning went out lately.
    fn failed(&mut self, spans: usize, error: &OTelSdkError) {
        self.unlogged += 1;
        let now = tokio::time::Instant::now();
        if self.warned.is_some_and(|at| now < at + WARN_EVERY) {
            return;
        }
        tracing::warn!(
            spans,
            failed_exports = self.unlogged,
            %error,
            "cannot export spans to the OTLP collector"
        );
        self.warned = Some(now);
        self.unlogged = 0;
    }
}

impl<E: SpanExporter> Batches<E> {
    /// Exports a batch when it is full or when its first span has waited `delay`, and all that
    /// is queued when asked to flush; ends when every processor is gone.
    async fn run(
        mut self,
        mut queued: mpsc::Receiver<SpanData>,
        mut asked: mpsc::Receiver<oneshot::Sender<()>>,
    ) {
        let mut batch = Vec::with_capacity(self.max_batch);
        let mut due = None;
        loop {
            let wait = async move {
                match due {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                span = queued.recv() => {
                    let Some(span) = span else { break };
                    if batch.is_empty() {
                        due = Some(tokio::time::Instant::now() + self.delay);
                    }
                    batch.push(span);
                    if batch.len() >= self.max_batch {
                        self.export(&mut batch).await;
                        due = None;
                    }
                }
                () = wait => {
                    self.export(&mut batch).await;
                    due = None;
                }
                Some(done) = asked.recv() => {
                    while let Ok(span) = queued.try_recv() {
                        batch.push(span);
                        if batch.len() >= self.max_batch {
                            self.export(&mut batch).await;
                        }
                    }
                    self.export(&mut batch).await;
                    due = None;
                    let _ = done.send(());
                }
            }
        }
        self.export(&mut batch).await;
    }

    /// Sends `batch` (emptying it) within the export timeout; a failure is logged (at most once
    /// a minute), the spans are lost.
    async fn export(&mut self, batch: &mut Vec<SpanData>) {
        if batch.is_empty() {
            return;
        }
        let spans = std::mem::replace(batch, Vec::with_capacity(self.max_batch));
        let count = spans.len();
        let result = match tokio::time::timeout(self.timeout, self.exporter.export(spans)).await {
            Ok(result) => result,
            Err(_) => Err(OTelSdkError::Timeout(self.timeout)),
        };
        if let Err(error) = result {
            self.failures.failed(count, &error);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_failing_collector_is_logged_once_a_minute() {
        let mut failures = Failures::default();
        let error = OTelSdkError::Timeout(Duration::from_secs(1));
        failures.failed(3, &error);
        assert_eq!(failures.unlogged, 0, "the first failure is logged");
        failures.failed(3, &error);
        failures.failed(3, &error);
        assert_eq!(failures.unlogged, 2);
        tokio::time::advance(WARN_EVERY).await;
        failures.failed(3, &error);
        assert_eq!(failures.unlogged, 0, "logged again, with the count");
    }
}
