//! The NEARLINE tier as the rest of Strata sees it: a target takes a study's files as one tar
//! ("pack"), reads a pack back to verify it, and reads byte ranges of it. `hsm-s3` implements
//! targets (S3, filesystem); the binary hands its [`TargetFactory`] to whoever needs targets.

use crate::config::TargetSpec;
use crate::text_enum::text_enum;
use async_trait::async_trait;
use serde::Serialize;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::sync::Mutex;

text_enum! {
    /// Where a pack is in its life, as stored in the index:
    /// - `UPLOADING`: being written; a crash leaves it so, and the next attempt abandons it;
    /// - `TO_ARCHIVE`: written completely, not yet read back;
    /// - `ARCHIVED`: read back and every member matched: a copy ONLINE files may rely on;
    /// - `VERIFY_FAILED`: read back and something did not match (or could not be read); a
    ///   new copy is queued;
    /// - `ABANDONED`: an upload that never finished (crash, outage); its object was removed.
    pub enum PackStatus("pack status") {
        Uploading = "UPLOADING", ToArchive = "TO_ARCHIVE", Archived = "ARCHIVED",
        VerifyFailed = "VERIFY_FAILED", Abandoned = "ABANDONED",
    }
}

/// One stored file going into a pack.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PackSource {
    pub instance_id: i64,
    pub sop_uid: String,
    pub series_uid: String,
    pub sop_class_uid: String,
    pub transfer_syntax: String,
    /// The ONLINE file.
    pub file_path: PathBuf,
    pub size: u64,
    /// What the index says the file's SHA-256 is; packing fails if the file disagrees.
    pub sha256: String,
    /// When the instance was received (Unix milliseconds): the manifest keeps it, so a
    /// rebuilt index takes study attributes from the same first instance as before.
    pub received_at: i64,
}

#[derive(Clone, Debug)]
pub struct PackRequest {
    /// Object key (or relative path) the pack is stored under, before the target's prefix.
    pub key: String,
    pub study_uid: String,
    pub members: Vec<PackSource>,
}

/// Where one member's bytes ended up inside the tar.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberPlacement {
    /// Its path inside the tar, as the pack format names members (the index records it; the
    /// retrieve cache and restore find the member under it).
    pub member_path: String,
    pub data_offset: u64,
    pub size: u64,
    /// Lower-case hex BLAKE3 of the member as written (retrieval checks members with it).
    pub blake3: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PackReceipt {
    pub size: u64,
    /// SHA-256 of the whole tar.
    pub sha256: String,
    /// One per requested member, in request order.
    pub placements: Vec<MemberPlacement>,
}

/// What the index recorded about one member: verify-sync checks the pack against it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct PackMemberRow {
    pub sop_uid: String,
    pub member_path: String,
    pub data_offset: i64,
    pub size_bytes: i64,
    pub sha256: String,
    /// Empty for packs written before BLAKE3 was recorded: those are checked with SHA-256.
    pub blake3: String,
}

#[derive(Clone, Debug)]
pub struct ExpectedPack {
    pub key: String,
    pub size: u64,
    /// Empty when not known: a pack `rebuild-index` found on a target (the whole tar's
    /// checksum was only in the lost index); its members are checked all the same.
    pub sha256: String,
    pub members: Vec<PackMemberRow>,
}

/// A pack found by listing a target (`rebuild-index`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListedPack {
    /// The key, without the target's prefix (what `pack.object_key` holds).
    pub key: String,
    pub size: u64,
}

/// How a pack on a target was written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PackFormat {
    /// Strata's own: a `MANIFEST.json` first, listing every member with its UIDs and SHA-256.
    Strata,
    /// dcm4chee 2.x's HSM tar of one series: an `MD5SUM` entry first, listing each member's
    /// MD5 and name, and nothing else (UIDs are only in the members' headers).
    Dcm4chee2,
}

/// What a pack holds. Strata's packs: from the manifest alone (one or two range reads of the
/// pack's head). dcm4chee 2.x tars: from reading every member by range, since only that
/// checks them against their MD5SUM entry; the UIDs are left empty for the caller to take
/// from each member's header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PackContents {
    pub format: PackFormat,
    /// Empty for dcm4chee 2.x tars (see above).
    pub study_uid: String,
    /// Unix milliseconds, when the pack was written.
    pub created_at: i64,
    /// The members that can be indexed (for dcm4chee 2.x tars: those whose MD5 matched).
    pub members: Vec<PackedMember>,
    /// Members that must not be indexed, each with why (a failed MD5 check, an entry the
    /// MD5SUM does not list, or one it lists that is missing), readable for an admin.
    pub rejected: Vec<String>,
}

/// One member as the manifest lists it, with where its bytes are in the tar.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PackedMember {
    pub member_path: String,
    pub data_offset: u64,
    pub size: u64,
    pub sha256: String,
    pub sop_uid: String,
    pub series_uid: String,
    pub sop_class_uid: String,
    pub transfer_syntax: String,
    /// When the instance was received; `None` in packs written before manifests kept it.
    pub received_at: Option<i64>,
}

/// The result of reading a pack back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VerifyOutcome {
    Intact,
    /// Everything that did not match, in order found (already readable for an admin).
    Damaged(Vec<String>),
}

/// Bytes and items done so far, shared between a transfer and whoever reports progress.
#[derive(Debug, Default)]
pub struct TransferProgress {
    bytes: AtomicU64,
    items: AtomicU64,
}

impl TransferProgress {
    pub fn add_bytes(&self, n: u64) {
        self.bytes.fetch_add(n, Ordering::Relaxed);
    }
    pub fn add_item(&self) {
        self.add_items(1);
    }
    pub fn add_items(&self, n: u64) {
        self.items.fetch_add(n, Ordering::Relaxed);
    }
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }
    pub fn items(&self) -> u64 {
        self.items.load(Ordering::Relaxed)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NearlineErrorKind {
    /// The target could not be reached or refused the request; worth retrying later.
    Unavailable,
    /// An ONLINE file does not match the index (size or checksum): packing it would archive
    /// a damaged copy.
    SourceMismatch,
    /// Missing or malformed pack, wrong settings, unreadable credentials.
    Invalid,
}

#[derive(Clone, Debug, thiserror::Error)]
#[error("{message}")]
pub struct NearlineError {
    pub kind: NearlineErrorKind,
    pub message: String,
}

impl NearlineError {
    pub fn unavailable(message: impl Into<String>) -> Self {
        NearlineError {
            kind: NearlineErrorKind::Unavailable,
            message: message.into(),
        }
    }
    pub fn source_mismatch(message: impl Into<String>) -> Self {
        NearlineError {
            kind: NearlineErrorKind::SourceMismatch,
            message: message.into(),
        }
    }
    pub fn invalid(message: impl Into<String>) -> Self {
        NearlineError {
            kind: NearlineErrorKind::Invalid,
            message: message.into(),
        }
    }
}

pub type NearlineResult<T> = Result<T, NearlineError>;

/// A place packs are kept: an S3 bucket (with prefix) or a directory.
#[async_trait]
pub trait NearlineTarget: Send + Sync + 'static {
    /// `s3://bucket/prefix/` or the directory, for logs and the UI.
    fn location(&self) -> String;
    /// Streams the members into one tar stored under `request.key`: neither the pack nor a
    /// second copy of it is held in memory or on disk. Nothing is visible under the key unless
    /// this returns `Ok`.
    async fn upload_pack(
        &self,
        request: PackRequest,
        progress: Arc<TransferProgress>,
    ) -> NearlineResult<PackReceipt>;
    /// Reads the whole pack back and checks it against what the index recorded.
    /// `Err` means the pack could not be read at all (e.g. the target is down).
    async fn verify_pack(
        &self,
        expected: &ExpectedPack,
        progress: Arc<TransferProgress>,
    ) -> NearlineResult<VerifyOutcome>;
    /// Reads the pack and writes its members under `dir` (by member path), checking each one
    /// and the whole pack against what the index recorded, and calls `ready(member path)` as
    /// soon as a member is in place and matched (the retrieve cache serves it from then on);
    /// a damaged pack is an error of kind `Invalid` and leaves `dir` incomplete (the caller
    /// removes it).
    async fn unpack_pack(
        &self,
        expected: &ExpectedPack,
        dir: &std::path::Path,
        progress: Arc<TransferProgress>,
        ready: crate::retrieve_cache::MemberReady,
    ) -> NearlineResult<()>;
    /// Reads `length` bytes at `offset` of a pack (one member, without the rest).
    async fn read_range(&self, key: &str, offset: u64, length: u64) -> NearlineResult<Vec<u8>>;
    /// Every complete pack on the target (unfinished uploads are not listed), by key.
    async fn list_packs(&self) -> NearlineResult<Vec<ListedPack>>;
    /// What the pack of `size` bytes under `key` holds: for Strata's packs from the manifest,
    /// without reading the members; for dcm4chee 2.x tars by reading every member (see
    /// [`PackContents`]). The member offsets are checked against the pack's size.
    async fn read_contents(&self, key: &str, size: u64) -> NearlineResult<PackContents>;
    /// Removes whatever an unfinished upload left under `key` (the object, partial files,
    /// unfinished multipart uploads). Removing nothing is not an error.
    async fn discard(&self, key: &str) -> NearlineResult<()>;
}

/// Makes targets from their settings (implemented by `hsm-s3`).
#[async_trait]
pub trait TargetFactory: Send + Sync + 'static {
    async fn open(&self, spec: &TargetSpec) -> NearlineResult<Arc<dyn NearlineTarget>>;
}

/// A target as recorded in the index.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TargetRow {
    pub id: i64,
    pub spec: TargetSpec,
    pub from_config: bool,
}

/// A pack as recorded in the index, with its target's name.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct PackRow {
    pub id: i64,
    pub study_uid: String,
    pub target_id: i64,
    pub target_name: String,
    pub object_key: String,
    #[sqlx(try_from = "String")]
    pub status: PackStatus,
    pub size_bytes: i64,
    pub sha256: String,
    pub member_count: i64,
    pub error: String,
    pub created_at: i64,
    pub verified_at: Option<i64>,
}

/// Open targets by name, each with the settings it was opened with.
type OpenTargets = HashMap<String, (TargetSpec, Arc<dyn NearlineTarget>)>;

pub struct TargetCache {
    factory: Arc<dyn TargetFactory>,
    open: Mutex<OpenTargets>,
}

impl TargetCache {
    pub fn new(factory: Arc<dyn TargetFactory>) -> TargetCache {
        TargetCache {
            factory,
            open: Mutex::new(HashMap::new()),
        }
    }

    pub async fn get(&self, row: &TargetRow) -> NearlineResult<Arc<dyn NearlineTarget>> {
        let mut open = self.open.lock().await;
        if let Some((spec, target)) = open.get(&row.spec.name) {
            if *spec == row.spec {
                return Ok(target.clone());
            }
        }
        let target = self.factory.open(&row.spec).await?;
        open.insert(row.spec.name.clone(), (row.spec.clone(), target.clone()));
        Ok(target)
    }
}
