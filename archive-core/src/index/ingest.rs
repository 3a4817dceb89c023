//! Storing received instances: one writer at a time per node, on its own connection (its
//! page cache stays warm, its ids cached across batches), one transaction per batch.

use super::ingest_tx::{BatchTx, HierarchyCache};
use super::{Index, IndexResult, NewInstance};
use crate::model::StoreOutcome;
use sqlx::pool::PoolConnection;
use sqlx::{Any, Executor};

/// The ingest writer's own connection (its page cache stays warm) and id cache.
#[derive(Default)]
pub(super) struct Writer {
    connection: Option<PoolConnection<Any>>,
    cache: HierarchyCache,
}

impl Index {
    /// Indexes a batch, in one transaction when it can. One result per input, in order; an
    /// integrity conflict is an `Ok(StoreOutcome::Conflict)` and does not affect the others,
    /// and a database error on one instance does not fail the rest.
    pub async fn store_batch(&self, batch: &[NewInstance]) -> Vec<IndexResult<StoreOutcome>> {
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
