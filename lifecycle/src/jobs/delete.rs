//! A delete job: frees a study's ONLINE copies, crash-safely.
//!
//! 1. One transaction marks the files DELETING — only those whose instance has an ARCHIVED
//!    copy — and updates availability: from then on retrievals read the NEARLINE copy.
//! 2. The files are unlinked.
//! 3. Their rows are dropped.
//!
//! A crash after 1 leaves DELETING rows whose files may or may not exist: the next run of the
//! job (requeued at start) unlinks what is left and drops the rows. No row ever points at a
//! missing file that retrievals would use, and no file is left without a row. Unlinking a
//! path again is safe although a copy received meanwhile may have been placed there: no
//! other row can take a path a DELETING row holds (`file` is unique on filesystem and path),
//! so that copy is refused and removed by the accept path, not stored.

use super::{JobContext, JobError};

pub(crate) async fn run(ctx: &JobContext<'_>) -> Result<(), JobError> {
    let (services, job, reporter) = (ctx.services, ctx.job, ctx.reporter);
    let index = &services.index;
    // The job's target, if any, is the rule's `require_target`.
    let start = index
        .begin_online_deletion(&job.study_uid, &job.target_name)
        .await?;
    let files = index.deleting_files(&job.study_uid).await?;
    reporter.set_totals(files.len(), 0);
    let paths: Vec<_> = files.iter().map(|(_, path)| path.clone()).collect();
    let transfer = reporter.transfer.clone();
    tokio::task::spawn_blocking(move || {
        for path in paths {
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
                Err(error) => return Err(format!("cannot delete {}: {error}", path.display())),
            }
            transfer.add_item();
        }
        Ok(())
    })
    .await
    .map_err(|e| JobError::retry(format!("deletion thread failed: {e}")))?
    .map_err(JobError::retry)?;
    let ids: Vec<i64> = files.iter().map(|(id, _)| *id).collect();
    index.remove_file_rows(&ids).await?;
    tracing::info!(
        files = ids.len(),
        kept_unverified = start.kept_unverified,
        "ONLINE copies deleted; the study is served from NEARLINE"
    );
    if ids.is_empty() && start.kept_unverified > 0 {
        return Err(JobError::permanent(format!(
            "nothing deleted: {} instance(s) have no verified NEARLINE copy",
            start.kept_unverified
        )));
    }
    Ok(())
}
