//! A scavenge job: cleans up what crashes leave behind on the node that runs it.
//!
//! 1. Retrieve cache: entries no pack claims (a fetch whose task died mid-way).
//! 2. Spool: `.incoming` files of transfers that will never finish, once unmodified for the
//!    grace period (an acknowledged object never stays in the spool, so nothing is lost).
//! 3. ONLINE filesystems: files no index row points at (a crash between the rename into place
//!    and the index commit leaves one; so does a file copied in by hand), once unmodified for
//!    the grace period so an object being committed right now is never one of them. They are
//!    counted and logged; removed only with `lifecycle.remove_orphans`.
//!
//! Running it twice does no harm: everything it removes is gone the second time.

use super::{JobContext, JobError, Reporter};
use crate::Services;
use archive_core::metrics;
use archive_core::online::sweep::{sweep_spool, walk_objects, FoundFile};
use std::path::{Path, PathBuf};
use std::time::SystemTime;
use tokio::sync::mpsc;

/// Paths asked of the index at once.
const BATCH: usize = 500;

pub(crate) async fn run(ctx: &JobContext<'_>) -> Result<(), JobError> {
    let (services, reporter) = (ctx.services, ctx.reporter);
    let settings = &services.settings;
    let older_than = SystemTime::now() - settings.scavenge_grace;

    if let Some(cache) = services.retriever.cache().cloned() {
        let removed = blocking(move || cache.remove_leftovers()).await?;
        metrics::CACHE_LEFTOVERS_REMOVED.add(removed);
        if removed > 0 {
            tracing::info!(removed, "scavenge: removed retrieve-cache leftovers");
        }
    }

    let filesystems = services.index.filesystems().await?;
    let mut orphans = Orphans::default();
    for fs in &filesystems {
        let root = PathBuf::from(&fs.path);
        if !root.is_dir() {
            // Not mounted on this node (or gone): nothing here to clean.
            continue;
        }
        if fs.is_writable() {
            let spool_root = root.clone();
            let (files, bytes) = blocking(move || sweep_spool(&spool_root, older_than)).await?;
            metrics::SPOOL_LEFTOVERS_REMOVED.add(files);
            if files > 0 {
                tracing::info!(filesystem = %fs.path, files, bytes, "scavenge: removed spool files of interrupted transfers");
            }
        }
        scan_filesystem(
            services,
            fs.id,
            &root,
            older_than,
            fs.is_writable(),
            reporter,
            &mut orphans,
        )
        .await?;
    }
    let action = if settings.remove_orphans {
        "removed"
    } else {
        "found (kept: lifecycle.remove_orphans is off)"
    };
    if orphans.files > 0 {
        tracing::warn!(
            files = orphans.files,
            bytes = orphans.bytes,
            removed = orphans.removed,
            "scavenge: ONLINE files without an index row {action}"
        );
    } else {
        tracing::info!("scavenge: no ONLINE file without an index row");
    }
    Ok(())
}

#[derive(Default)]
struct Orphans {
    files: u64,
    bytes: u64,
    removed: u64,
}

/// Walks one filesystem on the blocking pool, asking the index about each batch of files.
async fn scan_filesystem(
    services: &Services,
    filesystem_id: i64,
    root: &Path,
    older_than: SystemTime,
    writable: bool,
    reporter: &Reporter,
    orphans: &mut Orphans,
) -> Result<(), JobError> {
    let (sender, mut batches) = mpsc::channel::<Vec<FoundFile>>(2);
    let walk_root = root.to_path_buf();
    let walker = tokio::task::spawn_blocking(move || {
        walk_objects(&walk_root, older_than, BATCH, |batch| {
            sender.blocking_send(batch).is_ok()
        })
    });
    while let Some(batch) = batches.recv().await {
        let paths: Vec<String> = batch.iter().map(|f| f.rel_path.clone()).collect();
        let known = services.index.known_files(filesystem_id, &paths).await?;
        let unknown: Vec<FoundFile> = batch
            .into_iter()
            .filter(|file| !known.contains(&file.rel_path))
            .collect();
        reporter.transfer.add_items(paths.len() as u64);
        for file in &unknown {
            orphans.files += 1;
            orphans.bytes += file.size;
            metrics::ORPHANS_FOUND.add(1);
            tracing::debug!(path = %file.rel_path, size = file.size, "scavenge: file without an index row");
        }
        if services.settings.remove_orphans && writable && !unknown.is_empty() {
            let removed = remove_orphans(services, filesystem_id, root, unknown).await?;
            orphans.removed += removed;
            metrics::ORPHANS_REMOVED.add(removed);
        }
    }
    let report = walker
        .await
        .map_err(|e| JobError::retry(format!("the walk of {} stopped: {e}", root.display())))?;
    if report.unreadable_dirs > 0 {
        tracing::warn!(filesystem = %root.display(), directories = report.unreadable_dirs,
            "scavenge: directories that could not be listed were skipped");
    }
    Ok(())
}

/// Removes orphans, asking the index once more right before: a row committed since the walk
/// (an object restored or re-sent meanwhile) keeps its file.
async fn remove_orphans(
    services: &Services,
    filesystem_id: i64,
    root: &Path,
    unknown: Vec<FoundFile>,
) -> Result<u64, JobError> {
    let paths: Vec<String> = unknown.iter().map(|f| f.rel_path.clone()).collect();
    let known_now = services.index.known_files(filesystem_id, &paths).await?;
    let doomed: Vec<PathBuf> = paths
        .iter()
        .filter(|path| !known_now.contains(*path))
        .map(|path| root.join(path))
        .collect();
    blocking(move || {
        let mut removed = 0;
        for path in doomed {
            match std::fs::remove_file(&path) {
                Ok(()) => removed += 1,
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
                // One file that cannot go (permissions, a busy mount) does not stop the rest.
                Err(error) => {
                    tracing::warn!(path = %path.display(), %error, "scavenge: cannot remove an orphan file")
                }
            }
        }
        Ok(removed)
    })
    .await
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> Result<T, JobError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| JobError::retry(format!("scavenge work stopped: {e}")))?
        .map_err(|e| JobError::retry(format!("scavenge: {e}")))
}
