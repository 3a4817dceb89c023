//! Indexing received instances inside one open transaction (one batch of the group commit).
//!
//! All consistency checks for an instance run before its first write, so a refused instance
//! leaves no trace (no empty patient, study or series rows) although it shares the transaction.
//! The common case — another instance of a series already seen — costs two INSERTs: the
//! hierarchy comes from [`HierarchyCache`], and the series and study counters are not touched
//! (the instances are folded into them later, see `counts.rs`).

use super::commit_script::{CommitScript, Param};
use super::counts::{folded_mark, BEGIN_INGEST_PG};
use super::placeholders::{placeholder_list, values_placeholders, values_placeholders_from};
use super::{Dialect, IndexResult, NewInstance};
use crate::config::DuplicatePolicy;
use crate::model::{IntegrityConflict, StoreOutcome, StoredFile};
use sqlx::{AnyConnection, Executor};
use std::collections::{BTreeSet, HashMap};

const FIND_PATIENT: &str = "SELECT id FROM patient WHERE patient_id = $1 AND issuer = $2";

const INSERT_PATIENT: &str = "INSERT INTO patient \
    (patient_id, issuer, patient_name, patient_name_norm, birth_date, sex, created_at) \
    VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id";

const FIND_STUDY: &str = "SELECT s.id, s.patient_fk, p.patient_id \
    FROM study s JOIN patient p ON p.id = s.patient_fk WHERE s.study_uid = $1";

const INSERT_STUDY: &str = "INSERT INTO study \
    (study_uid, patient_fk, study_date, study_time, accession_number, study_id, description, \
     referring_physician, referring_physician_norm, received_at, updated_at, last_accessed_at) \
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) RETURNING id";

const FIND_SERIES: &str = "SELECT se.id, se.study_fk, st.study_uid \
    FROM series se JOIN study st ON st.id = se.study_fk WHERE se.series_uid = $1";

const INSERT_SERIES: &str = "INSERT INTO series \
    (series_uid, study_fk, modality, series_number, description, body_part, source_ae, \
     received_at, updated_at) \
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING id";

/// Counts a new series and adds its modality to the backslash-separated list unless it is
/// already there. Placeholders from `$first`: modality, study id.
fn study_add_series(first: usize) -> String {
    let modality = format!("${first}");
    let study = first + 1;
    format!(
        "UPDATE study SET num_series = num_series + 1, modalities = \
         CASE WHEN {modality} = '' THEN modalities WHEN modalities = '' THEN {modality} \
         WHEN ('\\' || modalities || '\\') LIKE ('%\\' || {modality} || '\\%') ESCAPE '!' \
         THEN modalities ELSE modalities || '\\' || {modality} END WHERE id = ${study}"
    )
}

const FIND_INSTANCE: &str = "SELECT i.id, i.series_fk, se.series_uid \
    FROM instance i JOIN series se ON se.id = i.series_fk WHERE i.sop_uid = $1";

/// What a stored instance adds to the counters, read (and on PostgreSQL locked, see
/// [`Dialect::lock_instance_for_file_change`]) when a duplicate is about to change its file.
const COUNTED_BYTES: &str = "SELECT size_bytes FROM instance WHERE id = $1";

/// Multi-row insert: HEAD, `(…), (…)` with 8 values per instance, TAIL. Instances already
/// stored return no row.
const INSERT_INSTANCES_HEAD: &str = "INSERT INTO instance \
    (sop_uid, series_fk, sop_class_uid, instance_number, transfer_syntax, number_of_frames, \
     received_at, size_bytes) VALUES";
const INSERT_INSTANCES_TAIL: &str = "ON CONFLICT (sop_uid) DO NOTHING RETURNING id, sop_uid";

/// Multi-row insert: HEAD, then `(…), (…)` with 6 values per file (status defaults to OK).
const INSERT_FILES_HEAD: &str = "INSERT INTO file \
    (instance_fk, filesystem_fk, path, size_bytes, sha256, created_at) VALUES";

const INSERT_METADATA_HEAD: &str = "INSERT INTO instance_metadata (instance_fk, metadata) VALUES";
const INSERT_METADATA_TAIL: &str =
    "ON CONFLICT (instance_fk) DO UPDATE SET metadata = excluded.metadata";

const FIND_FILE_OF_INSTANCE: &str = "SELECT id, filesystem_fk, path, size_bytes, sha256 \
    FROM file WHERE instance_fk = $1 AND status = 'OK'";

/// Only an OK file: one that retention marked DELETING is unlinked by its recorded path next,
/// which must not become the new copy's.
const REPLACE_FILE: &str = "UPDATE file SET filesystem_fk = $1, path = $2, size_bytes = $3, \
    sha256 = $4, created_at = $5 WHERE id = $6 AND status = 'OK'";

/// A batch's BEGIN: on PostgreSQL it also takes the ingest lock in shared mode, which the
/// counters' fold waits for (`counts.rs`), before any row lock.
fn begin_ingest(dialect: Dialect) -> &'static str {
    match dialect {
        Dialect::Postgres => BEGIN_INGEST_PG,
        Dialect::Sqlite => dialect.begin_write(),
    }
}

/// Marks the batch's series or studies (`touched`) ONLINE where they were not (a new instance
/// arrived for a study that had gone NEARLINE), placeholders from `$first`. A row already
/// ONLINE is not written, so the common case dirties no page.
///
/// On PostgreSQL it is the first write of its table in the batch and locks, in id order, the
/// rows it marks and the rows the batch writes next (`changed`; usually touched too, but not
/// a study given a series whose instance was then refused as a conflict): an
/// UPDATE locks rows in the order its plan meets them, which need not be the ids' order,
/// whereas `ORDER BY … FOR NO KEY UPDATE` locks them sorted.
fn mark_online(
    dialect: Dialect,
    table: &str,
    touched: &BTreeSet<i64>,
    changed: &BTreeSet<i64>,
    first: usize,
) -> Option<(String, Vec<Param>)> {
    let ids = |set: &BTreeSet<i64>| set.iter().map(|id| Param::Int(*id)).collect::<Vec<_>>();
    let touched_list = placeholder_list(first, touched.len());
    match dialect {
        Dialect::Sqlite if touched.is_empty() => None,
        Dialect::Sqlite => Some((
            format!(
                "UPDATE {table} SET availability = 'ONLINE' \
                 WHERE availability <> 'ONLINE' AND id IN ({touched_list})"
            ),
            ids(touched),
        )),
        Dialect::Postgres if touched.is_empty() && changed.is_empty() => None,
        Dialect::Postgres if touched.is_empty() => {
            let changed_list = placeholder_list(first, changed.len());
            let select = format!("SELECT id FROM {table} WHERE id IN ({changed_list})");
            let lock = dialect.lock_in_order(&select, table, "id")?;
            Some((lock, ids(changed)))
        }
        Dialect::Postgres => {
            let also_changed = if changed.is_empty() {
                String::new()
            } else {
                let list = placeholder_list(first + touched.len(), changed.len());
                format!(" OR id IN ({list})")
            };
            let mut params = ids(touched);
            params.extend(ids(changed));
            Some((
                format!(
                    "UPDATE {table} SET availability = 'ONLINE' WHERE availability <> 'ONLINE' \
                     AND id IN ({touched_list}) AND id IN (SELECT id FROM {table} \
                     WHERE (id IN ({touched_list}) AND availability <> 'ONLINE'){also_changed} \
                     ORDER BY id FOR NO KEY UPDATE)"
                ),
                params,
            ))
        }
    }
}

/// A duplicate changed an instance's bytes (a replaced file, or a file given to an instance
/// held only in a pack). The instance's own `size_bytes` always changes; its series' and
/// study's counters only if the instance is at or below the mark, i.e. already folded into
/// them (otherwise the fold adds the new size). Series and study count as updated.
/// Placeholders from `$first`: bytes, instance id, row id, time (the casts give PostgreSQL
/// the types).
fn add_bytes_to_counter(table: &str, first: usize) -> String {
    let bytes = format!("CAST(${first} AS BIGINT)");
    let instance = format!("CAST(${} AS BIGINT)", first + 1);
    let row = first + 2;
    let at = format!("CAST(${} AS BIGINT)", first + 3);
    format!(
        "UPDATE {table} SET \
         size_bytes = size_bytes + CASE WHEN {instance} <= {} THEN {bytes} ELSE 0 END, \
         updated_at = CASE WHEN {at} > updated_at THEN {at} ELSE updated_at END \
         WHERE id = ${row}",
        folded_mark!()
    )
}

/// A write to a series or study row, held back until the batch commits: see
/// [`BatchTx::queue_row_changes`].
enum RowChange {
    /// [`add_bytes_to_counter`]'s update: bytes, instance id, time.
    AddBytes {
        delta: i64,
        instance_id: i64,
        at: i64,
    },
    /// [`study_add_series`]'s update (study rows only).
    AddSeries { modality: String },
}

/// Series rows before study rows, each in id order: the order every batch locks them in.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum RowOf {
    Series(i64),
    Study(i64),
}

impl RowOf {
    fn id(self) -> i64 {
        match self {
            RowOf::Series(id) | RowOf::Study(id) => id,
        }
    }
}

fn push_row_change(tail: &mut CommitScript, table: &str, id: i64, change: RowChange) {
    let first = tail.first_placeholder();
    let (sql, params) = match change {
        RowChange::AddBytes {
            delta,
            instance_id,
            at,
        } => (
            add_bytes_to_counter(table, first),
            vec![
                Param::Int(delta),
                Param::Int(instance_id),
                Param::Int(id),
                Param::Int(at),
            ],
        ),
        RowChange::AddSeries { modality } => (
            study_add_series(first),
            vec![Param::Text(modality), Param::Int(id)],
        ),
    };
    tail.push(sql, params);
}

#[derive(Clone)]
struct CachedStudy {
    id: i64,
    patient_fk: i64,
    patient_id: String,
}

/// Where an instance stands after its hierarchy is resolved.
enum Resolved {
    /// Nothing to insert: refused, or settled as a duplicate.
    Done(StoreOutcome),
    Insert {
        series_id: i64,
        study_id: i64,
    },
}

#[derive(Clone)]
struct CachedSeries {
    id: i64,
    study_fk: i64,
    study_uid: String,
}

/// Ids of hierarchy rows the writer has seen committed. Rows never change parent (that is
/// exactly what is refused as a conflict), so entries stay true; code that deletes patient,
/// study or series rows must call [`HierarchyCache::clear`]. Bounded: cleared when full.
#[derive(Default)]
pub(super) struct HierarchyCache {
    patients: HashMap<(String, String), i64>,
    studies: HashMap<String, CachedStudy>,
    series: HashMap<String, CachedSeries>,
}

const CACHE_LIMIT: usize = 50_000;

impl HierarchyCache {
    pub(super) fn clear(&mut self) {
        *self = HierarchyCache::default();
    }

    fn trim(&mut self) {
        if self.patients.len() + self.studies.len() + self.series.len() > CACHE_LIMIT {
            self.clear();
        }
    }
}

/// One transaction's worth of work. Entries it adds to the cache are only kept if the
/// transaction commits (`committed`); otherwise the cache is cleared.
pub(super) struct BatchTx<'a> {
    conn: &'a mut AnyConnection,
    cache: &'a mut HierarchyCache,
    /// Series and studies that received an instance (or a file) in this batch.
    touched_series: BTreeSet<i64>,
    touched_studies: BTreeSet<i64>,
    /// Writes to series and study rows, sent with the COMMIT in [`RowOf`] order.
    row_changes: Vec<(RowOf, RowChange)>,
    /// A duplicate changed a stored instance's row: the tail then holds writes whose order
    /// matters, and PostgreSQL gets them one by one.
    changed_stored_instances: bool,
    /// The batch's last writes, sent with its COMMIT.
    tail: CommitScript,
    dialect: Dialect,
    /// The transaction's BEGIN until it is sent: with the first statement that touches the
    /// database (on SQLite in the same hand-off), or not at all if none does. On PostgreSQL
    /// it is two statements in one simple-protocol query (`begin_ingest`).
    begin: Option<&'static str>,
}

impl<'a> BatchTx<'a> {
    pub(super) fn new(
        conn: &'a mut AnyConnection,
        cache: &'a mut HierarchyCache,
        dialect: Dialect,
    ) -> BatchTx<'a> {
        cache.trim();
        BatchTx {
            conn,
            cache,
            touched_series: BTreeSet::new(),
            touched_studies: BTreeSet::new(),
            row_changes: Vec::new(),
            changed_stored_instances: false,
            tail: CommitScript::new(dialect),
            dialect,
            begin: Some(begin_ingest(dialect)),
        }
    }

    /// Sends BEGIN if it has not been sent yet.
    async fn begin_now(&mut self) -> IndexResult<()> {
        if let Some(begin) = self.begin.take() {
            self.conn.execute(begin).await?;
        }
        Ok(())
    }

    /// `sql` preceded by the pending BEGIN where the engine takes both in one query (SQLite);
    /// elsewhere BEGIN is sent first.
    async fn with_begin(&mut self, sql: String) -> IndexResult<String> {
        match (self.dialect, self.begin) {
            (Dialect::Sqlite, Some(begin)) => {
                self.begin = None;
                Ok(format!("{begin};\n{sql}"))
            }
            _ => {
                self.begin_now().await?;
                Ok(sql)
            }
        }
    }

    /// Writes the new files, marks the touched series and studies ONLINE, and commits. On
    /// error the transaction is still open: the caller rolls it back.
    pub(super) async fn commit(mut self) -> IndexResult<()> {
        // (Row changes come only after BEGIN was sent: a hierarchy insert or a duplicate's read.)
        if self.begin.is_some() && self.touched_series.is_empty() && self.tail.is_empty() {
            // Nothing was read or written (every instance settled from the cache).
            return Ok(());
        }
        self.begin_now().await?;
        self.queue_row_changes();
        self.tail.run_and_commit(self.conn).await
    }

    /// Queues the batch's writes to series and study rows last, all series rows before all
    /// study rows, each table's rows locked in id order first ([`mark_online`]), whatever
    /// order the instances came in. Two batches (two nodes on PostgreSQL) therefore lock
    /// these shared rows in the same order, and only after every instance row they lock (a
    /// duplicate's, in SOP Instance UID order): neither can hold a series or study row the
    /// other waits for while waiting for one of its instances.
    ///
    /// Unless a duplicate changed a stored instance (whose rows the tail then writes, some
    /// twice), the tail up to the series' ONLINE mark writes new file and metadata rows and
    /// each touched series row once: on PostgreSQL that part goes as one statement, one round
    /// trip instead of three, and the study rows still come after it.
    fn queue_row_changes(&mut self) {
        let combine_to_series = !self.changed_stored_instances;
        let mut changes = std::mem::take(&mut self.row_changes);
        changes.sort_by_key(|(row, _)| *row); // stable: one row's changes keep their order
        let (series, studies): (Vec<_>, Vec<_>) = changes
            .into_iter()
            .partition(|(row, _)| matches!(row, RowOf::Series(_)));
        for (table, changes, touched) in [
            ("series", series, &self.touched_series),
            ("study", studies, &self.touched_studies),
        ] {
            let changed: BTreeSet<i64> = changes.iter().map(|(row, _)| row.id()).collect();
            let first = self.tail.first_placeholder();
            if let Some((sql, params)) = mark_online(self.dialect, table, touched, &changed, first)
            {
                self.tail.push(sql, params);
            }
            for (row, change) in changes {
                push_row_change(&mut self.tail, table, row.id(), change);
            }
            if table == "series" && combine_to_series {
                self.tail.combine_queued();
            }
        }
    }

    fn touch(&mut self, series_id: i64, study_id: i64) {
        self.touched_series.insert(series_id);
        self.touched_studies.insert(study_id);
    }

    /// The instance's object is now `size` bytes, `delta` more than its counters hold for
    /// it: sets its `size_bytes` and, where [`add_bytes_to_counter`] says so, adds `delta` to
    /// its series' and study's (whose `updated_at` moves either way: a file was written).
    fn set_bytes(&mut self, new: &NewInstance, ids: (i64, i64, i64), size: i64, delta: i64) {
        let (instance_id, series_id, study_id) = ids;
        self.touch(series_id, study_id);
        let first = self.tail.first_placeholder();
        self.tail.push(
            format!(
                "UPDATE instance SET size_bytes = CAST(${first} AS BIGINT) WHERE id = ${}",
                first + 1
            ),
            vec![Param::Int(size), Param::Int(instance_id)],
        );
        for row in [RowOf::Series(series_id), RowOf::Study(study_id)] {
            let change = RowChange::AddBytes {
                delta,
                instance_id,
                at: new.received_at,
            };
            self.row_changes.push((row, change));
        }
    }

    /// Indexes a batch: resolves each instance's hierarchy (refusing conflicts), inserts all
    /// new instances and their files with one multi-row statement each, then settles the
    /// ones that turned out to be stored already. One outcome per input, in order.
    pub(super) async fn store_all(
        &mut self,
        batch: &[NewInstance],
    ) -> IndexResult<Vec<StoreOutcome>> {
        let mut outcomes: Vec<Option<StoreOutcome>> = vec![None; batch.len()];
        let mut to_insert: Vec<(usize, i64, i64)> = Vec::new();
        for (position, new) in batch.iter().enumerate() {
            match self.resolve(new).await? {
                Resolved::Done(outcome) => outcomes[position] = Some(outcome),
                Resolved::Insert {
                    series_id,
                    study_id,
                } => to_insert.push((position, series_id, study_id)),
            }
        }
        // New instances in SOP Instance UID order too: a batch inserting an instance another
        // batch has inserted but not committed waits for that batch, so two batches given the
        // same new instances (two nodes) must meet them in one order. Stable: of two copies of
        // one instance the first is inserted, the second settled as a duplicate.
        let uid_of = |position: usize| &batch[position].record.instance.sop_instance_uid;
        to_insert.sort_by(|a, b| uid_of(a.0).cmp(uid_of(b.0)));
        let mut inserted = self.insert_instances(batch, &to_insert).await?;
        let mut new_files = Vec::new();
        let mut new_metadata = Vec::new();
        let mut already_stored = Vec::new();
        for &(position, series_id, study_id) in &to_insert {
            let new = &batch[position];
            match inserted.remove(&new.record.instance.sop_instance_uid) {
                Some(instance_id) => {
                    if let Some(file) = new.held.file() {
                        new_files.push((instance_id, file, new.received_at));
                    }
                    if let Some(metadata) = &new.metadata {
                        new_metadata.push((instance_id, metadata));
                    }
                    self.touch(series_id, study_id);
                    outcomes[position] = Some(StoreOutcome::Stored);
                }
                None => already_stored.push((position, series_id, study_id)),
            }
        }
        self.insert_files(&new_files);
        self.insert_metadata(&new_metadata);
        // In SOP Instance UID order, as every node does: a duplicate locks its instance's row
        // (PostgreSQL), and two batches locking the same rows in opposite orders would
        // deadlock. Their series and study rows are written with the COMMIT, after these
        // (`queue_row_changes`). The sort is stable, so two copies of one instance keep their
        // order.
        already_stored.sort_by(|a, b| uid_of(a.0).cmp(uid_of(b.0)));
        for (position, series_id, study_id) in already_stored {
            let outcome = self
                .existing_instance(&batch[position], Some((series_id, study_id)))
                .await?;
            outcomes[position] = Some(outcome.unwrap_or(StoreOutcome::DuplicateKept));
        }
        Ok(outcomes
            .into_iter()
            .map(|o| o.unwrap_or(StoreOutcome::DuplicateKept))
            .collect())
    }

    /// Finds (or creates) the instance's patient, study and series, or the reason to refuse it.
    async fn resolve(&mut self, new: &NewInstance) -> IndexResult<Resolved> {
        let record = &new.record;
        let patient_key = (
            record.patient.patient_id.clone(),
            record.patient.issuer_of_patient_id.clone(),
        );
        // Reads and writes below run inside the transaction; the common case - a series the
        // writer has seen - needs neither, and its BEGIN goes with the batch's first INSERT.
        let all_cached = self.cache.patients.contains_key(&patient_key)
            && self.cache.studies.contains_key(&record.study.study_uid)
            && self.cache.series.contains_key(&record.series.series_uid);
        if !all_cached {
            self.begin_now().await?;
        }
        let patient_id = match self.cache.patients.get(&patient_key) {
            Some(id) => Some(*id),
            None => self.find_patient(&patient_key).await?,
        };
        let study = match self.cache.studies.get(&record.study.study_uid) {
            Some(study) => Some(study.clone()),
            None => self.find_study(&record.study.study_uid).await?,
        };
        if let Some(study) = &study {
            if Some(study.patient_fk) != patient_id {
                return Ok(Resolved::Done(StoreOutcome::Conflict(
                    IntegrityConflict::StudyOfOtherPatient {
                        study_uid: record.study.study_uid.clone(),
                        stored_patient_id: study.patient_id.clone(),
                        received_patient_id: record.patient.patient_id.clone(),
                    },
                )));
            }
        }
        let series = match self.cache.series.get(&record.series.series_uid) {
            Some(series) => Some(series.clone()),
            None => self.find_series(&record.series.series_uid).await?,
        };
        if let Some(series) = series {
            if Some(series.study_fk) != study.as_ref().map(|s| s.id) {
                return Ok(Resolved::Done(StoreOutcome::Conflict(
                    IntegrityConflict::SeriesInOtherStudy {
                        series_uid: record.series.series_uid.clone(),
                        stored_study_uid: series.study_uid.clone(),
                        received_study_uid: record.study.study_uid.clone(),
                    },
                )));
            }
            return Ok(Resolved::Insert {
                series_id: series.id,
                study_id: series.study_fk,
            });
        }
        // A new series: make sure the instance is not stored elsewhere before creating any
        // row for it.
        if let Some(outcome) = self.existing_instance(new, None).await? {
            return Ok(Resolved::Done(outcome));
        }
        let patient_id = match patient_id {
            Some(id) => id,
            None => self.insert_patient(new, patient_key).await?,
        };
        let study = match study {
            Some(study) => study,
            None => self.insert_study(new, patient_id).await?,
        };
        let series_id = self.insert_series(new, &study).await?;
        Ok(Resolved::Insert {
            series_id,
            study_id: study.id,
        })
    }

    /// One multi-row INSERT of file rows (instance id, file, created at), queued to go with the
    /// COMMIT; a read of file rows in the batch flushes it first.
    fn insert_files(&mut self, files: &[(i64, &StoredFile, i64)]) {
        if files.is_empty() {
            return;
        }
        let sql = format!(
            "{} {}",
            INSERT_FILES_HEAD,
            values_placeholders_from(self.tail.first_placeholder(), files.len(), 6)
        );
        let mut params = Vec::with_capacity(files.len() * 6);
        for (instance_id, file, now) in files {
            params.extend([
                Param::Int(*instance_id),
                Param::Int(file.filesystem_id),
                Param::Text(file.rel_path.clone()),
                Param::Int(file.size as i64),
                Param::Text(file.sha256.clone()),
                Param::Int(*now),
            ]);
        }
        self.tail.push(sql, params);
    }

    /// One multi-row upsert of metadata rows, queued with the file rows.
    fn insert_metadata(&mut self, rows: &[(i64, &Vec<u8>)]) {
        if rows.is_empty() {
            return;
        }
        let sql = format!(
            "{} {} {}",
            INSERT_METADATA_HEAD,
            values_placeholders_from(self.tail.first_placeholder(), rows.len(), 2),
            INSERT_METADATA_TAIL
        );
        let mut params = Vec::with_capacity(rows.len() * 2);
        for (instance_id, metadata) in rows {
            params.extend([Param::Int(*instance_id), Param::Bytes((*metadata).clone())]);
        }
        self.tail.push(sql, params);
    }

    /// One multi-row INSERT for the batch's new instances; returns the ids by SOP Instance
    /// UID. Instances already stored are not returned (ON CONFLICT DO NOTHING).
    async fn insert_instances(
        &mut self,
        batch: &[NewInstance],
        rows: &[(usize, i64, i64)],
    ) -> IndexResult<HashMap<String, i64>> {
        if rows.is_empty() {
            return Ok(HashMap::new());
        }
        let sql = self
            .with_begin(format!(
                "{} {} {}",
                INSERT_INSTANCES_HEAD,
                values_placeholders(rows.len(), 8),
                INSERT_INSTANCES_TAIL
            ))
            .await?;
        let mut query = sqlx::query_as::<_, (i64, String)>(&sql);
        for &(position, series_id, _) in rows {
            let new = &batch[position];
            let instance = &new.record.instance;
            query = query
                .bind(&instance.sop_instance_uid)
                .bind(series_id)
                .bind(&instance.sop_class_uid)
                .bind(instance.instance_number)
                .bind(&instance.transfer_syntax)
                .bind(instance.number_of_frames)
                .bind(new.received_at)
                .bind(new.held.size() as i64);
        }
        let returned = query.fetch_all(&mut *self.conn).await?;
        Ok(returned.into_iter().map(|(id, uid)| (uid, id)).collect())
    }

    /// For an instance that is already stored: the outcome the duplicate policy gives, or a
    /// conflict if it is stored in another series. `None` when it is not stored.
    async fn existing_instance(
        &mut self,
        new: &NewInstance,
        series: Option<(i64, i64)>,
    ) -> IndexResult<Option<StoreOutcome>> {
        let record = &new.record;
        let found: Option<(i64, i64, String)> = sqlx::query_as(FIND_INSTANCE)
            .bind(&record.instance.sop_instance_uid)
            .fetch_optional(&mut *self.conn)
            .await?;
        let Some((instance_id, series_fk, stored_series_uid)) = found else {
            return Ok(None);
        };
        match series {
            Some((series_id, study_id)) if series_id == series_fk => Ok(Some(match new.policy {
                DuplicatePolicy::KeepFirst => StoreOutcome::DuplicateKept,
                DuplicatePolicy::Reject => StoreOutcome::DuplicateRejected,
                DuplicatePolicy::Replace => {
                    let ids = (instance_id, series_id, study_id);
                    self.give_file(new, ids, true).await?
                }
                DuplicatePolicy::FillMissing => {
                    let ids = (instance_id, series_id, study_id);
                    self.give_file(new, ids, false).await?
                }
            })),
            _ => Ok(Some(StoreOutcome::Conflict(
                IntegrityConflict::InstanceInOtherSeries {
                    sop_instance_uid: record.instance.sop_instance_uid.clone(),
                    stored_series_uid,
                    received_series_uid: record.series.series_uid.clone(),
                },
            ))),
        }
    }

    async fn find_patient(&mut self, key: &(String, String)) -> IndexResult<Option<i64>> {
        let id: Option<i64> = sqlx::query_scalar(FIND_PATIENT)
            .bind(&key.0)
            .bind(&key.1)
            .fetch_optional(&mut *self.conn)
            .await?;
        if let Some(id) = id {
            self.cache.patients.insert(key.clone(), id);
        }
        Ok(id)
    }

    async fn find_study(&mut self, uid: &str) -> IndexResult<Option<CachedStudy>> {
        let row: Option<(i64, i64, String)> = sqlx::query_as(FIND_STUDY)
            .bind(uid)
            .fetch_optional(&mut *self.conn)
            .await?;
        let study = row.map(|(id, patient_fk, patient_id)| CachedStudy {
            id,
            patient_fk,
            patient_id,
        });
        if let Some(study) = &study {
            self.cache.studies.insert(uid.to_string(), study.clone());
        }
        Ok(study)
    }

    async fn find_series(&mut self, uid: &str) -> IndexResult<Option<CachedSeries>> {
        let row: Option<(i64, i64, String)> = sqlx::query_as(FIND_SERIES)
            .bind(uid)
            .fetch_optional(&mut *self.conn)
            .await?;
        let series = row.map(|(id, study_fk, study_uid)| CachedSeries {
            id,
            study_fk,
            study_uid,
        });
        if let Some(series) = &series {
            self.cache.series.insert(uid.to_string(), series.clone());
        }
        Ok(series)
    }

    async fn insert_patient(
        &mut self,
        new: &NewInstance,
        key: (String, String),
    ) -> IndexResult<i64> {
        let patient = &new.record.patient;
        let id = sqlx::query_scalar(INSERT_PATIENT)
            .bind(&patient.patient_id)
            .bind(&patient.issuer_of_patient_id)
            .bind(&patient.patient_name)
            .bind(normalize_name(&patient.patient_name))
            .bind(&patient.birth_date)
            .bind(&patient.sex)
            .bind(new.received_at)
            .fetch_one(&mut *self.conn)
            .await?;
        self.cache.patients.insert(key, id);
        Ok(id)
    }

    async fn insert_study(
        &mut self,
        new: &NewInstance,
        patient_id: i64,
    ) -> IndexResult<CachedStudy> {
        let study = &new.record.study;
        let id = sqlx::query_scalar(INSERT_STUDY)
            .bind(&study.study_uid)
            .bind(patient_id)
            .bind(&study.study_date)
            .bind(&study.study_time)
            .bind(&study.accession_number)
            .bind(&study.study_id)
            .bind(&study.description)
            .bind(&study.referring_physician)
            .bind(normalize_name(&study.referring_physician))
            .bind(new.received_at)
            .bind(new.received_at)
            .bind(new.received_at)
            .fetch_one(&mut *self.conn)
            .await?;
        let cached = CachedStudy {
            id,
            patient_fk: patient_id,
            patient_id: new.record.patient.patient_id.clone(),
        };
        self.cache
            .studies
            .insert(study.study_uid.clone(), cached.clone());
        Ok(cached)
    }

    async fn insert_series(&mut self, new: &NewInstance, study: &CachedStudy) -> IndexResult<i64> {
        let series = &new.record.series;
        let id = sqlx::query_scalar(INSERT_SERIES)
            .bind(&series.series_uid)
            .bind(study.id)
            .bind(&series.modality)
            .bind(series.series_number)
            .bind(&series.description)
            .bind(&series.body_part)
            .bind(&new.record.source_ae)
            .bind(new.received_at)
            .bind(new.received_at)
            .fetch_one(&mut *self.conn)
            .await?;
        // The modality list is extended in SQL (another node may have added a series too), with
        // the COMMIT: the study row is shared by every batch of the study.
        let change = RowChange::AddSeries {
            modality: series.modality.clone(),
        };
        self.row_changes.push((RowOf::Study(study.id), change));
        let study_uid = new.record.study.study_uid.clone();
        self.cache.series.insert(
            series.series_uid.clone(),
            CachedSeries {
                id,
                study_fk: study.id,
                study_uid,
            },
        );
        Ok(id)
    }

    /// The new copy becomes the instance's ONLINE file where it has none; where it has one,
    /// the new copy replaces it only if `replace_existing` (else it is kept, keep-first).
    async fn give_file(
        &mut self,
        new: &NewInstance,
        ids: (i64, i64, i64),
        replace_existing: bool,
    ) -> IndexResult<StoreOutcome> {
        let instance_id = ids.0;
        // Only a file can replace a file: an instance restored from a pack changes nothing.
        let Some(new_file) = new.held.file() else {
            return Ok(StoreOutcome::DuplicateKept);
        };
        // From here the tail may write this stored instance's rows, some twice.
        self.changed_stored_instances = true;
        // The batch's queued rows include the first copy when one batch holds two.
        self.tail.flush(self.conn).await?;
        let read_counted = format!(
            "{COUNTED_BYTES}{}",
            self.dialect.lock_instance_for_file_change()
        );
        let counted_bytes: i64 = sqlx::query_scalar(&read_counted)
            .bind(instance_id)
            .fetch_one(&mut *self.conn)
            .await?;
        let old: Option<(i64, i64, String, i64, String)> = sqlx::query_as(FIND_FILE_OF_INSTANCE)
            .bind(instance_id)
            .fetch_optional(&mut *self.conn)
            .await?;
        if old.is_some() && !replace_existing {
            return Ok(StoreOutcome::DuplicateKept);
        }
        if let Some(metadata) = &new.metadata {
            self.insert_metadata(&[(instance_id, metadata)]);
        }
        if let Some((file_id, filesystem_id, rel_path, size, sha256)) = old {
            let replaced = sqlx::query(REPLACE_FILE)
                .bind(new_file.filesystem_id)
                .bind(&new_file.rel_path)
                .bind(new_file.size as i64)
                .bind(&new_file.sha256)
                .bind(new.received_at)
                .bind(file_id)
                .execute(&mut *self.conn)
                .await?
                .rows_affected();
            if replaced == 1 {
                // The counters hold the replaced file's size for it (also for instances
                // indexed before migration 0015, whose own size_bytes is 0 and is set here).
                let new_size = new_file.size as i64;
                self.set_bytes(new, ids, new_size, new_size - size);
                return Ok(StoreOutcome::Replaced {
                    old_file: StoredFile {
                        filesystem_id,
                        rel_path,
                        size: size.max(0) as u64,
                        sha256,
                    },
                });
            }
            // Retention marked the old file DELETING since it was read (it is deleted from
            // that path next): the new copy is given as to an instance without a file.
        }
        // The instance has no ONLINE file (only a nearline copy, or its file was deleted):
        // give it this one. The object was counted when it was indexed, so its size changes
        // by the difference only (instances indexed before migration 0015 have 0 there and
        // add the whole size, as they always did).
        self.insert_files(&[(instance_id, new_file, new.received_at)]);
        let size = new_file.size as i64;
        self.set_bytes(new, ids, size, size - counted_bytes);
        Ok(StoreOutcome::Stored)
    }
}

/// Person names are matched case-insensitively (C-FIND), so the index keeps an upper-case copy.
pub fn normalize_name(name: &str) -> String {
    name.trim().to_uppercase()
}
