//! The index: patient / study / series / instance / file rows in PostgreSQL or SQLite.
//!
//! [`Index`] is one concrete, cheaply cloned type over sqlx's `Any` driver (`$n`
//! placeholders, SQL both dialects accept); what differs between the engines (connection
//! setup, migrations, row locking when claiming jobs) is in [`Dialect`]. Its methods live next
//! to their SQL, one file per domain:
//!
//! | file | what |
//! |---|---|
//! | `ingest.rs`, `ingest_tx.rs`, `commit_script.rs` | storing received instances (one transaction per batch) |
//! | `counts.rs` | series and study counters: the SQL that reads them exactly, folding new instances in |
//! | `query.rs`, `find_sql.rs` | C-FIND (the SQL a `FindQuery` becomes), retrieval locations, studies, series, metadata, counts |
//! | `nearline.rs` | targets, packs and their members, copy rules |
//! | `retention.rs` | deletion candidates, ONLINE removal, NEARLINE locations |
//! | `jobs.rs` | the jobs table: queue, claim, lease, finish; schedule firings |
//! | `fixity.rs` | fixity checks: what is due, their record, damaged ONLINE files |
//! | `rebuild.rs` | rebuild-index: checkpoints, packs found on targets |
//! | `admin.rs`, `filesystems.rs` | the admin UI/API's searches and removals, AE peers, ONLINE filesystems |
//!
//! Convention: SQL text sits in the file whose method runs it, inline in the call or as a
//! `const` at the top of that file when several methods share it; `placeholders.rs` only
//! builds `$n` lists.

mod admin;
mod audit;
mod commit_script;
pub(crate) mod counts;
mod dialect;
mod filesystems;
mod find_sql;
mod fixity;
mod ingest;
mod ingest_tx;
mod jobs;
mod nearline;
mod placeholders;
#[cfg(test)]
mod plan_check;
mod query;
mod rebuild;
mod retention;
mod rows;

pub use admin::{AvailabilityTotal, JobTotal, OnlineCopy, Removal, Setting, StudySearch};
pub use dialect::Dialect;
pub use filesystems::{FilesystemChange, FilesystemEdit, FilesystemRow};
pub use fixity::{CopyFixity, FixityItem, FixityRecord};
pub use nearline::CopyRule;
pub use rebuild::{FoundPack, KnownInstance};
pub use retention::{DeletionStart, NearlineMember, RetentionCandidate};
pub use rows::{IndexCounts, InstanceLocation, SeriesRow, StudyRow};

use crate::config::DuplicatePolicy;
use crate::model::{InstanceRecord, StoredFile};
use sqlx::AnyPool;
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
    pub held: Held,
    pub policy: DuplicatePolicy,
    /// Unix milliseconds.
    pub received_at: i64,
    /// WADO-RS metadata made at ingest (`crate::metadata`); `None` when it could not be made.
    pub metadata: Option<Vec<u8>>,
}

/// Where a new instance's bytes are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Held {
    /// In an ONLINE file: every way in (C-STORE, STOW-RS), and `rebuild-index` finding a file
    /// on an ONLINE filesystem.
    Online(StoredFile),
    /// Only inside a NEARLINE pack: `rebuild-index` restoring an instance whose ONLINE copy
    /// was deleted. No file row; the pack's member row is added with the pack.
    InPackOnly { size: u64 },
}

impl Held {
    pub fn size(&self) -> u64 {
        match self {
            Held::Online(file) => file.size,
            Held::InPackOnly { size } => *size,
        }
    }

    pub fn file(&self) -> Option<&StoredFile> {
        match self {
            Held::Online(file) => Some(file),
            Held::InPackOnly { .. } => None,
        }
    }
}

/// One instance's stored WADO-RS metadata (deflated; see `crate::metadata`).
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct StoredMetadata {
    pub study_uid: String,
    pub series_uid: String,
    pub sop_uid: String,
    pub metadata: Vec<u8>,
}

/// Shared handle to the index: clones share the connection pool and the ingest writer.
#[derive(Clone)]
pub struct Index {
    pool: AnyPool,
    dialect: Dialect,
    writer: Arc<tokio::sync::Mutex<ingest::Writer>>,
    /// `lifecycle.min_archived_copies`: how many targets must hold an ARCHIVED copy of an
    /// instance before its ONLINE file may be deleted (see `retention.rs`).
    min_archived_copies: Arc<std::sync::atomic::AtomicU32>,
}

impl Index {
    /// Connects to the database named by `url` (`sqlite://…` or `postgres://…`).
    pub async fn open(url: &str) -> IndexResult<Index> {
        let dialect = Dialect::from_url(url)?;
        let pool = dialect.connect(url).await?;
        Ok(Index {
            pool,
            dialect,
            writer: Arc::default(),
            min_archived_copies: Arc::new(std::sync::atomic::AtomicU32::new(1)),
        })
    }

    /// Sets `lifecycle.min_archived_copies` (at least 1) for every clone of this index.
    pub fn set_min_archived_copies(&self, copies: u32) {
        self.min_archived_copies
            .store(copies.max(1), std::sync::atomic::Ordering::Relaxed);
    }

    pub fn min_archived_copies(&self) -> u32 {
        self.min_archived_copies
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The connection pool, for tests that must check what the database itself refuses.
    #[cfg(any(test, feature = "test-support"))]
    pub fn pool_for_tests(&self) -> &AnyPool {
        self.pool()
    }

    fn pool(&self) -> &AnyPool {
        &self.pool
    }

    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    pub async fn migrate(&self) -> IndexResult<()> {
        self.dialect.migrate(&self.pool).await
    }
}

/// Current time as Unix milliseconds, the index's timestamp unit.
pub fn now_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
