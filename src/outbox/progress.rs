//! How a fan-out reports its progress: sent / total and the rate in the log every few
//! seconds and at the end, and the fan-out's time in the metrics once it is done.

use std::time::{Duration, Instant, SystemTime};

use super::OutboxWorker;
use crate::{
    domain::{LoadId, delivery::DeliveryReport},
    telemetry,
};

/// How often fan-out progress is logged.
const PROGRESS_EVERY: Duration = Duration::from_secs(2);

/// When a fan-out's progress was last logged.
pub(super) struct FanOutProgress {
    last_logged: Instant,
}

impl OutboxWorker {
    /// Logs sent / total and the rate of a load's fan-out, every few seconds and at the end.
    pub(super) async fn log_progress(&self, load: LoadId) {
        let now = Instant::now();
        {
            let mut progress = self.progress.lock().unwrap_or_else(|p| p.into_inner());
            let entry = progress
                .entry(load)
                .or_insert(FanOutProgress { last_logged: now });
            if now.duration_since(entry.last_logged) < PROGRESS_EVERY {
                return;
            }
            entry.last_logged = now;
        }
        self.report_progress(load).await;
    }

    /// The outbox ran dry for this lane: a last progress line for each fan-out it saw
    /// (other lanes may still be finishing theirs, and will log again when they are done).
    pub(super) async fn finish_progress(&self) {
        let finished: Vec<LoadId> = self
            .progress
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain()
            .map(|(load, _)| load)
            .collect();
        for load in finished {
            // Only the lane that drains a load's entry after its last result sees it
            // done, so each fan-out is timed once.
            if let Some((report, elapsed)) = self.report_progress(load).await
                && report.pending == 0
                && report.retrying == 0
            {
                metrics::histogram!(telemetry::FAN_OUT_SECONDS).record(elapsed);
            }
        }
    }

    /// Sent / total, and the rate since the load committed its deliveries; the report,
    /// and the seconds since that commit.
    async fn report_progress(&self, load: LoadId) -> Option<(DeliveryReport, f64)> {
        let Ok(Some(report)) = self.store.delivery_report(load).await else {
            return None;
        };
        let committed = self
            .snapshot
            .load()
            .load_record(load)
            .map_or(SystemTime::now(), |record| record.recorded_at);
        let elapsed = committed
            .elapsed()
            .unwrap_or_default()
            .as_secs_f64()
            .max(0.001);
        tracing::info!(
            load,
            sent = report.sent,
            total = report.recipients,
            pending = report.pending,
            retrying = report.retrying,
            failed = report.failed,
            rate_per_second = format!("{:.0}", report.sent as f64 / elapsed),
            "fan-out progress"
        );
        Some((report, elapsed))
    }
}
