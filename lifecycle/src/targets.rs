//! Open targets, by name, reopened when their settings change (e.g. `strata nearline add`
//! replaced them while the server runs).

use archive_core::config::TargetSpec;
use archive_core::nearline::{NearlineResult, NearlineTarget, TargetFactory, TargetRow};
use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::Mutex;

/// Open targets by name, each with the settings it was opened with.
type OpenTargets = HashMap<String, (TargetSpec, Arc<dyn NearlineTarget>)>;

pub struct TargetCache {
    factory: Arc<dyn TargetFactory>,
    open: Mutex<OpenTargets>,
}

impl TargetCache {
    pub fn new(factory: Arc<dyn TargetFactory>) -> TargetCache {
        TargetCache {
            factory,
            open: Mutex::new(HashMap::new()),
        }
    }

    pub async fn get(&self, row: &TargetRow) -> NearlineResult<Arc<dyn NearlineTarget>> {
        let mut open = self.open.lock().await;
        if let Some((spec, target)) = open.get(&row.spec.name) {
            if *spec == row.spec {
                return Ok(target.clone());
            }
        }
        let target = self.factory.open(&row.spec).await?;
        open.insert(row.spec.name.clone(), (row.spec.clone(), target.clone()));
        Ok(target)
    }
}

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
