//! ONLINE filesystems managed at run time (REST API, admin UI): list with what each holds,
//! add, change, remove. Filesystems from the config file are re-applied at every start, so
//! they can only be changed there.

use super::{Index, IndexResult, Removal};
use crate::config::FilesystemConfig;
use crate::model::Filesystem;
use serde::Serialize;

const SELECT_FILESYSTEMS: &str =
    "SELECT id, group_name, path, mode, min_free_bytes FROM filesystem ORDER BY id";

const UPSERT_FILESYSTEM: &str = "INSERT INTO filesystem (group_name, path, mode, min_free_bytes) \
    VALUES ($1, $2, $3, $4) ON CONFLICT (path) DO UPDATE SET group_name = excluded.group_name, \
    mode = excluded.mode, min_free_bytes = excluded.min_free_bytes, from_config = 1";

/// A filesystem with where it came from and what it holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FilesystemRow {
    #[serde(flatten)]
    pub filesystem: Filesystem,
    pub from_config: bool,
    /// Files the index points at on it (any status).
    pub files: i64,
    pub bytes: i64,
}

/// A filesystem as an admin asks for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FilesystemChange {
    pub group: String,
    pub path: String,
    pub mode: String,
    pub min_free_bytes: u64,
}

/// Why a filesystem could not be added or changed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FilesystemEdit {
    Saved(Filesystem),
    NotFound,
    FromConfig,
    /// Another filesystem already has this path.
    PathTaken(i64),
}

type Tuple = (i64, String, String, String, i64, i64, i64, i64);

const SELECT_ROWS: &str = "SELECT f.id, f.group_name, f.path, f.mode, f.min_free_bytes, \
    f.from_config, (SELECT COUNT(*) FROM file x WHERE x.filesystem_fk = f.id), \
    (SELECT CAST(COALESCE(SUM(x.size_bytes), 0) AS BIGINT) FROM file x WHERE x.filesystem_fk = f.id) \
    FROM filesystem f";

fn row((id, group, path, mode, min_free, from_config, files, bytes): Tuple) -> FilesystemRow {
    FilesystemRow {
        filesystem: Filesystem {
            id,
            group,
            path,
            mode,
            min_free_bytes: min_free.max(0) as u64,
        },
        from_config: from_config != 0,
        files,
        bytes,
    }
}

impl Index {
    async fn filesystem_row(&self, id: i64) -> IndexResult<Option<FilesystemRow>> {
        let found: Option<Tuple> = sqlx::query_as(&format!("{SELECT_ROWS} WHERE f.id = $1"))
            .bind(id)
            .fetch_optional(self.pool())
            .await?;
        Ok(found.map(row))
    }

    async fn filesystem_with_path(&self, path: &str) -> IndexResult<Option<i64>> {
        let found: Option<(i64,)> = sqlx::query_as("SELECT id FROM filesystem WHERE path = $1")
            .bind(path)
            .fetch_optional(self.pool())
            .await?;
        Ok(found.map(|(id,)| id))
    }
}

impl Index {
    pub async fn filesystem_rows(&self) -> IndexResult<Vec<FilesystemRow>> {
        let rows: Vec<Tuple> = sqlx::query_as(&format!("{SELECT_ROWS} ORDER BY f.id"))
            .fetch_all(self.pool())
            .await?;
        Ok(rows.into_iter().map(row).collect())
    }

    pub async fn add_filesystem(&self, change: &FilesystemChange) -> IndexResult<FilesystemEdit> {
        if let Some(id) = self.filesystem_with_path(&change.path).await? {
            return Ok(FilesystemEdit::PathTaken(id));
        }
        sqlx::query(
            "INSERT INTO filesystem (group_name, path, mode, min_free_bytes, from_config) \
             VALUES ($1, $2, $3, $4, 0)",
        )
        .bind(&change.group)
        .bind(&change.path)
        .bind(&change.mode)
        .bind(change.min_free_bytes as i64)
        .execute(self.pool())
        .await?;
        match self.filesystem_with_path(&change.path).await? {
            Some(id) => Ok(self
                .filesystem_row(id)
                .await?
                .map_or(FilesystemEdit::NotFound, |r| {
                    FilesystemEdit::Saved(r.filesystem)
                })),
            None => Ok(FilesystemEdit::NotFound),
        }
    }

    /// Changes group, mode and watermark of a run-time filesystem (its path stays).
    pub async fn update_filesystem(
        &self,
        id: i64,
        change: &FilesystemChange,
    ) -> IndexResult<FilesystemEdit> {
        let Some(existing) = self.filesystem_row(id).await? else {
            return Ok(FilesystemEdit::NotFound);
        };
        if existing.from_config {
            return Ok(FilesystemEdit::FromConfig);
        }
        sqlx::query(
            "UPDATE filesystem SET group_name = $1, mode = $2, min_free_bytes = $3 \
             WHERE id = $4 AND from_config = 0",
        )
        .bind(&change.group)
        .bind(&change.mode)
        .bind(change.min_free_bytes as i64)
        .bind(id)
        .execute(self.pool())
        .await?;
        Ok(self
            .filesystem_row(id)
            .await?
            .map_or(FilesystemEdit::NotFound, |r| {
                FilesystemEdit::Saved(r.filesystem)
            }))
    }

    /// Removes a run-time filesystem the index no longer points at.
    pub async fn remove_filesystem(&self, id: i64) -> IndexResult<Removal> {
        let Some(existing) = self.filesystem_row(id).await? else {
            return Ok(Removal::NotFound);
        };
        if existing.from_config {
            return Ok(Removal::FromConfig);
        }
        // The file table's foreign key would refuse too; the count makes the answer useful.
        let result = sqlx::query(
            "DELETE FROM filesystem WHERE id = $1 AND from_config = 0 \
             AND NOT EXISTS (SELECT 1 FROM file x WHERE x.filesystem_fk = filesystem.id)",
        )
        .bind(id)
        .execute(self.pool())
        .await?;
        if result.rows_affected() == 1 {
            return Ok(Removal::Removed);
        }
        let files = self.filesystem_row(id).await?.map_or(0, |r| r.files);
        Ok(Removal::InUse(format!(
            "the index points at {files} file(s) on it; switch it to read-only and let \
             retention rules empty it first"
        )))
    }
}

/// Filesystems from the configuration file.
impl Index {
    /// Which of `rel_paths` on the filesystem have a file row (in any status).
    pub async fn known_files(
        &self,
        filesystem_id: i64,
        rel_paths: &[String],
    ) -> IndexResult<std::collections::HashSet<String>> {
        let mut known = std::collections::HashSet::new();
        for chunk in rel_paths.chunks(500) {
            let sql = format!(
                "SELECT path FROM file WHERE filesystem_fk = $1 AND path IN ({})",
                super::placeholders::placeholder_list(2, chunk.len())
            );
            let mut query = sqlx::query_as::<_, (String,)>(&sql).bind(filesystem_id);
            for path in chunk {
                query = query.bind(path.as_str());
            }
            known.extend(
                query
                    .fetch_all(self.pool())
                    .await?
                    .into_iter()
                    .map(|(p,)| p),
            );
        }
        Ok(known)
    }

    /// Makes the filesystem table match the configuration (by path) and returns every row.
    pub async fn sync_filesystems(
        &self,
        wanted: &[FilesystemConfig],
    ) -> IndexResult<Vec<Filesystem>> {
        let mut tx = self.pool.begin().await?;
        for fs in wanted {
            sqlx::query(UPSERT_FILESYSTEM)
                .bind(&fs.group)
                .bind(fs.path.display().to_string())
                .bind(fs.mode.as_str())
                .bind(fs.min_free.0 as i64)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        self.filesystems().await
    }

    pub async fn filesystems(&self) -> IndexResult<Vec<Filesystem>> {
        let rows: Vec<(i64, String, String, String, i64)> = sqlx::query_as(SELECT_FILESYSTEMS)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows
            .into_iter()
            .map(|(id, group, path, mode, min_free)| Filesystem {
                id,
                group,
                path,
                mode,
                min_free_bytes: min_free.max(0) as u64,
            })
            .collect())
    }
}
