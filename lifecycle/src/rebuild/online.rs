//! Rebuilding from an ONLINE filesystem: every stored file the index does not know is hashed,
//! its header read, and indexed through the ingest path (as a C-STORE of it would be).

use super::{Progress, RebuildError, RebuildOptions, RebuildReport};
use archive_core::accept::describe_stored;
use archive_core::config::DuplicatePolicy;
use archive_core::index::{now_millis, Held, Index, NewInstance};
use archive_core::model::{Filesystem, StoreOutcome, StoredFile};
use archive_core::online::sweep::{day_directories, objects_of_day, FoundFile};
use archive_core::online::ParseSource;
use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

/// Files indexed per ingest batch.
const BATCH: usize = 64;

pub(super) async fn scan(
    index: &Index,
    filesystem: &Filesystem,
    options: &RebuildOptions,
    progress: &Progress,
    report: &mut RebuildReport,
) -> Result<(), RebuildError> {
    let root = PathBuf::from(&filesystem.path);
    let scope = format!("online:{}", filesystem.path);
    let checkpoint = index.rebuild_checkpoint(&scope).await?;
    let listing_root = root.clone();
    let days = blocking(move || day_directories(&listing_root)).await?;
    let days: Vec<String> = days
        .into_iter()
        .filter(|day| checkpoint.as_ref().is_none_or(|done| day > done))
        .collect();
    // Totals first (names and sizes only), so progress can tell how far along it is.
    let count_root = root.clone();
    let count_days = days.clone();
    let (items, bytes) = blocking(move || {
        let mut totals = (0u64, 0u64);
        for day in &count_days {
            for file in objects_of_day(&count_root, day)? {
                totals.0 += 1;
                totals.1 += file.size;
            }
        }
        Ok(totals)
    })
    .await?;
    progress.begin(format!("ONLINE {}", filesystem.path), items, bytes);
    let parallel = Arc::new(Semaphore::new(options.parallel.max(1)));
    for day in days {
        let day_root = root.clone();
        let day_name = day.clone();
        let files = blocking(move || in_received_order(&day_root, &day_name)).await?;
        index_files(index, filesystem, &files, &parallel, progress, report).await?;
        index
            .set_rebuild_checkpoint(&scope, &day, now_millis())
            .await?;
    }
    Ok(())
}

/// Indexes the files of `filesystem` the index does not know yet, in batches through the
/// ingest path (`files` in the order they should be indexed). Files already indexed are
/// counted and skipped; a file that cannot be indexed is a problem in the report.
pub(super) async fn index_files(
    index: &Index,
    filesystem: &Filesystem,
    files: &[FoundFile],
    parallel: &Arc<Semaphore>,
    progress: &Progress,
    report: &mut RebuildReport,
) -> Result<(), RebuildError> {
    let root = PathBuf::from(&filesystem.path);
    for chunk in files.chunks(BATCH) {
        let paths: Vec<String> = chunk.iter().map(|f| f.rel_path.clone()).collect();
        let known = index.known_files(filesystem.id, &paths).await?;
        let (already, new): (Vec<&FoundFile>, Vec<&FoundFile>) =
            chunk.iter().partition(|f| known.contains(&f.rel_path));
        report.files_already_indexed += already.len() as u64;
        progress.done(
            already.len() as u64,
            already.iter().map(|f| f.size).sum::<u64>(),
        );
        let described = describe_all(&root, filesystem.id, &new, parallel, progress).await;
        let mut batch = Vec::with_capacity(described.len());
        for result in described {
            match result {
                Ok(instance) => batch.push(instance),
                Err(problem) => report.problems.push(problem),
            }
        }
        for (new, outcome) in batch.iter().zip(index.store_batch(&batch).await) {
            let path = new.held.file().map(|f| f.rel_path.as_str()).unwrap_or("");
            match outcome? {
                StoreOutcome::Stored => report.files_indexed += 1,

                StoreOutcome::Conflict(conflict) => report.problems.push(format!(
                    "{}/{path}: not indexed: {conflict}",
                    filesystem.path
                )),
                // Keep-first: the index has the instance with another file (a second copy
                // on another filesystem). The file stays where it is.
                _ => report.problems.push(format!(
                    "{}/{path}: SOP Instance {} is already indexed with another file; \
                     this copy was left in place, not indexed",
                    filesystem.path, new.record.instance.sop_instance_uid
                )),
            }
        }
        index.fold_counts_if_due().await;
    }
    Ok(())
}

/// The day's objects oldest first: where the instances of a study disagree on a study-level
/// attribute, the index keeps the first one received, and so must the rebuild.
fn in_received_order(root: &Path, day: &str) -> std::io::Result<Vec<FoundFile>> {
    let mut files: Vec<(Option<std::time::SystemTime>, FoundFile)> = objects_of_day(root, day)?
        .into_iter()
        .map(|file| {
            let modified = std::fs::metadata(root.join(&file.rel_path))
                .and_then(|m| m.modified())
                .ok();
            (modified, file)
        })
        .collect();
    files.sort_by(|a, b| (a.0, &a.1.rel_path).cmp(&(b.0, &b.1.rel_path)));
    Ok(files.into_iter().map(|(_, file)| file).collect())
}

/// Hashes and reads the headers of `files`, `parallel` at a time on the blocking pool.
async fn describe_all(
    root: &Path,
    filesystem_id: i64,
    files: &[&FoundFile],
    parallel: &Arc<Semaphore>,
    progress: &Progress,
) -> Vec<Result<NewInstance, String>> {
    let mut tasks = JoinSet::new();
    for (position, file) in files.iter().enumerate() {
        let permit = parallel.clone().acquire_owned().await;
        let path = root.join(&file.rel_path);
        let rel_path = file.rel_path.clone();
        tasks.spawn_blocking(move || {
            let _permit = permit;
            (position, describe_file(&path, filesystem_id, rel_path))
        });
    }
    let mut results: Vec<Option<Result<NewInstance, String>>> = vec![None; files.len()];
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok((position, result)) => {
                if let Ok(new) = &result {
                    progress.done(1, new.held.size());
                }
                results[position] = Some(result);
            }
            Err(error) => tracing::warn!(%error, "rebuild: a file's description stopped"),
        }
    }
    results
        .into_iter()
        .zip(files)
        .map(|(result, file)| {
            result.unwrap_or_else(|| Err(format!("{}: could not be read", file.rel_path)))
        })
        .collect()
}

/// One stored file as the ingest path takes it: SHA-256 of every byte, the header up to Pixel
/// Data, received when the file was last written.
fn describe_file(path: &Path, filesystem_id: i64, rel_path: String) -> Result<NewInstance, String> {
    let shown = path.display();
    let mut file = std::fs::File::open(path).map_err(|e| format!("{shown}: cannot open: {e}"))?;
    let mut sha = Sha256::new();
    let mut buffer = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = file
            .read(&mut buffer)
            .map_err(|e| format!("{shown}: cannot read: {e}"))?;
        if n == 0 {
            break;
        }
        sha.update(&buffer[..n]);
        size += n as u64;
    }
    let received_at = file
        .metadata()
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_millis() as i64)
        .unwrap_or_else(now_millis);
    let (record, metadata) = describe_stored(ParseSource::File(path))
        .map_err(|e| format!("{shown}: not a DICOM object Strata can index: {e}"))?;
    if record.instance.sop_instance_uid.is_empty() || record.study.study_uid.is_empty() {
        return Err(format!(
            "{shown}: has no SOP Instance or Study Instance UID"
        ));
    }
    Ok(NewInstance {
        record,
        held: Held::Online(StoredFile {
            filesystem_id,
            rel_path,
            size,
            sha256: hex::encode(sha.finalize()),
        }),
        // An instance held only in a pack (a NEARLINE-only study, dcm4chee 2.x tars imported
        // before their ONLINE tree) takes this file; one that has a file keeps it.
        policy: DuplicatePolicy::FillMissing,
        received_at,
        metadata,
    })
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> Result<T, RebuildError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| RebuildError::Io(format!("a filesystem walk stopped: {e}")))?
        .map_err(|e| RebuildError::Io(format!("cannot list an ONLINE filesystem: {e}")))
}
