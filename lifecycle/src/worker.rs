//! A job worker: claims the next due job from the shared table, keeps its lease alive while it
//! runs (recording progress on the way), and records how it ended — done, retry later with
//! exponential backoff, or failed for good.

use crate::jobs::Reporter;
use crate::Services;
use archive_core::audit::{AuditAction, AuditOutcome, NewAuditEvent};
use archive_core::index::now_millis;
use archive_core::jobs::{Job, JobOutcome, JobType};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tracing::Instrument;

pub(crate) async fn run(services: Arc<Services>, number: u32, mut stop: watch::Receiver<bool>) {
    let node = services.settings.node_id.clone();
    loop {
        if *stop.borrow() {
            return;
        }
        let claimed = services
            .index
            .claim_job(&node, now_millis(), services.settings.lease_ms)
            .await;
        match claimed {
            Ok(Some(job)) => {
                let span = tracing::info_span!("job", job_id = job.id, job_type = %job.job_type,
                    study = %job.study_uid, target = %job.target_name, attempt = job.attempts, worker = number);
                run_claimed(&services, job).instrument(span).await;
                continue;
            }
            Ok(None) => {}
            Err(error) => tracing::warn!(%error, "cannot claim a job"),
        }
        tokio::select! {
            _ = tokio::time::sleep(services.settings.poll_interval) => {}
            _ = stop.changed() => {}
        }
    }
}

async fn run_claimed(services: &Services, job: Job) {
    let reporter = Arc::new(Reporter::default());
    tracing::info!("job started");
    let work = crate::jobs::run(services, &job, &reporter);
    let lost = keep_lease(services, &job, reporter.clone());
    let result = tokio::select! {
        result = work => result,
        () = lost => {
            tracing::warn!("job is no longer ours (cancelled, or taken over after our lease expired); stopped working on it");
            return;
        }
    };
    let now = now_millis();
    let outcome = match result {
        Ok(()) => JobOutcome::Done,
        Err(error) if error.retry && job.attempts < job.max_attempts => JobOutcome::Retry {
            at: now + services.settings.backoff_ms(job.attempts),
            error: error.message,
        },
        Err(error) => JobOutcome::Failed {
            error: error.message,
        },
    };
    // Final progress first, so a finished job shows its totals.
    let _ = services
        .index
        .renew_job(
            job.id,
            &services.settings.node_id,
            now,
            services.settings.lease_ms,
            reporter.snapshot(),
        )
        .await;
    match &outcome {
        JobOutcome::Done => tracing::info!("job done"),
        JobOutcome::Retry { at, error } => {
            tracing::warn!(%error, retry_in_ms = at - now, "job failed, will retry")
        }
        JobOutcome::Failed { error } => tracing::error!(%error, "job failed"),
    }
    audit(services, &job, &outcome, &reporter).await;
    match services
        .index
        .finish_job(job.id, &services.settings.node_id, now, &outcome)
        .await
    {
        Ok(true) => {}
        Ok(false) => {
            tracing::warn!("job ended but is no longer ours; its outcome was not recorded")
        }
        Err(error) => {
            tracing::error!(%error, "cannot record the job's outcome; its lease will expire and it will run again")
        }
    }
}

/// Deletions and restores change what the archive holds: each one that ended (done, or
/// failed for good) is an audit event. Copies and verifications are not: they add copies.
async fn audit(services: &Services, job: &Job, outcome: &JobOutcome, reporter: &Reporter) {
    let action = match job.job_type {
        JobType::Delete => AuditAction::Delete,
        JobType::Restore => AuditAction::Restore,
        _ => return,
    };
    let progress = reporter.snapshot();
    let (outcome, detail) = match outcome {
        JobOutcome::Done => (
            AuditOutcome::Success,
            format!(
                "job {}: {} ONLINE files, {} bytes",
                job.id, progress.done_items, progress.done_bytes
            ),
        ),
        JobOutcome::Failed { error } => (AuditOutcome::Failure, format!("job {}: {error}", job.id)),
        JobOutcome::Retry { .. } => return,
    };
    let event = NewAuditEvent::new(action, outcome, job.created_by.as_str())
        .study(job.study_uid.as_str())
        .detail(detail);
    services.auditor.record(event).await;
}

/// Renews the lease every third of its length; returns only if the job is no longer ours.
async fn keep_lease(services: &Services, job: &Job, reporter: Arc<Reporter>) {
    let every = Duration::from_millis((services.settings.lease_ms / 3).max(200) as u64);
    let mut failures = 0;
    loop {
        tokio::time::sleep(every).await;
        let renewed = services
            .index
            .renew_job(
                job.id,
                &services.settings.node_id,
                now_millis(),
                services.settings.lease_ms,
                reporter.snapshot(),
            )
            .await;
        match renewed {
            Ok(true) => failures = 0,
            Ok(false) => return,
            Err(error) => {
                // The database may be briefly away; the lease covers two missed renewals.
                failures += 1;
                tracing::warn!(%error, failures, "cannot renew the job's lease");
                if failures >= 2 {
                    return;
                }
            }
        }
    }
}
