//! The lifecycle jobs, one file each, and the one place that says which runs a job row.
//!
//! Adding a kind of job: a variant of `archive_core::jobs::JobType` (its text is what the
//! jobs table stores), a file here with `pub(crate) async fn run(services, job, reporter)`,
//! and its arm in [`run`] (the match is exhaustive, so the compiler asks for it). A job
//! fails with a [`JobError`] saying whether another attempt could help, reports progress
//! through its [`Reporter`], and must be safe to run again from the start: a node that dies
//! mid-run loses its lease and another node runs the job again.

mod context;
mod copy;
mod delete;
mod restore;
mod scavenge;
mod verify;

pub(crate) use context::{JobError, Reporter};

use crate::Services;
use archive_core::jobs::{Job, JobType};

pub(crate) async fn run(
    services: &Services,
    job: &Job,
    reporter: &Reporter,
) -> Result<(), JobError> {
    match job.job_type {
        JobType::Copy => copy::run(services, job, reporter).await,
        JobType::Verify => verify::run(services, job, reporter).await,
        JobType::Delete => delete::run(services, job, reporter).await,
        JobType::Restore => restore::run(services, job, reporter).await,
        JobType::Scavenge => scavenge::run(services, job, reporter).await,
    }
}
