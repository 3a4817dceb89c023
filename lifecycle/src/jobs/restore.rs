//! A restore job: brings a NEARLINE study back ONLINE. Its packs are fetched into the retrieve
//! cache (shared with retrievals), each member is streamed through archive-core's accept path
//! like a received object (spooled, checked against its recorded SHA-256, fsynced, renamed,
//! indexed); availability becomes ONLINE and the study counts as just accessed, so retention
//! rules leave it alone for a while.

use super::{JobContext, JobError};
use crate::Services;
use archive_core::accept::Spooled;
use archive_core::index::now_millis;
use archive_core::query::Level;
use std::path::Path;
use tokio::io::AsyncReadExt;

/// Read size while streaming a pack member into the spool.
const CHUNK: usize = 256 * 1024;

pub(crate) async fn run(ctx: &JobContext<'_>) -> Result<(), JobError> {
    let (services, job, reporter) = (ctx.services, ctx.job, ctx.reporter);
    let index = &services.index;
    let nearline = index
        .nearline_locations(Level::Study, std::slice::from_ref(&job.study_uid))
        .await?;
    reporter.set_totals(
        nearline.len(),
        nearline.iter().map(|l| l.size_bytes.max(0) as u64).sum(),
    );
    for location in &nearline {
        let Some(member) = &location.nearline else {
            continue;
        };
        // The preferred target's copy, else the next one's (as retrievals do).
        let mut pinned = Err(String::new());
        for candidate in std::iter::once(member).chain(&location.nearline_fallbacks) {
            match services.retriever.pin_pack(location, candidate).await {
                Ok(pin) => {
                    pinned = Ok((pin, candidate));
                    break;
                }
                Err(error) => {
                    tracing::warn!(target = %candidate.target_name, %error, "restore: cannot read this copy; trying the next");
                    pinned = Err(error.to_string());
                }
            }
        }
        let (pin, member) = pinned.map_err(JobError::retry)?;
        let source = pin.dir().join(&member.member_path);
        let spooled = spool_file(services, &source).await?;
        let file = services
            .acceptor
            .restore(spooled, location)
            .await
            .map_err(|refused| {
                if refused.reason.is_transient() {
                    JobError::retry(refused.reason.to_string())
                } else {
                    JobError::permanent(refused.reason.to_string())
                }
            })?;
        reporter.transfer.add_item();
        reporter.transfer.add_bytes(file.size);
    }
    index.recompute_availability(&job.study_uid).await?;
    index
        .touch_studies(std::slice::from_ref(&job.study_uid), now_millis())
        .await?;
    tracing::info!(instances = nearline.len(), "study restored ONLINE");
    // A fixity repair of a damaged pack whose ONLINE copy was gone: now that the study is
    // ONLINE again, the damaged target gets a new copy.
    if let Some(target) = job.created_by.strip_prefix(crate::jobs::FIXITY_REPAIR) {
        crate::queue_job(
            index,
            archive_core::jobs::JobType::Copy,
            &job.study_uid,
            target,
            "fixity",
            services.settings.max_attempts,
        )
        .await?;
    }
    Ok(())
}

/// Streams an unpacked member into the ONLINE spool, never holding it whole in memory.
async fn spool_file(services: &Services, source: &Path) -> Result<Spooled, JobError> {
    let unreadable =
        |e: std::io::Error| JobError::retry(format!("cannot read {}: {e}", source.display()));
    let mut file = tokio::fs::File::open(source).await.map_err(unreadable)?;
    let mut spooled = services
        .acceptor
        .begin()
        .map_err(|e| JobError::retry(format!("ONLINE storage: {e}")))?;
    let mut buffer = vec![0u8; CHUNK];
    loop {
        let n = file.read(&mut buffer).await.map_err(unreadable)?;
        if n == 0 {
            return Ok(spooled);
        }
        spooled
            .write(&buffer[..n])
            .await
            .map_err(|e| JobError::retry(format!("ONLINE storage: {e}")))?;
    }
}
