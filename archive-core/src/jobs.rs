//! The jobs table: every lifecycle action is a row that any node can see and one node runs.

use crate::index::{Index, IndexResult};
use serde::Serialize;

pub mod job_type {
    pub const COPY: &str = "COPY";
    pub const VERIFY: &str = "VERIFY";
    /// Deletes a study's ONLINE copies (those with an ARCHIVED NEARLINE copy).
    pub const DELETE: &str = "DELETE";
    /// Copies a NEARLINE study back to ONLINE storage.
    pub const RESTORE: &str = "RESTORE";
}

pub mod job_state {
    pub const QUEUED: &str = "QUEUED";
    pub const RUNNING: &str = "RUNNING";
    pub const DONE: &str = "DONE";
    pub const FAILED: &str = "FAILED";
    pub const CANCELLED: &str = "CANCELLED";

    pub fn is_final(state: &str) -> bool {
        matches!(state, DONE | FAILED | CANCELLED)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct Job {
    pub id: i64,
    pub job_type: String,
    pub study_uid: String,
    pub target_name: String,
    pub state: String,
    pub attempts: i64,
    pub max_attempts: i64,
    pub next_run_at: i64,
    pub owner_node: String,
    pub lease_expires_at: i64,
    pub done_items: i64,
    pub total_items: i64,
    pub done_bytes: i64,
    pub total_bytes: i64,
    pub last_error: String,
    pub created_by: String,
    pub created_at: i64,
    pub updated_at: i64,
    pub finished_at: Option<i64>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewJob {
    pub job_type: String,
    pub study_uid: String,
    pub target_name: String,
    /// `cli`, `rule:<name>`, `verify-sync`, `verify-failed`, …
    pub created_by: String,
    pub max_attempts: u32,
}

/// What enqueueing did: a new row, or the live job that already does this work.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Enqueued {
    pub job_id: i64,
    pub created: bool,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct JobProgress {
    pub done_items: i64,
    pub total_items: i64,
    pub done_bytes: i64,
    pub total_bytes: i64,
}

/// How a run of a job ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JobOutcome {
    Done,
    /// Try again at `at` (Unix ms).
    Retry {
        at: i64,
        error: String,
    },
    Failed {
        error: String,
    },
}

#[derive(Clone, Debug, Default)]
pub struct JobFilter {
    pub state: Option<String>,
    pub job_type: Option<String>,
    pub study_uid: Option<String>,
    pub limit: i64,
}

// Creating jobs: the scheduler, verify-sync after a failure, the CLI and the REST API all
// queue work the same way.

/// Queues a copy of the study's not yet copied instances to `target`.
pub async fn request_copy(
    index: &Index,
    study_uid: &str,
    target: &str,
    created_by: &str,
    max_attempts: u32,
) -> IndexResult<Enqueued> {
    enqueue(
        index,
        job_type::COPY,
        study_uid,
        target,
        created_by,
        max_attempts,
    )
    .await
}

/// Queues a read-back of the study's packs on `target`.
pub async fn request_verify(
    index: &Index,
    study_uid: &str,
    target: &str,
    created_by: &str,
    max_attempts: u32,
) -> IndexResult<Enqueued> {
    enqueue(
        index,
        job_type::VERIFY,
        study_uid,
        target,
        created_by,
        max_attempts,
    )
    .await
}

/// Queues the deletion of a study's ONLINE copies (those with an ARCHIVED copy, on
/// `require_target` if not empty).
pub async fn request_delete(
    index: &Index,
    study_uid: &str,
    require_target: &str,
    created_by: &str,
    max_attempts: u32,
) -> IndexResult<Enqueued> {
    enqueue(
        index,
        job_type::DELETE,
        study_uid,
        require_target,
        created_by,
        max_attempts,
    )
    .await
}

/// Queues bringing a NEARLINE study back ONLINE.
pub async fn request_restore(
    index: &Index,
    study_uid: &str,
    created_by: &str,
    max_attempts: u32,
) -> IndexResult<Enqueued> {
    enqueue(
        index,
        job_type::RESTORE,
        study_uid,
        "",
        created_by,
        max_attempts,
    )
    .await
}

async fn enqueue(
    index: &Index,
    kind: &str,
    study_uid: &str,
    target: &str,
    created_by: &str,
    max_attempts: u32,
) -> IndexResult<Enqueued> {
    let new = NewJob {
        job_type: kind.into(),
        study_uid: study_uid.into(),
        target_name: target.into(),
        created_by: created_by.into(),
        max_attempts,
    };
    let enqueued = index.enqueue_job(&new, crate::index::now_millis()).await?;
    if enqueued.created {
        tracing::info!(
            job_id = enqueued.job_id,
            job_type = kind,
            study = study_uid,
            target,
            created_by,
            "job queued"
        );
    }
    Ok(enqueued)
}
