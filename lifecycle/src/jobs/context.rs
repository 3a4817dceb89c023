//! What every job shares: how a run fails ([`JobError`]), how it reports progress
//! ([`Reporter`]), and the target a NEARLINE job names.

use crate::Services;
use archive_core::jobs::{Job, JobProgress};
use archive_core::nearline::{NearlineTarget, TargetRow, TransferProgress};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

/// Why a run did not finish.
#[derive(Debug)]
pub(crate) struct JobError {
    pub message: String,
    /// Worth another attempt (an outage); `false` when retrying cannot help.
    pub retry: bool,
}

impl JobError {
    pub fn retry(message: impl Into<String>) -> JobError {
        JobError {
            message: message.into(),
            retry: true,
        }
    }
    pub fn permanent(message: impl Into<String>) -> JobError {
        JobError {
            message: message.into(),
            retry: false,
        }
    }
}

impl From<archive_core::index::IndexError> for JobError {
    fn from(error: archive_core::index::IndexError) -> Self {
        JobError::retry(format!("index: {error}"))
    }
}

/// Progress a running job reports; written to the job row with each lease renewal.
#[derive(Default)]
pub(crate) struct Reporter {
    pub total_items: AtomicI64,
    pub total_bytes: AtomicI64,
    pub transfer: Arc<TransferProgress>,
}

impl Reporter {
    pub fn set_totals(&self, items: usize, bytes: u64) {
        self.total_items.store(items as i64, Ordering::Relaxed);
        self.total_bytes.store(bytes as i64, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> JobProgress {
        JobProgress {
            done_items: self.transfer.items() as i64,
            total_items: self.total_items.load(Ordering::Relaxed),
            done_bytes: self.transfer.bytes() as i64,
            total_bytes: self.total_bytes.load(Ordering::Relaxed),
        }
    }
}

/// What a running job works with: this node's services, its row, and where it reports.
#[derive(Clone, Copy)]
pub(crate) struct JobContext<'a> {
    pub services: &'a Services,
    pub job: &'a Job,
    pub reporter: &'a Reporter,
}

impl JobContext<'_> {
    /// The target the job names, opened (targets stay open in archive-core's `TargetCache`,
    /// reopened when their settings change). A target that does not exist (any more) fails
    /// the job for good; one that cannot be opened (unreadable credentials file, …) is retried.
    pub async fn open_target(&self) -> Result<(TargetRow, Arc<dyn NearlineTarget>), JobError> {
        let name = &self.job.target_name;
        let row = self.services.index.target(name).await?.ok_or_else(|| {
            JobError::permanent(format!("there is no nearline target named `{name}`"))
        })?;
        let target =
            self.services.targets.get(&row).await.map_err(|e| {
                JobError::retry(format!("cannot open target `{}`: {e}", row.spec.name))
            })?;
        Ok((row, target))
    }
}
