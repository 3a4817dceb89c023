//! Series and study counters, kept exact without rewriting the series and study rows in every
//! group-commit batch.
//!
//! `series.num_instances`, `series.size_bytes` and the study's two hold the counts of the
//! instances up to `counts_folded.instance_id` (the *mark*). Instances above the mark are
//! counted when a count is read: the macros below are the SQL every reader uses (C-FIND and
//! QIDO-RS attributes, the API's study and series rows, the dashboard totals). The ingest
//! writer folds them into the rows and moves the mark every [`FOLD_EVERY`], so the instances
//! counted at read time are at most that much ingest, found by an index range
//! (`series_fk = ? AND id > mark`, migration 0015).
//!
//! Why: on SQLite each dirty page of a commit is a 4 KiB WAL frame, written again at the next
//! checkpoint. Rewriting the series and study rows cost two to three such pages per batch,
//! about a quarter of what the index wrote per instance (README, Benchmarks → Ingest).
//!
//! The mark is safe on both engines because no instance at or below it can still be
//! uncommitted when it moves: on SQLite every write holds the one write lock, and ids grow
//! with commits. On PostgreSQL ids are handed out before commit, so every ingest batch holds
//! the advisory lock `ingest_lock!()` in shared mode from its BEGIN ([`BEGIN_INGEST_PG`]), and
//! the fold takes it exclusively: it waits for the open batches and holds off new ones for the
//! few milliseconds of the fold. (A lock on the `instance` table would do the same but also
//! wait for autovacuum, which holds a conflicting lock for as long as it runs.) Ingest batches
//! take the advisory lock before any row lock, so a fold cannot deadlock with them.
//!
//! Upgrading across migration 0015: stop every node first. A node of an older version keeps
//! adding to the counters in every batch, and its instances would then be counted twice.

use super::{Dialect, Index, IndexResult};
use sqlx::{AnyConnection, Executor};
use std::time::Duration;

/// How often the ingest writer folds the instances above the mark into the counters.
pub(crate) const FOLD_EVERY: Duration = Duration::from_millis(500);
/// How often a writer that stored nothing itself checks for instances another node (or a
/// process that stopped before folding) left above the mark.
pub(crate) const RECHECK_EVERY: Duration = Duration::from_secs(10);

/// PostgreSQL advisory lock key shared by ingest batches and the fold: 0x5354524154410001,
/// "STRATA" + 1.
macro_rules! ingest_lock {
    () => {
        "6004514643731611649"
    };
}
/// BEGIN of an ingest batch on PostgreSQL: one simple-protocol round trip for both.
pub(crate) const BEGIN_INGEST_PG: &str = concat!(
    "BEGIN; SELECT pg_advisory_xact_lock_shared(",
    ingest_lock!(),
    ")"
);

/// The mark, as an SQL scalar.
macro_rules! folded_mark {
    () => {
        "(SELECT cf.instance_id FROM counts_folded cf)"
    };
}

/// `CASE WHEN` nothing is above the mark `THEN 0 ELSE`: both scalars are uncorrelated, so the
/// engines evaluate them once per statement, and a query while nothing is unfolded (most
/// queries: ingest folds every half second) pays no per-row look-up.
macro_rules! unless_all_folded {
    () => {
        concat!(
            "CASE WHEN ",
            $crate::index::counts::folded_mark!(),
            " >= (SELECT COALESCE(MAX(mi.id), 0) FROM instance mi) THEN 0 ELSE "
        )
    };
}

/// `$row.$column` plus `$agg` over the unfolded instances whose `$owner` is `$row.id`, read
/// from `$from` (which names the instance table `ui`): the pattern of every exact count below.
macro_rules! plus_unfolded {
    ($row:literal, $column:literal, $agg:literal, $from:literal, $owner:literal) => {
        concat!(
            "(",
            $row,
            ".",
            $column,
            " + ",
            $crate::index::counts::unless_all_folded!(),
            "(SELECT ",
            $agg,
            " FROM ",
            $from,
            " WHERE ",
            $owner,
            " = ",
            $row,
            ".id AND ui.id > ",
            $crate::index::counts::folded_mark!(),
            ") END)"
        )
    };
}

/// Instances of series `$se` (an SQL alias), exact.
macro_rules! series_instances {
    ($se:literal) => {
        $crate::index::counts::plus_unfolded!(
            $se,
            "num_instances",
            "COUNT(*)",
            "instance ui",
            "ui.series_fk"
        )
    };
}

/// Bytes of series `$se`, exact.
macro_rules! series_bytes {
    ($se:literal) => {
        $crate::index::counts::plus_unfolded!(
            $se,
            "size_bytes",
            "CAST(COALESCE(SUM(ui.size_bytes), 0) AS BIGINT)",
            "instance ui",
            "ui.series_fk"
        )
    };
}

/// Instances of study `$st`, exact.
macro_rules! study_instances {
    ($st:literal) => {
        $crate::index::counts::plus_unfolded!(
            $st,
            "num_instances",
            "COUNT(*)",
            "series us JOIN instance ui ON ui.series_fk = us.id",
            "us.study_fk"
        )
    };
}

/// Bytes of study `$st`, exact.
macro_rules! study_bytes {
    ($st:literal) => {
        $crate::index::counts::plus_unfolded!(
            $st,
            "size_bytes",
            "CAST(COALESCE(SUM(ui.size_bytes), 0) AS BIGINT)",
            "series us JOIN instance ui ON ui.series_fk = us.id",
            "us.study_fk"
        )
    };
}

/// True if study `$st` has an instance above the mark received after `$after` (an SQL
/// expression): its `updated_at` does not show that one yet.
macro_rules! study_unfolded_after {
    ($st:literal, $after:literal) => {
        concat!(
            "EXISTS (SELECT 1 FROM series us JOIN instance ui ON ui.series_fk = us.id \
             WHERE us.study_fk = ",
            $st,
            ".id AND ui.id > ",
            $crate::index::counts::folded_mark!(),
            " AND ui.received_at > ",
            $after,
            ")"
        )
    };
}

/// Instances of patient `$p`, exact (the sum over its studies).
macro_rules! patient_instances {
    ($p:literal) => {
        concat!(
            "((SELECT COALESCE(SUM(x.num_instances), 0) FROM study x WHERE x.patient_fk = ",
            $p,
            ".id) + ",
            $crate::index::counts::unless_all_folded!(),
            "(SELECT COUNT(*) FROM study ux JOIN series us ON us.study_fk = ux.id \
             JOIN instance ui ON ui.series_fk = us.id WHERE ux.patient_fk = ",
            $p,
            ".id AND ui.id > ",
            $crate::index::counts::folded_mark!(),
            ") END)"
        )
    };
}

pub(crate) use {
    folded_mark, patient_instances, plus_unfolded, series_bytes, series_instances, study_bytes,
    study_instances, study_unfolded_after, unless_all_folded,
};

/// Adds the unfolded instances' counts, bytes and latest arrival to `{table}` rows. `$1` and
/// `$2` are the old and the new mark; `{parent}` is the SQL that gives each unfolded instance
/// its row id in `{table}`.
fn fold_into(table: &str, parent: &str) -> String {
    format!(
        "UPDATE {table} SET num_instances = {table}.num_instances + d.instances, \
         size_bytes = {table}.size_bytes + d.bytes, \
         updated_at = CASE WHEN d.latest > {table}.updated_at THEN d.latest ELSE {table}.updated_at END \
         FROM (SELECT {parent} AS id, COUNT(*) AS instances, \
                      CAST(COALESCE(SUM(ui.size_bytes), 0) AS BIGINT) AS bytes, \
                      MAX(ui.received_at) AS latest \
               FROM instance ui JOIN series us ON us.id = ui.series_fk \
               WHERE ui.id > $1 AND ui.id <= $2 GROUP BY {parent}) d \
         WHERE {table}.id = d.id"
    )
}

impl Index {
    /// Folds the instances above the mark into the series and study counters and moves the
    /// mark, in one transaction. Counts read before and after are the same; this only keeps
    /// the read-time part small. Returns how many instances were folded.
    pub async fn fold_counts(&self) -> IndexResult<u64> {
        let mut conn = self.pool().acquire().await?;
        fold_counts_on(&mut conn, self.dialect()).await
    }
}

/// [`Index::fold_counts`] on a given connection (the ingest writer's own).
pub(super) async fn fold_counts_on(conn: &mut AnyConnection, dialect: Dialect) -> IndexResult<u64> {
    // Nothing above the mark (the common case when idle): no write lock taken.
    let (old, new) = marks(conn).await?;
    if new <= old {
        return Ok(0);
    }
    conn.execute(dialect.begin_write()).await?;
    let result = fold_in_transaction(conn, dialect).await;
    match result {
        Ok(folded) => {
            conn.execute("COMMIT").await?;
            Ok(folded)
        }
        Err(error) => {
            let _ = conn.execute("ROLLBACK").await;
            Err(error)
        }
    }
}

/// Whether a fold gave up waiting for the ingest lock (PostgreSQL `lock_not_available`).
pub(super) fn is_lock_timeout(error: &super::IndexError) -> bool {
    match error {
        super::IndexError::Database(sqlx::Error::Database(db)) => {
            db.code().as_deref() == Some("55P03")
        }
        _ => false,
    }
}

/// The mark and the highest instance id.
async fn marks(conn: &mut AnyConnection) -> IndexResult<(i64, i64)> {
    Ok(sqlx::query_as(concat!(
        "SELECT ",
        folded_mark!(),
        ", (SELECT COALESCE(MAX(id), 0) FROM instance)"
    ))
    .fetch_one(&mut *conn)
    .await?)
}

async fn fold_in_transaction(conn: &mut AnyConnection, dialect: Dialect) -> IndexResult<u64> {
    if dialect == Dialect::Postgres {
        // Gives up rather than queue for long: while this lock request waits, new batches
        // queue behind it. A fold that gives up is retried by the next one.
        conn.execute("SET LOCAL lock_timeout = '200ms'").await?;
        // Waits until no ingest batch is open (and keeps other nodes' folds out), so every
        // id up to MAX(id) read below is committed.
        conn.execute(concat!(
            "SELECT pg_advisory_xact_lock(",
            ingest_lock!(),
            ")"
        ))
        .await?;
    }
    let (old, new) = marks(conn).await?;
    if new <= old {
        return Ok(0);
    }
    for sql in [
        fold_into("series", "ui.series_fk"),
        fold_into("study", "us.study_fk"),
    ] {
        sqlx::query(&sql)
            .bind(old)
            .bind(new)
            .execute(&mut *conn)
            .await?;
    }
    // Guarded by the old mark: if anything moved it meanwhile, nothing is committed twice.
    let moved = sqlx::query("UPDATE counts_folded SET instance_id = $1 WHERE instance_id = $2")
        .bind(new)
        .bind(old)
        .execute(&mut *conn)
        .await?;
    if moved.rows_affected() != 1 {
        return Err(sqlx::Error::Protocol("counts_folded moved during a fold".into()).into());
    }
    let folded: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM instance WHERE id > $1 AND id <= $2")
            .bind(old)
            .bind(new)
            .fetch_one(&mut *conn)
            .await?;
    Ok(folded.max(0) as u64)
}

#[cfg(test)]
mod tests {
    use super::super::plan_check::sqlite_plan;

    /// The read-time part of every count finds a series' unfolded instances by an index
    /// range, never by walking the series' (or the archive's) instances: on SQLite the
    /// rowid is the last column of `instance_series_idx`.
    #[tokio::test]
    async fn unfolded_instances_are_found_by_an_index_range() {
        let statements = [
            concat!(
                "SELECT ",
                series_instances!("se"),
                " FROM series se WHERE se.id = $1"
            ),
            concat!(
                "SELECT ",
                series_bytes!("se"),
                " FROM series se WHERE se.id = $1"
            ),
            concat!(
                "SELECT ",
                study_instances!("st"),
                " FROM study st WHERE st.id = $1"
            ),
            concat!(
                "SELECT ",
                study_bytes!("st"),
                " FROM study st WHERE st.id = $1"
            ),
            concat!(
                "SELECT ",
                patient_instances!("p"),
                " FROM patient p WHERE p.id = $1"
            ),
        ];
        for sql in statements {
            let plan = sqlite_plan(sql).await;
            let instance_steps: Vec<&String> =
                plan.iter().filter(|step| step.contains(" ui ")).collect();
            assert!(
                !instance_steps.is_empty()
                    && instance_steps
                        .iter()
                        .all(|step| step.contains("instance_series_idx (series_fk=? AND rowid>?)")),
                "{sql}: {plan:#?}"
            );
            // MAX(id) of the guard is the last rowid, not a walk over the table.
            assert!(
                !plan.iter().any(|step| step.starts_with("SCAN mi")),
                "{sql}: {plan:#?}"
            );
        }
    }

    /// The fold reads only the instances above the mark, through the primary key.
    #[tokio::test]
    async fn the_fold_reads_the_unfolded_range_only() {
        for (table, parent) in [("series", "ui.series_fk"), ("study", "us.study_fk")] {
            let plan = sqlite_plan(&super::fold_into(table, parent)).await;
            assert!(
                plan.iter().any(|step| step
                    .contains("SEARCH ui USING INTEGER PRIMARY KEY (rowid>? AND rowid<?)")),
                "{table}: {plan:#?}"
            );
            assert!(
                !plan.iter().any(|step| step.starts_with("SCAN ui")),
                "{table}: {plan:#?}"
            );
        }
    }
}
