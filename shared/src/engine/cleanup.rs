//! Cleanup: finished tasks deleted past their retention, then the sweep below the due
//! queue's watermarks.

use std::time::Duration;

use serde::Serialize;

use super::{Tasker, TaskerError};
use crate::store::{Store, SweepSummary};

/// What one cleanup run did: its purge and its sweep below the due queue's watermarks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CleanupSummary {
    /// Finished tasks deleted.
    pub deleted: u64,
    /// Due-queue entries the sweep read.
    pub swept: u64,
    /// Tasks the sweep found out of the processors' sight and made due again.
    pub rescued: u64,
    /// The sweep reached every watermark (false: the next run goes on from where it stopped).
    pub sweep_complete: bool,
}

impl<S: Store> Tasker<S> {
    /// Deletes finished tasks older than `retention`, then sweeps at most `sweep_entries`
    /// entries below the due queue's watermarks.
    pub async fn cleanup(
        &self,
        retention: Duration,
        sweep_entries: u64,
    ) -> Result<CleanupSummary, TaskerError> {
        self.cleanup_with_progress(retention, sweep_entries, &|_| ())
            .await
    }

    /// [`Tasker::cleanup`], calling `progress` with each chunk's count of deletes.
    pub async fn cleanup_with_progress(
        &self,
        retention: Duration,
        sweep_entries: u64,
        progress: &(dyn Fn(u64) + Send + Sync),
    ) -> Result<CleanupSummary, TaskerError> {
        let cutoff = self.clock.now().minus(retention);
        let deleted = self.store.task_purge_finished(cutoff, progress).await?;
        // Logged before the sweep, so a sweep that fails does not hide what the purge did.
        tracing::info!(deleted, cutoff = %cutoff, "purge finished");
        let swept = self.sweep(sweep_entries).await?;
        let summary = CleanupSummary {
            deleted,
            swept: swept.entries,
            rescued: swept.rescued,
            sweep_complete: swept.complete,
        };
        tracing::info!(
            deleted,
            swept = swept.entries,
            rescued = swept.rescued,
            sweep_complete = swept.complete,
            "cleanup finished"
        );
        Ok(summary)
    }

    /// Sweeps at most `max_entries` entries below the due queue's watermarks, making every task
    /// found there still due again (see [`Store::queue_sweep`]).
    pub async fn sweep(&self, max_entries: u64) -> Result<SweepSummary, TaskerError> {
        Ok(self
            .store
            .queue_sweep(self.clock.now(), max_entries)
            .await?)
    }
}
