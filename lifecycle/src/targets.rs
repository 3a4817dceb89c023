//! The target a job names (targets stay open in archive-core's `TargetCache`, reopened when
//! their settings change).

use archive_core::nearline::{NearlineTarget, TargetRow};
use std::sync::Arc;

/// The target a job names, opened. A target that does not exist (any more) fails the job for
/// good; one that cannot be opened (unreadable credentials file, …) is retried.
pub(crate) async fn open_job_target(
    services: &crate::Services,
    job: &archive_core::jobs::Job,
) -> Result<(TargetRow, Arc<dyn NearlineTarget>), crate::worker::JobError> {
    use crate::worker::JobError;
    let row = services
        .index
        .target(&job.target_name)
        .await?
        .ok_or_else(|| {
            JobError::permanent(format!(
                "there is no nearline target named `{}`",
                job.target_name
            ))
        })?;
    let target = services
        .targets
        .get(&row)
        .await
        .map_err(|e| JobError::retry(format!("cannot open target `{}`: {e}", row.spec.name)))?;
    Ok((row, target))
}
