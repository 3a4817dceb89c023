//! A restore job: brings a NEARLINE study back ONLINE. Its packs are fetched into the retrieve
//! cache (shared with retrievals), each member is written to the ONLINE group like a received
//! object (fsynced, renamed) and indexed; availability becomes ONLINE and the study counts as
//! just accessed, so retention rules leave it alone for a while.

use crate::worker::{JobError, Reporter};
use crate::Services;
use archive_core::index::now_millis;
use archive_core::jobs::Job;
use archive_core::online::relative_path_for;
use archive_core::query::Level;

pub(crate) async fn run(
    services: &Services,
    job: &Job,
    reporter: &Reporter,
) -> Result<(), JobError> {
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
        let pin = services
            .retriever
            .pin_pack(location, member)
            .await
            .map_err(|e| JobError::retry(e.to_string()))?;
        let source = pin.dir().join(&member.member_path);
        let bytes = tokio::fs::read(&source)
            .await
            .map_err(|e| JobError::retry(format!("cannot read {}: {e}", source.display())))?;
        let mut writer = services
            .online
            .begin()
            .map_err(|e| JobError::retry(format!("ONLINE storage: {e}")))?;
        writer
            .write(&bytes)
            .await
            .map_err(|e| JobError::retry(format!("ONLINE storage: {e}")))?;
        let rel_path = relative_path_for(
            chrono::Utc::now().date_naive(),
            &location.study_uid,
            &location.series_uid,
            &location.sop_uid,
        );
        let file = writer
            .finish(&rel_path)
            .await
            .map_err(|e| JobError::retry(format!("ONLINE storage: {e}")))?;
        if file.sha256 != location.sha256 {
            services.online.remove_unreferenced(&file).await;
            return Err(JobError::permanent(format!(
                "SOP Instance {}: restored bytes have SHA-256 {}, the index records {}",
                location.sop_uid, file.sha256, location.sha256
            )));
        }
        index
            .add_online_file(&location.sop_uid, &file, now_millis())
            .await?;
        reporter.transfer.add_item();
        reporter.transfer.add_bytes(file.size);
    }
    index.recompute_availability(&job.study_uid).await?;
    index
        .touch_studies(std::slice::from_ref(&job.study_uid), now_millis())
        .await?;
    tracing::info!(instances = nearline.len(), "study restored ONLINE");
    Ok(())
}
