//! The index: patient / study / series / instance / file rows in PostgreSQL or SQLite.
//!
//! Callers hold an [`Index`], a cheap clonable handle over the backend chosen from the database
//! URL's scheme. Both backends share [`SqlIndex`] (sqlx's `Any` driver, `$n` placeholders,
//! SQL both dialects accept); what differs — connection setup, migrations, and later job
//! claiming — is in [`Dialect`]. Jobs ([`JobQueue`]) and NEARLINE bookkeeping
//! ([`NearlineIndex`]) are part of every backend.

mod admin_sql;
mod commit_script;
mod dialect;
mod filesystem_sql;
mod jobs_sql;
mod nearline_sql;
mod queries;
mod retention_sql;
mod rows;
mod sql_index;
mod store_tx;

pub use admin_sql::{AdminIndex, OnlineCopy, Removal, Setting, StudySearch};
pub use dialect::Dialect;
pub use filesystem_sql::{FilesystemAdmin, FilesystemChange, FilesystemEdit, FilesystemRow};
pub use jobs_sql::JobQueue;
pub use nearline_sql::{CopyRule, NearlineIndex};
pub use retention_sql::{DeletionStart, NearlineMember, RetentionCandidate, RetentionIndex};
pub use rows::{IndexCounts, InstanceLocation, SeriesRow, StudyRow};
pub use sql_index::SqlIndex;

use crate::config::{DuplicatePolicy, FilesystemConfig};
use crate::model::{AePeer, Filesystem, InstanceRecord, StoreOutcome, StoredFile};
use crate::query::{FindQuery, FindRow};
use async_trait::async_trait;
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("unsupported database URL (expected sqlite:// or postgres://)")]
    UnsupportedUrl,
    #[error("cannot create the directory for the SQLite database {path}: {source}")]
    CreateDir {
        path: String,
        source: std::io::Error,
    },
}

pub type IndexResult<T> = Result<T, IndexError>;

/// One received object on its way into the index.
#[derive(Clone, Debug)]
pub struct NewInstance {
    pub record: InstanceRecord,
    pub file: StoredFile,
    pub policy: DuplicatePolicy,
    /// Unix milliseconds.
    pub received_at: i64,
    /// WADO-RS metadata made at ingest (`crate::metadata`); `None` when it could not be made.
    pub metadata: Option<Vec<u8>>,
}

/// One instance's stored WADO-RS metadata (deflated; see `crate::metadata`).
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct StoredMetadata {
    pub study_uid: String,
    pub series_uid: String,
    pub sop_uid: String,
    pub metadata: Vec<u8>,
}

/// The operations every index backend provides.
#[async_trait]
pub trait IndexBackend:
    JobQueue + NearlineIndex + RetentionIndex + AdminIndex + FilesystemAdmin + Send + Sync + 'static
{
    fn dialect(&self) -> Dialect;
    async fn migrate(&self) -> IndexResult<()>;
    /// Makes the filesystem table match the configuration (by path) and returns every row.
    async fn sync_filesystems(&self, wanted: &[FilesystemConfig]) -> IndexResult<Vec<Filesystem>>;
    async fn filesystems(&self) -> IndexResult<Vec<Filesystem>>;
    /// Indexes a batch, in one transaction when it can. One result per input, in order; an
    /// integrity conflict is an `Ok(StoreOutcome::Conflict)` and does not affect the others,
    /// and a database error on one instance does not fail the rest.
    async fn store_batch(&self, batch: &[NewInstance]) -> Vec<IndexResult<StoreOutcome>>;
    async fn study(&self, study_uid: &str) -> IndexResult<Option<StudyRow>>;
    async fn series_of_study(&self, study_uid: &str) -> IndexResult<Vec<SeriesRow>>;
    async fn instance_location(&self, sop_uid: &str) -> IndexResult<Option<InstanceLocation>>;
    async fn study_locations(&self, study_uid: &str) -> IndexResult<Vec<InstanceLocation>>;
    /// Stored metadata of a study's instances (of one series, or one instance, when given),
    /// in series and instance order.
    async fn metadata(
        &self,
        study_uid: &str,
        series_uid: Option<&str>,
        sop_uid: Option<&str>,
    ) -> IndexResult<Vec<StoredMetadata>>;
    async fn counts(&self) -> IndexResult<IndexCounts>;
    /// Answers a C-FIND query from the index alone: at most `query.limit + 1` rows (the extra
    /// one tells the caller the answer was limited).
    async fn find(&self, query: &FindQuery) -> IndexResult<Vec<FindRow>>;
    /// Every instance under the given unique keys of `level`, in study / series /
    /// instance-number order: what a C-MOVE or C-GET sends. Read from its ONLINE file, or,
    /// where it has none, from its newest ARCHIVED pack (`InstanceLocation::nearline`).
    async fn retrieve_locations(
        &self,
        level: crate::query::Level,
        uids: &[String],
    ) -> IndexResult<Vec<InstanceLocation>>;
    /// Records that these studies were just retrieved (one statement for all of them).
    async fn touch_studies(&self, study_uids: &[String], at: i64) -> IndexResult<()>;
    /// Adds a peer, or updates the one with the same AE title.
    async fn ae_upsert(&self, peer: &AePeer) -> IndexResult<()>;
    async fn ae_list(&self) -> IndexResult<Vec<AePeer>>;
    async fn ae_get(&self, ae_title: &str) -> IndexResult<Option<AePeer>>;
    /// Returns whether a peer was removed.
    async fn ae_remove(&self, ae_title: &str) -> IndexResult<bool>;
}

/// Shared handle to the index.
#[derive(Clone)]
pub struct Index(Arc<dyn IndexBackend>);

impl Index {
    /// Connects to the database named by `url` (`sqlite://…` or `postgres://…`).
    pub async fn open(url: &str) -> IndexResult<Index> {
        Ok(Index(Arc::new(SqlIndex::connect(url).await?)))
    }

    pub fn from_backend(backend: Arc<dyn IndexBackend>) -> Index {
        Index(backend)
    }
}

impl std::ops::Deref for Index {
    type Target = dyn IndexBackend;

    fn deref(&self) -> &Self::Target {
        &*self.0
    }
}

/// Current time as Unix milliseconds, the index's timestamp unit.
pub fn now_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
