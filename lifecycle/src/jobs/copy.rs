//! A copy job: packs the study's not yet copied ONLINE instances and stores the pack on the
//! target, then records it TO_ARCHIVE (verify-sync makes it ARCHIVED after reading it back).

use super::{JobContext, JobError, Reporter};
use crate::Services;
use archive_core::index::now_millis;
use archive_core::jobs::Job;
use archive_core::nearline::{NearlineErrorKind, PackRequest, PackSource, PackStatus};

pub(crate) async fn run(ctx: &JobContext<'_>) -> Result<(), JobError> {
    let (services, job, reporter) = (ctx.services, ctx.job, ctx.reporter);
    let index = &services.index;
    let (row, target) = ctx.open_target().await?;

    // Whatever an earlier attempt left half-uploaded (crash, outage, a node that lost its
    // lease) is abandoned and removed before anything is uploaded again. If it cannot be
    // removed the target is still unreachable: try again later.
    for (pack_id, key) in index
        .abandon_unfinished_packs(&job.study_uid, row.id, now_millis())
        .await?
    {
        tracing::info!(
            pack_id,
            key,
            "removing an unfinished upload of an earlier attempt"
        );
        target.discard(&key).await.map_err(|e| {
            JobError::retry(format!("cannot remove the unfinished upload {key}: {e}"))
        })?;
        index.mark_pack_discarded(pack_id, now_millis()).await?;
    }

    let sources = index.unpacked_instances(&job.study_uid, row.id).await?;
    if sources.is_empty() {
        tracing::info!("every ONLINE instance of the study already has a copy on the target");
        return Ok(());
    }
    reporter.set_totals(sources.len(), sources.iter().map(|s| s.size).sum());
    let groups = if row.spec.pack_per_series {
        by_series(sources)
    } else {
        vec![sources]
    };
    let several = groups.len() > 1;
    for (number, members) in groups.into_iter().enumerate() {
        let suffix = if several {
            format!("-{}", number + 1)
        } else {
            String::new()
        };
        // The job's creation time keeps keys unique across a rebuilt index, whose job ids
        // start again at 1 while the packs of the old ones are still on the target.
        let key = format!(
            "{}/{}-{}{suffix}-{}.tar",
            job.study_uid, job.id, job.attempts, job.created_at
        );
        upload_one(services, job, reporter, row.id, &target, key, members).await?;
    }
    Ok(())
}

async fn upload_one(
    services: &Services,
    job: &Job,
    reporter: &Reporter,
    target_id: i64,
    target: &std::sync::Arc<dyn archive_core::nearline::NearlineTarget>,
    key: String,
    members: Vec<PackSource>,
) -> Result<(), JobError> {
    let index = &services.index;
    let pack_id = index
        .begin_pack(&job.study_uid, target_id, &key, job.id, now_millis())
        .await?;
    let request = PackRequest {
        key: key.clone(),
        study_uid: job.study_uid.clone(),
        members: members.clone(),
    };
    let started = std::time::Instant::now();
    let receipt = match target.upload_pack(request, reporter.transfer.clone()).await {
        Ok(receipt) => receipt,
        Err(error) => {
            let _ = index
                .set_pack_status(pack_id, PackStatus::Abandoned, &error.message, now_millis())
                .await;
            match target.discard(&key).await {
                Ok(()) => index.mark_pack_discarded(pack_id, now_millis()).await?,
                Err(discard) => {
                    tracing::debug!(%discard, "cannot remove the failed upload now; the next attempt will")
                }
            }
            return Err(match error.kind {
                // Re-reading a damaged ONLINE file gives the same answer: an admin must look.
                NearlineErrorKind::SourceMismatch => JobError::permanent(error.message),
                _ => JobError::retry(error.message),
            });
        }
    };
    let placed: Vec<_> = members
        .into_iter()
        .zip(receipt.placements.iter().cloned())
        .collect();
    let recorded = index
        .complete_pack(
            pack_id,
            receipt.size,
            &receipt.sha256,
            &placed,
            now_millis(),
        )
        .await?;
    if !recorded {
        // Another node abandoned it meanwhile (we lost our lease); that node copies instead.
        return Err(JobError::retry("the pack was abandoned while uploading"));
    }
    let seconds = started.elapsed().as_secs_f64();
    tracing::info!(
        pack_id,
        key,
        location = %target.location(),
        members = placed.len(),
        bytes = receipt.size,
        mb_per_s = format!("{:.1}", receipt.size as f64 / 1e6 / seconds.max(1e-3)),
        "pack stored, waiting for verify-sync"
    );
    Ok(())
}

fn by_series(sources: Vec<PackSource>) -> Vec<Vec<PackSource>> {
    let mut groups: Vec<Vec<PackSource>> = Vec::new();
    for source in sources {
        match groups.last_mut() {
            Some(group) if group[0].series_uid == source.series_uid => group.push(source),
            _ => groups.push(vec![source]),
        }
    }
    groups
}
