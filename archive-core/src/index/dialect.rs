//! What differs between PostgreSQL and SQLite: URLs, connection setup, migrations.

use super::{IndexError, IndexResult};
use sqlx::any::AnyPoolOptions;
use sqlx::AnyConnection;
use sqlx::{AnyPool, Executor};
use std::time::Duration;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    Postgres,
    Sqlite,
}

/// SQLite settings for an archive: WAL so queries don't block ingest, `synchronous=FULL` so a
/// committed row survives power loss (C-STORE success depends on it), a busy timeout so the
/// occasional second writer waits instead of failing.
const SQLITE_PRAGMAS: &[&str] = &[
    "PRAGMA journal_mode = WAL",
    "PRAGMA synchronous = FULL",
    "PRAGMA busy_timeout = 30000",
    "PRAGMA foreign_keys = ON",
    // 8 MiB page cache per connection (default 2 MiB): the ingest writer's index pages stay hot.
    "PRAGMA cache_size = -8192",
];

impl Dialect {
    pub fn from_url(url: &str) -> IndexResult<Dialect> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Dialect::Postgres)
        } else if url.starts_with("sqlite:") {
            Ok(Dialect::Sqlite)
        } else {
            Err(IndexError::UnsupportedUrl)
        }
    }

    pub(crate) async fn connect(self, url: &str) -> IndexResult<AnyPool> {
        sqlx::any::install_default_drivers();
        match self {
            Dialect::Postgres => Ok(AnyPoolOptions::new()
                .max_connections(16)
                .acquire_timeout(Duration::from_secs(30))
                .connect(url)
                .await?),
            Dialect::Sqlite => {
                let url = sqlite_url_creating_file(url)?;
                Ok(AnyPoolOptions::new()
                    .max_connections(8)
                    .acquire_timeout(Duration::from_secs(30))
                    .after_connect(|conn: &mut AnyConnection, _meta| {
                        Box::pin(async move {
                            for pragma in SQLITE_PRAGMAS {
                                conn.execute(*pragma).await?;
                            }
                            Ok(())
                        })
                    })
                    .connect(&url)
                    .await?)
            }
        }
    }

    /// Starts a transaction that will write.
    pub(crate) fn begin_write(self) -> &'static str {
        match self {
            Dialect::Postgres => "BEGIN",
            Dialect::Sqlite => "BEGIN IMMEDIATE",
        }
    }

    /// Ends a SELECT of an instance row whose ONLINE file is about to be given or replaced
    /// (a duplicate under `replace` or `fill-missing`, a restore). On PostgreSQL the row stays
    /// locked until commit, so writers on several nodes take turns: the second reads the file
    /// and byte count the first left, instead of both replacing the same old file (one new file
    /// orphaned, the counters off by its size) or both giving a missing file (two ONLINE
    /// files). NO KEY UPDATE, not UPDATE: rows that only reference the instance (a pack member,
    /// a file) can still be inserted meanwhile. SQLite has one writer and no row locks.
    pub(crate) fn lock_instance_for_file_change(self) -> &'static str {
        match self {
            Dialect::Postgres => " FOR NO KEY UPDATE",
            Dialect::Sqlite => "",
        }
    }

    /// On PostgreSQL, a statement that locks the rows `select` returns, in `order`, until the
    /// transaction ends (`FOR NO KEY UPDATE OF alias`, `alias` naming their table in
    /// `select`). An UPDATE locks rows in the order its plan meets them; writers that lock
    /// shared rows first in one agreed order cannot deadlock on them. Counted, so the ids of
    /// a large study do not travel back. `None` on SQLite: one writer, no row locks.
    pub(crate) fn lock_in_order(self, select: &str, alias: &str, order: &str) -> Option<String> {
        match self {
            Dialect::Postgres => Some(format!(
                "SELECT COUNT(*) FROM ({select} ORDER BY {order} FOR NO KEY UPDATE OF {alias}) x"
            )),
            Dialect::Sqlite => None,
        }
    }

    pub(crate) async fn migrate(self, pool: &AnyPool) -> IndexResult<()> {
        match self {
            Dialect::Postgres => sqlx::migrate!("../migrations/postgres").run(pool).await?,
            Dialect::Sqlite => sqlx::migrate!("../migrations/sqlite").run(pool).await?,
        }
        Ok(())
    }
}

/// `sqlite://path` → `sqlite://path?mode=rwc`, creating the parent directory: a fresh
/// installation must start without the admin creating files by hand.
fn sqlite_url_creating_file(url: &str) -> IndexResult<String> {
    let path_part = url
        .trim_start_matches("sqlite://")
        .trim_start_matches("sqlite:");
    let path = path_part.split('?').next().unwrap_or("");
    if !path.is_empty() && !path.starts_with(':') {
        if let Some(parent) = std::path::Path::new(path).parent() {
            if !parent.as_os_str().is_empty() {
                std::fs::create_dir_all(parent).map_err(|source| IndexError::CreateDir {
                    path: parent.display().to_string(),
                    source,
                })?;
            }
        }
    }
    if url.contains("mode=") {
        Ok(url.to_string())
    } else if url.contains('?') {
        Ok(format!("{url}&mode=rwc"))
    } else {
        Ok(format!("{url}?mode=rwc"))
    }
}
