//! Admin actions on a study, whoever asks (the CLI, the REST API, the admin UI through the
//! API): the study must exist, the target is chosen the same way, and the work becomes a job
//! in the jobs table that some node runs.

use crate::index::{Index, IndexError, IndexResult};
use crate::jobs::{Enqueued, JobType, NewJob};
use crate::text_enum::text_enum;

text_enum! {
    /// What an admin can ask for a study: `copy` its not yet copied ONLINE files to a
    /// NEARLINE target, `verify` its packs on a target, `delete-online` the ONLINE copies
    /// that have a verified NEARLINE copy, `restore` a NEARLINE study to ONLINE.
    pub enum StudyAction("study action") {
        Copy = "copy", Verify = "verify", DeleteOnline = "delete-online", Restore = "restore",
    }
}

impl StudyAction {
    pub fn job_type(self) -> JobType {
        match self {
            StudyAction::Copy => JobType::Copy,
            StudyAction::Verify => JobType::Verify,
            StudyAction::DeleteOnline => JobType::Delete,
            StudyAction::Restore => JobType::Restore,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ActionError {
    #[error("no study with Study Instance UID {0} in the index")]
    UnknownStudy(String),
    #[error("no nearline target named `{name}` (known: {known})")]
    UnknownTarget { name: String, known: String },
    #[error("no nearline target is configured")]
    NoTarget,
    #[error("there are several nearline targets; name one")]
    SeveralTargets,
    #[error(transparent)]
    Index(#[from] IndexError),
}

/// A queued action: the job (new, or the live one that already does this work) and the
/// target it names (empty when it names none).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Requested {
    pub enqueued: Enqueued,
    pub target: String,
}

/// Queues `action` for the study. Copy and verify need a target: the one named, or the only
/// one there is. Delete-online names one only when asked (then only copies ARCHIVED there
/// count); restore names none.
pub async fn request(
    index: &Index,
    action: StudyAction,
    study_uid: &str,
    target: Option<&str>,
    created_by: &str,
    max_attempts: u32,
) -> Result<Requested, ActionError> {
    if index.study(study_uid).await?.is_none() {
        return Err(ActionError::UnknownStudy(study_uid.to_string()));
    }
    let target = match action {
        StudyAction::Copy | StudyAction::Verify => choose_target(index, target).await?,
        StudyAction::DeleteOnline => match target {
            Some(name) => choose_target(index, Some(name)).await?,
            None => String::new(),
        },
        StudyAction::Restore => String::new(),
    };
    let kind = action.job_type();
    let enqueued = queue_job(index, kind, study_uid, &target, created_by, max_attempts).await?;
    Ok(Requested { enqueued, target })
}

/// The target named (which must exist), or the only one when none is named.
pub async fn choose_target(index: &Index, named: Option<&str>) -> Result<String, ActionError> {
    let targets = index.targets().await?;
    match named {
        Some(name) if targets.iter().any(|t| t.spec.name == name) => Ok(name.to_string()),
        Some(name) => Err(ActionError::UnknownTarget {
            name: name.to_string(),
            known: targets
                .iter()
                .map(|t| t.spec.name.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        }),
        None => match targets.as_slice() {
            [only] => Ok(only.spec.name.clone()),
            [] => Err(ActionError::NoTarget),
            _ => Err(ActionError::SeveralTargets),
        },
    }
}

// Queueing single jobs: the scheduler, verify-sync after a failure, a resumed deletion and
// `request` above all queue work the same way.

/// Queues a job unless a live one does the same work (then returns that one). The target is
/// the copy or verify target, a deletion's required target (empty: any), or for a scavenge
/// the node that runs it; a restore names none.
pub async fn queue_job(
    index: &Index,
    kind: JobType,
    study_uid: &str,
    target: &str,
    created_by: &str,
    max_attempts: u32,
) -> IndexResult<Enqueued> {
    let new = NewJob {
        job_type: kind,
        study_uid: study_uid.into(),
        target_name: target.into(),
        created_by: created_by.into(),
        max_attempts,
    };
    let enqueued = index.enqueue_job(&new, crate::index::now_millis()).await?;
    if enqueued.created {
        tracing::info!(
            job_id = enqueued.job_id,
            job_type = kind.as_str(),
            study = study_uid,
            target,
            created_by,
            "job queued"
        );
    }
    Ok(enqueued)
}
