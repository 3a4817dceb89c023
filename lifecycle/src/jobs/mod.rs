//! The lifecycle jobs, one file each, and the one place that says which runs a job row.
//!
//! Adding a kind of job: a variant of `archive_core::jobs::JobType` (its text is what the
//! jobs table stores), a file here with `pub(crate) async fn run(ctx: &JobContext)`, and its
//! arm in [`run`] (the match is exhaustive, so the compiler asks for it). A job
//! fails with a [`JobError`] saying whether another attempt could help, reports progress
//! through its [`Reporter`], and must be safe to run again from the start: a node that dies
//! mid-run loses its lease and another node runs the job again.

mod context;
mod copy;
mod delete;
mod fixity;
mod restore;
mod scavenge;
mod verify;

pub(crate) use context::{JobContext, JobError, Reporter};
pub(crate) use fixity::FIXITY_REPAIR;

use crate::Services;
use archive_core::jobs::{Job, JobType};

pub(crate) async fn run(
    services: &Services,
    job: &Job,
    reporter: &Reporter,
) -> Result<(), JobError> {
    let ctx = JobContext {
        services,
        job,
        reporter,
    };
    match job.job_type {
        JobType::Copy => copy::run(&ctx).await,
        JobType::Verify => verify::run(&ctx).await,
        JobType::Delete => delete::run(&ctx).await,
        JobType::Restore => restore::run(&ctx).await,
        JobType::Scavenge => scavenge::run(&ctx).await,
        JobType::Fixity => fixity::run(&ctx).await,
    }
}
