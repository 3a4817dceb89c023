//! The index over sqlx's `Any` driver, shared by PostgreSQL and SQLite.

use super::queries as q;
use super::rows::{IndexCounts, InstanceLocation, SeriesRow, StudyRow};
use super::store_tx::{BatchTx, HierarchyCache};
use super::{Dialect, IndexBackend, IndexResult, NewInstance, StoredMetadata};
use crate::config::FilesystemConfig;
use crate::model::{AePeer, Filesystem, StoreOutcome};
use crate::query::{build_find_sql, Bind, FindQuery, FindRow};
use crate::query::{Attr, Level};
use async_trait::async_trait;
use sqlx::pool::PoolConnection;
use sqlx::{Any, AnyPool, Executor, Row};
use tokio::sync::Mutex;

pub struct SqlIndex {
    pool: AnyPool,
    dialect: Dialect,
    writer: Mutex<Writer>,
}

/// The ingest writer's own connection (its page cache stays warm) and id cache.
#[derive(Default)]
struct Writer {
    connection: Option<PoolConnection<Any>>,
    cache: HierarchyCache,
}

impl SqlIndex {
    pub async fn connect(url: &str) -> IndexResult<SqlIndex> {
        let dialect = Dialect::from_url(url)?;
        let pool = dialect.connect(url).await?;
        Ok(SqlIndex {
            pool,
            dialect,
            writer: Mutex::new(Writer::default()),
        })
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// Stores `batch` in one transaction; `Err` leaves nothing of it behind.
    async fn store_in_one_transaction(
        &self,
        writer: &mut Writer,
        batch: &[NewInstance],
    ) -> IndexResult<Vec<StoreOutcome>> {
        if writer.connection.is_none() {
            writer.connection = Some(self.pool.acquire().await?);
        }
        let Writer { connection, cache } = writer;
        let Some(connection) = connection.as_mut() else {
            return Err(sqlx::Error::PoolClosed.into());
        };
        let conn: &mut sqlx::AnyConnection = connection;
        // The batch sends `begin_write` before its first statement. On SQLite that is BEGIN
        // IMMEDIATE, which takes the write lock up front: a deferred transaction reads first
        // and then upgrades, and the upgrade fails at once (SQLITE_BUSY_SNAPSHOT, which
        // busy_timeout does not cover) if another connection - say a retrieval recording
        // study access - wrote in between.
        let result = async {
            let mut work = BatchTx::new(&mut *conn, cache, self.dialect);
            let outcomes = work.store_all(batch).await?;
            work.commit().await?;
            Ok::<_, super::IndexError>(outcomes)
        }
        .await;
        if result.is_err() {
            let _ = conn.execute("ROLLBACK").await;
        }
        result
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
        let mut writer = self.writer.lock().await;
        match self.store_in_one_transaction(&mut writer, batch).await {
            Ok(outcomes) => outcomes.into_iter().map(Ok).collect(),
            Err(batch_error) => {
                // Rolled back: ids cached during the batch are void, and the connection may
                // be broken. One bad row (or a race with another node inserting the same
                // study) must not fail its neighbours: retry each on its own.
                tracing::debug!(error = %batch_error, size = batch.len(), "batch failed, storing one by one");
                let mut results = Vec::with_capacity(batch.len());
                for new in batch {
                    writer.cache.clear();
                    writer.connection = None;
                    let result = self
                        .store_in_one_transaction(&mut writer, std::slice::from_ref(new))
                        .await;
                    results.push(result.map(|mut outcomes| outcomes.remove(0)));
                }
                if results.iter().any(|r| r.is_err()) {
                    writer.cache.clear();
                    writer.connection = None;
                }
                results
            }
        }
    }

    async fn study(&self, study_uid: &str) -> IndexResult<Option<StudyRow>> {
        Ok(sqlx::query_as(&q::select_study())
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

    async fn find(&self, query: &FindQuery) -> IndexResult<Vec<FindRow>> {
        let sql = build_find_sql(query, self.dialect);
        let mut statement = sqlx::query(&sql.text);
        for bind in &sql.binds {
            statement = match bind {
                Bind::Text(text) => statement.bind(text.as_str()),
                Bind::Int(number) => statement.bind(*number),
            };
        }
        let rows = statement.fetch_all(&self.pool).await?;
        let mut answers = Vec::with_capacity(rows.len());
        for row in rows {
            let mut answer = FindRow::with_capacity(sql.columns.len());
            for (position, attr) in sql.columns.iter().enumerate() {
                let value: Option<String> = row.try_get(position)?;
                answer.insert(*attr, value.unwrap_or_default());
            }
            answers.push(answer);
        }
        Ok(answers)
    }

    async fn metadata(
        &self,
        study_uid: &str,
        series_uid: Option<&str>,
        sop_uid: Option<&str>,
    ) -> IndexResult<Vec<StoredMetadata>> {
        Ok(sqlx::query_as(q::SELECT_METADATA)
            .bind(study_uid)
            .bind(series_uid.unwrap_or(""))
            .bind(sop_uid.unwrap_or(""))
            .fetch_all(&self.pool)
            .await?)
    }

    async fn retrieve_locations(
        &self,
        level: Level,
        uids: &[String],
    ) -> IndexResult<Vec<InstanceLocation>> {
        if uids.is_empty() {
            return Ok(Vec::new());
        }
        let column = Attr::unique_key(level).column(level);
        let sql = q::select_locations_where_in(column, uids.len());
        let mut query = sqlx::query_as(&sql);
        for uid in uids {
            query = query.bind(uid.as_str());
        }
        let mut locations: Vec<InstanceLocation> = query.fetch_all(&self.pool).await?;
        let nearline = super::RetentionIndex::nearline_locations(self, level, uids).await?;
        if !nearline.is_empty() {
            locations.extend(nearline);
            // Keep the documented order when a study is partly ONLINE, partly NEARLINE.
            locations.sort_by(|a, b| {
                (&a.study_uid, &a.series_uid, a.instance_number, &a.sop_uid).cmp(&(
                    &b.study_uid,
                    &b.series_uid,
                    b.instance_number,
                    &b.sop_uid,
                ))
            });
        }
        Ok(locations)
    }

    async fn touch_studies(&self, study_uids: &[String], at: i64) -> IndexResult<()> {
        if study_uids.is_empty() {
            return Ok(());
        }
        let sql = q::touch_studies(study_uids.len());
        let mut query = sqlx::query(&sql).bind(at);
        for uid in study_uids {
            query = query.bind(uid.as_str());
        }
        query.execute(&self.pool).await?;
        Ok(())
    }

    async fn ae_upsert(&self, peer: &AePeer) -> IndexResult<()> {
        sqlx::query(q::UPSERT_AE)
            .bind(&peer.ae_title)
            .bind(&peer.host)
            .bind(i64::from(peer.port))
            .bind(i64::from(peer.can_query))
            .bind(i64::from(peer.can_retrieve))
            .bind(i64::from(peer.can_store))
            .bind(&peer.description)
            .bind(super::now_millis())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn ae_list(&self) -> IndexResult<Vec<AePeer>> {
        let rows: Vec<AeRow> = sqlx::query_as(&q::select_aes())
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.into_iter().map(AePeer::from).collect())
    }

    async fn ae_get(&self, ae_title: &str) -> IndexResult<Option<AePeer>> {
        let row: Option<AeRow> = sqlx::query_as(&q::select_ae())
            .bind(ae_title)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(AePeer::from))
    }

    async fn ae_remove(&self, ae_title: &str) -> IndexResult<bool> {
        let result = sqlx::query(q::DELETE_AE)
            .bind(ae_title)
            .execute(&self.pool)
            .await?;
        Ok(result.rows_affected() > 0)
    }
}

type AeRow = (String, String, i64, i64, i64, i64, String);

impl From<AeRow> for AePeer {
    fn from(
        (ae_title, host, port, can_query, can_retrieve, can_store, description): AeRow,
    ) -> AePeer {
        AePeer {
            ae_title,
            host,
            port: u16::try_from(port).unwrap_or(0),
            can_query: can_query != 0,
            can_retrieve: can_retrieve != 0,
            can_store: can_store != 0,
            description,
        }
    }
}
