//! Storing received instances: one writer at a time per node, on its own connection (its
//! page cache stays warm, its ids cached across batches), one transaction per batch.

use super::counts;
use super::ingest_tx::{BatchTx, HierarchyCache};
use super::{Index, IndexResult, NewInstance};
use crate::model::StoreOutcome;
use sqlx::pool::PoolConnection;
use sqlx::{Any, Executor};
use std::time::Instant;

/// The ingest writer's own connection (its page cache stays warm) and id cache.
#[derive(Default)]
pub(super) struct Writer {
    connection: Option<PoolConnection<Any>>,
    cache: HierarchyCache,
    /// When the writer last folded (or looked for) instances above the counters' mark
    /// (`counts.rs`), and whether it stored none since (false at start: a previous run, or
    /// a crash, may have left some).
    last_fold: Option<Instant>,
    all_folded: bool,
    /// Tests hold the writer's own folds to see both sides of the mark.
    folds_held: bool,
}

impl Index {
    /// Indexes a batch, in one transaction when it can. One result per input, in order; an
    /// integrity conflict is an `Ok(StoreOutcome::Conflict)` and does not affect the others,
    /// and a database error on one instance does not fail the rest. Callers that store batch
    /// after batch call [`Index::fold_counts_if_due`] between them (after answering their
    /// senders, so no answer waits for a fold); what the last batches leave is folded by any
    /// running node within `RECHECK_EVERY`, or at the next start. Counts are exact meanwhile.
    pub async fn store_batch(&self, batch: &[NewInstance]) -> Vec<IndexResult<StoreOutcome>> {
        let mut writer = self.writer.lock().await;
        let results = self.store_batch_on(&mut writer, batch).await;
        if results
            .iter()
            .any(|r| matches!(r, Ok(StoreOutcome::Stored)))
        {
            writer.all_folded = false;
        }
        results
    }

    /// Stops this index's ingest writer from folding on its own; [`Index::fold_counts`] still
    /// does. For tests that check counts on both sides of the mark.
    #[cfg(any(test, feature = "test-support"))]
    pub async fn hold_folds_for_tests(&self) {
        self.writer.lock().await.folds_held = true;
    }

    /// Folds what the last batches indexed into the counters if the last fold is
    /// `FOLD_EVERY` ago (`RECHECK_EVERY` when this writer stored nothing since: then it only
    /// looks for what another node, or a process that stopped before folding, left). The
    /// ingest queue calls this after answering each batch and when idle.
    pub async fn fold_counts_if_due(&self) {
        let mut writer = self.writer.lock().await;
        self.fold_if_due(&mut writer).await;
    }

    /// Folds the instances above the mark into the series and study counters (a read and
    /// nothing else when there are none). A failure only means the next fold has more to do:
    /// counts read meanwhile are exact either way.
    async fn fold_if_due(&self, writer: &mut Writer) {
        let interval = if writer.all_folded {
            counts::RECHECK_EVERY
        } else {
            counts::FOLD_EVERY
        };
        if writer.folds_held
            || writer
                .last_fold
                .is_some_and(|last| last.elapsed() < interval)
        {
            return;
        }
        writer.last_fold = Some(Instant::now());
        let folded = match open_connection(&mut writer.connection, &self.pool).await {
            Ok(connection) => counts::fold_counts_on(connection, self.dialect).await,
            Err(error) => Err(error),
        };
        match folded {
            Ok(_) => writer.all_folded = true,
            // Another node's batch was open for longer than the fold waits: the next one folds.
            Err(error) if counts::is_lock_timeout(&error) => {
                tracing::debug!(%error, "fold of the series and study counters gave way to an open batch");
            }
            Err(error) => {
                tracing::warn!(%error, "could not fold new instances into the series and study counters; retrying later");
                writer.connection = None;
            }
        }
    }

    async fn store_batch_on(
        &self,
        writer: &mut Writer,
        batch: &[NewInstance],
    ) -> Vec<IndexResult<StoreOutcome>> {
        match self.store_in_one_transaction(writer, batch).await {
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
                        .store_in_one_transaction(writer, std::slice::from_ref(new))
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
        let Writer {
            connection, cache, ..
        } = writer;
        let conn: &mut sqlx::AnyConnection = open_connection(connection, &self.pool).await?;
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

/// The writer's connection, taken from the pool if it has none (at start, or after an error
/// dropped it).
async fn open_connection<'a>(
    slot: &'a mut Option<PoolConnection<Any>>,
    pool: &sqlx::AnyPool,
) -> IndexResult<&'a mut PoolConnection<Any>> {
    if slot.is_none() {
        *slot = Some(pool.acquire().await?);
    }
    slot.as_mut().ok_or_else(|| sqlx::Error::PoolClosed.into())
}
