//! `strata rebuild-index`: the index made again from what storage holds, for when it is lost
//! (a dropped database, a deleted SQLite file) or has lost rows.
//!
//! 1. Every ONLINE filesystem, one day directory at a time: files the index does not know are
//!    hashed, their headers read (up to Pixel Data) and indexed through the same ingest path
//!    C-STORE uses.
//! 2. Every NEARLINE target: packs the index does not know are listed, their manifest read by
//!    range (no pack is downloaded whole), instances that exist only in the pack indexed from
//!    their member's header (one range read each), and the pack recorded with its members.
//!    A pack becomes ARCHIVED only when `--verify` read it back whole; otherwise TO_ARCHIVE,
//!    so retention waits for verify-sync exactly as for a fresh copy.
//!
//!    dcm4chee 2.x HSM tars on a target (an `MD5SUM` entry instead of a manifest) are read
//!    whole by range, every member checked against its MD5, and recorded ARCHIVED.
//!
//! Idempotent (files and packs already indexed are skipped, so a second run adds nothing)
//! and resumable (a checkpoint per filesystem and target; a finished run clears them).

mod dcm4chee;
mod import;
mod import_copy;
mod nearline;
mod online;
mod progress;

pub use import::{import_hsm_target, import_in_place};
pub use import_copy::{import_copy, IMPORT_SOURCE};
pub use progress::Progress;

use archive_core::index::{Index, IndexError};
use archive_core::model::Filesystem;
use archive_core::nearline::{NearlineError, NearlineTarget, TargetRow};
use std::sync::Arc;

#[derive(Clone, Debug)]
pub struct RebuildOptions {
    /// Read every pack found back whole before it counts as ARCHIVED.
    pub verify: bool,
    /// Files hashed, or member heads read, at the same time.
    pub parallel: usize,
}

/// What a rebuild did, for the admin who ran it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RebuildReport {
    pub files_indexed: u64,
    pub files_already_indexed: u64,
    pub packs_recorded: u64,
    pub packs_already_recorded: u64,
    pub packs_archived: u64,
    pub packs_verify_failed: u64,
    /// Instances indexed from a pack's member (their ONLINE copy is gone).
    pub instances_from_packs: u64,
    /// Things that could not be indexed, or that disagree; each already readable.
    pub problems: Vec<String>,
    /// Instances whose ONLINE file and pack member have different SHA-256: both are kept.
    pub conflicts: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum RebuildError {
    #[error("index: {0}")]
    Index(#[from] IndexError),
    #[error("NEARLINE target: {0}")]
    Nearline(#[from] NearlineError),
    #[error("{0}")]
    Io(String),
}

/// A NEARLINE target to scan, opened.
pub struct TargetToScan {
    pub row: TargetRow,
    pub target: Arc<dyn NearlineTarget>,
}

/// Rebuilds the index from `filesystems` and `targets` (see the module documentation).
pub async fn rebuild_index(
    index: &Index,
    filesystems: &[Filesystem],
    targets: &[TargetToScan],
    options: &RebuildOptions,
    progress: &Progress,
) -> Result<RebuildReport, RebuildError> {
    let mut report = RebuildReport::default();
    for filesystem in filesystems {
        online::scan(index, filesystem, options, progress, &mut report).await?;
    }
    for target in targets {
        nearline::scan(index, target, options, progress, &mut report).await?;
    }
    index.clear_rebuild_checkpoints().await?;
    progress.finish();
    Ok(report)
}
