//! The index over sqlx's `Any` driver, shared by PostgreSQL and SQLite.

use super::queries as q;
use super::rows::{IndexCounts, InstanceLocation, SeriesRow, StudyRow};
use super::store_tx::store_one;
use super::{Dialect, IndexBackend, IndexResult, NewInstance};
use crate::config::FilesystemConfig;
use crate::model::{Filesystem, StoreOutcome};
use async_trait::async_trait;
use sqlx::{Acquire, AnyPool};

pub struct SqlIndex {
    pool: AnyPool,
    dialect: Dialect,
}

impl SqlIndex {
    pub async fn connect(url: &str) -> IndexResult<SqlIndex> {
        let dialect = Dialect::from_url(url)?;
        let pool = dialect.connect(url).await?;
        Ok(SqlIndex { pool, dialect })
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    async fn store_batch_in_one_transaction(
        &self,
        batch: &[NewInstance],
    ) -> IndexResult<Vec<StoreOutcome>> {
        let mut conn = self.pool.acquire().await?;
        let mut tx = conn.begin().await?;
        let mut outcomes = Vec::with_capacity(batch.len());
        for new in batch {
            outcomes.push(store_one(&mut tx, new).await?);
        }
        tx.commit().await?;
        Ok(outcomes)
    }

    async fn store_alone(&self, new: &NewInstance) -> IndexResult<StoreOutcome> {
        let mut tx = self.pool.begin().await?;
        let outcome = store_one(&mut tx, new).await?;
        tx.commit().await?;
        Ok(outcome)
    }
}

#[async_trait]
impl IndexBackend for SqlIndex {
    fn dialect(&self) -> Dialect {
        self.dialect
    }

    async fn migrate(&self) -> IndexResult<()> {
        self.dialect.migrate(&self.pool).await
    }

    async fn sync_filesystems(&self, wanted: &[FilesystemConfig]) -> IndexResult<Vec<Filesystem>> {
        let mut tx = self.pool.begin().await?;
        for fs in wanted {
            sqlx::query(q::UPSERT_FILESYSTEM)
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

    async fn filesystems(&self) -> IndexResult<Vec<Filesystem>> {
        let rows: Vec<(i64, String, String, String, i64)> = sqlx::query_as(q::SELECT_FILESYSTEMS)
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

    async fn store_batch(&self, batch: &[NewInstance]) -> Vec<IndexResult<StoreOutcome>> {
        match self.store_batch_in_one_transaction(batch).await {
            Ok(outcomes) => outcomes.into_iter().map(Ok).collect(),
            Err(batch_error) => {
                // One bad row (or a race with another node inserting the same study) must
                // not fail its neighbours: retry each on its own.
                tracing::debug!(error = %batch_error, size = batch.len(), "batch failed, storing one by one");
                let mut results = Vec::with_capacity(batch.len());
                for new in batch {
                    results.push(self.store_alone(new).await);
                }
                results
            }
        }
    }

    async fn study(&self, study_uid: &str) -> IndexResult<Option<StudyRow>> {
        Ok(sqlx::query_as(q::SELECT_STUDY)
            .bind(study_uid)
            .fetch_optional(&self.pool)
            .await?)
    }

    async fn series_of_study(&self, study_uid: &str) -> IndexResult<Vec<SeriesRow>> {
        Ok(sqlx::query_as(q::SELECT_SERIES_OF_STUDY)
            .bind(study_uid)
            .fetch_all(&self.pool)
            .await?)
    }

    async fn instance_location(&self, sop_uid: &str) -> IndexResult<Option<InstanceLocation>> {
        Ok(sqlx::query_as(&q::select_location_by_sop())
            .bind(sop_uid)
            .fetch_optional(&self.pool)
            .await?)
    }

    async fn study_locations(&self, study_uid: &str) -> IndexResult<Vec<InstanceLocation>> {
        Ok(sqlx::query_as(&q::select_locations_of_study())
            .bind(study_uid)
            .fetch_all(&self.pool)
            .await?)
    }

    async fn counts(&self) -> IndexResult<IndexCounts> {
        let (patients, studies, series, instances, files): (i64, i64, i64, i64, i64) =
            sqlx::query_as(q::COUNTS).fetch_one(&self.pool).await?;
        Ok(IndexCounts {
            patients,
            studies,
            series,
            instances,
            files,
        })
    }
}
