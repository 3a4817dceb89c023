//! Creating lifecycle jobs: used by the scheduler, by verify-sync after a failure, and by the
//! CLI (and later the REST API), so every entry point queues work the same way.

use archive_core::index::{Index, IndexResult};
use archive_core::jobs::{job_type, Enqueued, NewJob};

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
    let enqueued = index
        .enqueue_job(&new, archive_core::index::now_millis())
        .await?;
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
