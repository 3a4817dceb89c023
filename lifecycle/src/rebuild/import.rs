//! `strata import`: another archive's storage indexed where it is.
//! - `--in-place DIR`: an ONLINE directory tree (dcm4chee 2.x's `YYYY/M/D/H/<hex>/<hex>`
//!   layout with extension-less files, or any other). The directory becomes a read-only
//!   filesystem of its own group: Strata never writes there, and the files are retrieved,
//!   copied to NEARLINE targets and checked like its own.
//! - `--copy DIR`: the same, copied into Strata's ONLINE storage instead (`import_copy.rs`).
//! - `--hsm-target NAME`: a configured NEARLINE target holding dcm4chee 2.x HSM tars (see
//!   `dcm4chee.rs`), registered as packs without being uploaded again.

use super::online::index_files;
use super::{nearline, Progress, RebuildError, RebuildOptions, RebuildReport, TargetToScan};
use archive_core::index::{FilesystemChange, FilesystemEdit, Index};
use archive_core::model::Filesystem;
use archive_core::online::sweep::FoundFile;
use std::path::Path;
use std::sync::Arc;
use tokio::sync::Semaphore;

/// Registers `dir` as a read-only filesystem of `group` (or finds it registered) and indexes
/// every DICOM file below it that the index does not know; anything else is a problem in the
/// report. Run again, it adds only what is new.
pub async fn import_in_place(
    index: &Index,
    dir: &Path,
    group: &str,
    options: &RebuildOptions,
    progress: &Progress,
) -> Result<(RebuildReport, Filesystem), RebuildError> {
    let dir = dir
        .canonicalize()
        .map_err(|e| RebuildError::Io(format!("{}: {e}", dir.display())))?;
    let path = dir.display().to_string();
    let change = FilesystemChange {
        group: group.to_string(),
        path: path.clone(),
        mode: "ro".into(),
        min_free_bytes: 0,
    };
    let filesystem = match index.add_filesystem(&change).await? {
        FilesystemEdit::Saved(filesystem) => filesystem,
        FilesystemEdit::PathTaken(id) => index
            .filesystems()
            .await?
            .into_iter()
            .find(|f| f.id == id)
            .ok_or_else(|| RebuildError::Io(format!("filesystem {id} vanished")))?,
        other => {
            return Err(RebuildError::Io(format!(
                "cannot register {path}: {other:?}"
            )))
        }
    };
    if filesystem.mode != "ro" {
        return Err(RebuildError::Io(format!(
            "{path} is already a writable filesystem of Strata's own; nothing to import"
        )));
    }
    let walk_root = dir.clone();
    let files = tokio::task::spawn_blocking(move || every_file(&walk_root))
        .await
        .map_err(|e| RebuildError::Io(format!("the walk stopped: {e}")))?
        .map_err(|e| RebuildError::Io(format!("cannot list {}: {e}", dir.display())))?;
    progress.begin(
        format!("import {path}"),
        files.len() as u64,
        files.iter().map(|f| f.size).sum(),
    );
    let parallel = Arc::new(Semaphore::new(options.parallel.max(1)));
    let mut report = RebuildReport::default();
    index_files(index, &filesystem, &files, &parallel, progress, &mut report).await?;
    progress.finish();
    Ok((report, filesystem))
}

/// Registers every tar on the target the index does not record yet (dcm4chee 2.x HSM tars,
/// and Strata's own packs, as `rebuild-index` would). Run again, it adds only what is new.
pub async fn import_hsm_target(
    index: &Index,
    target: &TargetToScan,
    options: &RebuildOptions,
    progress: &Progress,
) -> Result<RebuildReport, RebuildError> {
    let mut report = RebuildReport::default();
    nearline::scan(index, target, options, progress, &mut report).await?;
    index
        .clear_rebuild_checkpoint(&nearline::scope(target))
        .await?;
    progress.finish();
    Ok(report)
}

/// Every regular file below `root`, by path (relative, `/`-separated, UTF-8 names only).
pub(super) fn every_file(root: &Path) -> std::io::Result<Vec<FoundFile>> {
    let mut found = Vec::new();
    let mut pending = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir)?.flatten() {
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            let path = entry.path();
            if kind.is_dir() {
                pending.push(path);
            } else if kind.is_file() {
                let rel: Option<Vec<&str>> = path
                    .strip_prefix(root)
                    .ok()
                    .and_then(|rest| rest.components().map(|c| c.as_os_str().to_str()).collect());
                let (Some(rel), Ok(meta)) = (rel, entry.metadata()) else {
                    continue;
                };
                found.push(FoundFile {
                    rel_path: rel.join("/"),
                    size: meta.len(),
                });
            }
        }
    }
    found.sort_by(|a, b| a.rel_path.cmp(&b.rel_path));
    Ok(found)
}
