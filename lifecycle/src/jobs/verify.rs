//! A verify job (verify-sync): reads every pack of the study on the target back, checks each
//! member against the index, and marks the pack ARCHIVED — or VERIFY_FAILED, queueing a new
//! copy of what it held.

use super::{JobContext, JobError};
use archive_core::index::now_millis;
use archive_core::jobs::JobType;
use archive_core::nearline::{ExpectedPack, PackStatus, VerifyOutcome};

/// Longest error text stored on a pack: enough for the first few problems.
const MAX_ERROR_CHARS: usize = 2000;

pub(crate) async fn run(ctx: &JobContext<'_>) -> Result<(), JobError> {
    let (services, job, reporter) = (ctx.services, ctx.job, ctx.reporter);
    let index = &services.index;
    let (row, target) = ctx.open_target().await?;
    let packs: Vec<_> = index
        .packs_of_study(&job.study_uid)
        .await?
        .into_iter()
        .filter(|p| p.target_id == row.id)
        .filter(|p| matches!(p.status, PackStatus::ToArchive | PackStatus::Archived))
        .collect();
    if packs.is_empty() {
        tracing::info!("no pack of the study on the target to verify");
        return Ok(());
    }
    reporter.set_totals(
        packs.iter().map(|p| p.member_count as usize).sum(),
        packs.iter().map(|p| p.size_bytes as u64).sum(),
    );

    let mut failed = Vec::new();
    for pack in packs {
        let expected = ExpectedPack {
            key: pack.object_key.clone(),
            size: pack.size_bytes as u64,
            sha256: pack.sha256.clone(),
            members: index.pack_members(pack.id).await?,
        };
        let outcome = target
            .verify_pack(&expected, reporter.transfer.clone())
            .await
            .map_err(|e| JobError::retry(e.message))?;
        match outcome {
            VerifyOutcome::Intact => {
                index
                    .set_pack_status(pack.id, PackStatus::Archived, "", now_millis())
                    .await?;
                tracing::info!(pack_id = pack.id, key = %pack.object_key, members = expected.members.len(), "pack verified: ARCHIVED");
            }
            VerifyOutcome::Damaged(problems) => {
                let mut error = problems.join("; ");
                if error.len() > MAX_ERROR_CHARS {
                    let cut = (0..=MAX_ERROR_CHARS)
                        .rev()
                        .find(|&i| error.is_char_boundary(i))
                        .unwrap_or(0);
                    error.truncate(cut);
                    error.push_str(" …");
                }
                index
                    .set_pack_status(pack.id, PackStatus::VerifyFailed, &error, now_millis())
                    .await?;
                tracing::error!(pack_id = pack.id, key = %pack.object_key, problems = problems.len(), first = %problems[0], "pack failed verification: VERIFY_FAILED");
                failed.push(format!("pack {} ({}): {error}", pack.id, pack.object_key));
            }
        }
    }
    if failed.is_empty() {
        return Ok(());
    }
    // Its members count as not copied any more: a new copy job packs them again.
    let copy = crate::queue_job(
        index,
        JobType::Copy,
        &job.study_uid,
        &job.target_name,
        "verify-failed",
        services.settings.max_attempts,
    )
    .await?;
    Err(JobError::permanent(format!(
        "{} pack(s) failed verification, copy job {} will copy again: {}",
        failed.len(),
        copy.job_id,
        failed.join(" | ")
    )))
}
