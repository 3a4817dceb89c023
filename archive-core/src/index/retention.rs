//! ONLINE deletion and availability over SQL: retention rules, the studies a rule may free,
//! the crash-safe deletion steps, and where an instance can be read from when its ONLINE copy
//! is gone.

use super::Dialect;
use super::{Index, IndexResult, InstanceLocation};
use crate::config::RetentionRuleConfig;
use crate::query::{Attr, Level};
use std::path::PathBuf;

/// A study a retention rule could free, with what the hard constraint needs to know.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, sqlx::FromRow)]
pub struct RetentionCandidate {
    pub study_uid: String,
    pub received_at: i64,
    pub last_accessed_at: i64,
    /// Bytes of the study's ONLINE files on the rule's group (what deleting frees).
    pub online_bytes: i64,
    pub instances: i64,
    /// Instances with an ARCHIVED copy (on the rule's target, if it names one).
    pub verified: i64,
    /// Instances without one whose copy is on its way (UPLOADING or TO_ARCHIVE).
    pub awaiting_verification: i64,
    /// Instances without one whose copy failed verification.
    pub verify_failed: i64,
}

/// Where a NEARLINE-only instance is: its pack and its bytes inside it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct NearlineMember {
    pub pack_id: i64,
    pub target_name: String,
    pub object_key: String,
    pub pack_size: i64,
    pub pack_sha256: String,
    pub member_path: String,
    pub data_offset: i64,
}

/// The outcome of starting an ONLINE deletion.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeletionStart {
    /// Files now DELETING (no longer offered to retrievals).
    pub marked: u64,
    /// Instances that keep their ONLINE copy because they have no ARCHIVED copy.
    pub kept_unverified: i64,
}

async fn upsert_retention_rule_row(
    index: &Index,
    rule: &RetentionRuleConfig,
    from_config: bool,
    now: i64,
) -> IndexResult<()> {
    sqlx::query(
        "INSERT INTO retention_rule (name, group_name, schedule, not_accessed_days, \
         free_below_percent, free_target_percent, min_study_age_days, modalities, \
         calling_aes, require_target, enabled, from_config, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $13, $12, $12) \
         ON CONFLICT (name) DO UPDATE SET group_name = excluded.group_name, \
         schedule = excluded.schedule, not_accessed_days = excluded.not_accessed_days, \
         free_below_percent = excluded.free_below_percent, \
         free_target_percent = excluded.free_target_percent, \
         min_study_age_days = excluded.min_study_age_days, modalities = excluded.modalities, \
         calling_aes = excluded.calling_aes, require_target = excluded.require_target, \
         enabled = excluded.enabled, from_config = excluded.from_config, updated_at = excluded.updated_at",
    )
    .bind(&rule.name)
    .bind(&rule.group)
    .bind(&rule.schedule)
    .bind(rule.not_accessed_days.map(i64::from))
    .bind(rule.free_below_percent.map(i64::from))
    .bind(rule.free_target_percent.map(i64::from))
    .bind(i64::from(rule.min_study_age_days))
    .bind(rule.modalities.join("\\"))
    .bind(rule.calling_aes.join("\\"))
    .bind(&rule.require_target)
    .bind(i64::from(rule.enabled))
    .bind(now)
    .bind(i64::from(from_config))
    .execute(index.pool())
    .await?;
    Ok(())
}

/// Instance `i` may lose its ONLINE file: ARCHIVED copies on at least `min_copies` different
/// targets, one of them on `$2` unless `$2` is empty. (`min_copies` is a validated integer from
/// the configuration, not input, so it is written into the SQL.)
fn verified(min_copies: u32) -> String {
    // A copy counts only if it holds the bytes of the ONLINE file (when there is one): an old
    // pack of a replaced object, or a pack that disagrees with the file (kept by
    // rebuild-index), must not let the current bytes go.
    let same_bytes = "(NOT EXISTS (SELECT 1 FROM file fo WHERE fo.instance_fk = i.id \
         AND fo.status = 'OK') OR pm.sha256 IN (SELECT fo.sha256 FROM file fo \
         WHERE fo.instance_fk = i.id AND fo.status = 'OK'))";
    verified_holding(min_copies, same_bytes)
}

/// `verified`, the copies compared with the file row an `UPDATE file` is changing. On
/// PostgreSQL a subquery reads the statement's snapshot even when the row itself was changed
/// meanwhile and is rechecked: a duplicate that replaced the file's bytes just before would
/// still be compared by the old ones, and the new copy marked for deletion. `file.sha256` is
/// the row as it is when it is marked.
fn verified_for_target_row(min_copies: u32) -> String {
    verified_holding(min_copies, "pm.sha256 = file.sha256")
}

fn verified_holding(min_copies: u32, same_bytes: &str) -> String {
    format!(
        "((SELECT COUNT(DISTINCT p.target_fk) FROM pack_member pm JOIN pack p ON p.id = pm.pack_fk \
         WHERE pm.instance_fk = i.id AND p.status = 'ARCHIVED' AND {same_bytes}) >= {min_copies} \
         AND ($2 = '' OR EXISTS (SELECT 1 FROM pack_member pm JOIN pack p ON p.id = pm.pack_fk \
         JOIN nearline_target t ON t.id = p.target_fk WHERE pm.instance_fk = i.id \
         AND p.status = 'ARCHIVED' AND t.name = $2 AND {same_bytes})))"
    )
}

impl Index {
    /// Records the configured retention rules (by name); rules added at run time are kept.
    pub async fn sync_retention_rules(
        &self,
        rules: &[RetentionRuleConfig],
        now: i64,
    ) -> IndexResult<()> {
        // A rule removed from the config file stops: its row goes (rules added at run time stay).
        super::nearline::delete_config_rows_except(
            self,
            "retention_rule",
            rules.iter().map(|r| r.name.as_str()),
        )
        .await?;
        for rule in rules {
            upsert_retention_rule_row(self, rule, true, now).await?;
        }
        Ok(())
    }

    /// Adds a retention rule or replaces the one with the same name (REST API).
    pub async fn save_retention_rule(
        &self,
        rule: &RetentionRuleConfig,
        now: i64,
    ) -> IndexResult<()> {
        upsert_retention_rule_row(self, rule, false, now).await
    }

    pub async fn retention_rules(&self) -> IndexResult<Vec<RetentionRuleConfig>> {
        let rows: Vec<RetentionRuleRow> = sqlx::query_as(
            "SELECT name, group_name, schedule, not_accessed_days, free_below_percent, \
             free_target_percent, min_study_age_days, modalities, calling_aes, require_target, \
             enabled FROM retention_rule ORDER BY name",
        )
        .fetch_all(self.pool())
        .await?;
        Ok(rows.into_iter().map(RetentionRuleConfig::from).collect())
    }

    /// Studies with ONLINE files on `rule.group` that match the rule's filters, least
    /// recently accessed first.
    pub async fn retention_candidates(
        &self,
        rule: &RetentionRuleConfig,
        limit: i64,
    ) -> IndexResult<Vec<RetentionCandidate>> {
        let (series, binds) =
            super::placeholders::series_filter("x", &rule.modalities, &rule.calling_aes, 3);
        let filter = if series.is_empty() {
            String::new()
        } else {
            format!(" AND EXISTS (SELECT 1 FROM series x WHERE x.study_fk = s.id{series})")
        };
        let instances_of =
            "FROM series se JOIN instance i ON i.series_fk = se.id WHERE se.study_fk = s.id";
        let verified = verified(self.min_archived_copies());
        let sql = format!(
            "SELECT s.study_uid, s.received_at, s.last_accessed_at, \
               (SELECT CAST(COALESCE(SUM(f.size_bytes), 0) AS BIGINT) {instances_of_files} AND fs.group_name = $1) AS online_bytes, \
               (SELECT COUNT(*) {instances_of}) AS instances, \
               (SELECT COUNT(*) {instances_of} AND {verified}) AS verified, \
               (SELECT COUNT(*) {instances_of} AND NOT {verified} AND EXISTS (SELECT 1 FROM pack_member pm \
                  JOIN pack p ON p.id = pm.pack_fk WHERE pm.instance_fk = i.id \
                  AND p.status IN ('UPLOADING', 'TO_ARCHIVE'))) AS awaiting_verification, \
               (SELECT COUNT(*) {instances_of} AND NOT {verified} AND EXISTS (SELECT 1 FROM pack_member pm \
                  JOIN pack p ON p.id = pm.pack_fk WHERE pm.instance_fk = i.id \
                  AND p.status = 'VERIFY_FAILED')) AS verify_failed \
             FROM study s WHERE EXISTS (SELECT 1 {instances_of_files} AND fs.group_name = $1){filter} \
             ORDER BY s.last_accessed_at, s.id LIMIT {limit}",
            instances_of_files = "FROM series se JOIN instance i ON i.series_fk = se.id \
                JOIN file f ON f.instance_fk = i.id AND f.status = 'OK' \
                JOIN filesystem fs ON fs.id = f.filesystem_fk WHERE se.study_fk = s.id",
        );
        let mut query = sqlx::query_as(&sql)
            .bind(&rule.group)
            .bind(&rule.require_target);
        for value in &binds {
            query = query.bind(value.as_str());
        }
        Ok(query.fetch_all(self.pool()).await?)
    }

    /// Step 1 of a deletion, one transaction: marks DELETING the study's ONLINE files whose
    /// instance has an ARCHIVED copy (on `require_target` if not empty) and updates
    /// availability. From here on retrievals use the NEARLINE copy.
    pub async fn begin_online_deletion(
        &self,
        study_uid: &str,
        require_target: &str,
    ) -> IndexResult<DeletionStart> {
        let mut tx = self.pool().begin().await?;
        lock_study_instances(&mut tx, self.dialect, study_uid).await?;
        let study_instances = "SELECT i.id FROM instance i JOIN series se ON se.id = i.series_fk \
            JOIN study s ON s.id = se.study_fk WHERE s.study_uid = $1";
        // The constraint is part of the UPDATE itself: an instance that arrives meanwhile has
        // no ARCHIVED copy and keeps its file, whatever was checked before.
        let marked = sqlx::query(&format!(
            "UPDATE file SET status = 'DELETING' WHERE status = 'OK' \
             AND instance_fk IN ({study_instances}) \
             AND EXISTS (SELECT 1 FROM instance i WHERE i.id = file.instance_fk AND {verified})",
            verified = verified_for_target_row(self.min_archived_copies())
        ))
        .bind(study_uid)
        .bind(require_target)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        let (kept_unverified,): (i64,) = sqlx::query_as(&format!(
            "SELECT COUNT(*) FROM file f JOIN instance i ON i.id = f.instance_fk \
             WHERE f.status = 'OK' AND f.instance_fk IN ({study_instances}) AND NOT {verified}",
            verified = verified(self.min_archived_copies())
        ))
        .bind(study_uid)
        .bind(require_target)
        .fetch_one(&mut *tx)
        .await?;
        update_availability(&mut tx, self.dialect, study_uid).await?;
        tx.commit().await?;
        Ok(DeletionStart {
            marked,
            kept_unverified,
        })
    }

    /// The study's DELETING files (step 2 unlinks them, step 3 drops their rows).
    pub async fn deleting_files(&self, study_uid: &str) -> IndexResult<Vec<(i64, PathBuf)>> {
        let rows: Vec<(i64, String, String)> = sqlx::query_as(
            "SELECT f.id, fs.path, f.path FROM file f JOIN filesystem fs ON fs.id = f.filesystem_fk \
             JOIN instance i ON i.id = f.instance_fk JOIN series se ON se.id = i.series_fk \
             JOIN study s ON s.id = se.study_fk WHERE s.study_uid = $1 AND f.status = 'DELETING' \
             ORDER BY f.id",
        )
        .bind(study_uid)
        .fetch_all(self.pool())
        .await?;
        Ok(rows
            .into_iter()
            .map(|(id, root, rel)| (id, std::path::Path::new(&root).join(rel)))
            .collect())
    }

    pub async fn remove_file_rows(&self, file_ids: &[i64]) -> IndexResult<()> {
        for chunk in file_ids.chunks(500) {
            // Their fixity history goes with them: SQLite may give a later file the same id.
            let history = format!(
                "DELETE FROM fixity_check WHERE file_fk IN (SELECT id FROM file \
                 WHERE status = 'DELETING' AND id IN ({}))",
                super::placeholders::placeholder_list(1, chunk.len())
            );
            let mut query = sqlx::query(&history);
            for id in chunk {
                query = query.bind(*id);
            }
            query.execute(self.pool()).await?;
            let sql = format!(
                "DELETE FROM file WHERE status = 'DELETING' AND id IN ({})",
                super::placeholders::placeholder_list(1, chunk.len())
            );
            let mut query = sqlx::query(&sql);
            for id in chunk {
                query = query.bind(*id);
            }
            query.execute(self.pool()).await?;
        }
        Ok(())
    }

    /// Every study with DELETING files: deletions a crash interrupted.
    pub async fn studies_with_deleting_files(&self) -> IndexResult<Vec<String>> {
        let rows: Vec<(String,)> = sqlx::query_as(
            "SELECT DISTINCT s.study_uid FROM file f JOIN instance i ON i.id = f.instance_fk \
             JOIN series se ON se.id = i.series_fk JOIN study s ON s.id = se.study_fk \
             WHERE f.status = 'DELETING'",
        )
        .fetch_all(self.pool())
        .await?;
        Ok(rows.into_iter().map(|(uid,)| uid).collect())
    }

    /// Recomputes ONLINE / NEARLINE / OFFLINE for the study's instances, series and itself.
    pub async fn recompute_availability(&self, study_uid: &str) -> IndexResult<()> {
        let mut tx = self.pool().begin().await?;
        lock_study_instances(&mut tx, self.dialect, study_uid).await?;
        update_availability(&mut tx, self.dialect, study_uid).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Records a restored ONLINE file for an instance (restore from NEARLINE), unless it got
    /// one since the restore looked (a copy of it received under `fill-missing`, on this node
    /// or another): false then, and the caller removes its copy. The instance's row is locked
    /// first ([`Dialect::lock_instance_for_file_change`]), as the ingest writer locks it before
    /// giving a file, so the two cannot both see no file.
    pub async fn add_online_file(
        &self,
        sop_uid: &str,
        file: &crate::model::StoredFile,
        now: i64,
    ) -> IndexResult<bool> {
        let mut tx = self.pool().begin().await?;
        // SQLite: no lock to take, and a read first would make the INSERT upgrade a read
        // transaction (SQLITE_BUSY_SNAPSHOT if another connection wrote in between).
        if self.dialect == Dialect::Postgres {
            let lock = format!(
                "SELECT id FROM instance WHERE sop_uid = $1{}",
                self.dialect.lock_instance_for_file_change()
            );
            sqlx::query(&lock)
                .bind(sop_uid)
                .fetch_optional(&mut *tx)
                .await?;
        }
        let inserted = sqlx::query(
            "INSERT INTO file (instance_fk, filesystem_fk, path, size_bytes, sha256, status, created_at) \
             SELECT i.id, $1, $2, $3, $4, 'OK', $5 FROM instance i WHERE i.sop_uid = $6 \
             AND NOT EXISTS (SELECT 1 FROM file f WHERE f.instance_fk = i.id AND f.status = 'OK')",
        )
        .bind(file.filesystem_id)
        .bind(&file.rel_path)
        .bind(file.size as i64)
        .bind(&file.sha256)
        .bind(now)
        .bind(sop_uid)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok(inserted == 1)
    }

    /// Instances under the given unique keys that have no ONLINE file but an ARCHIVED copy.
    pub async fn nearline_locations(
        &self,
        level: Level,
        uids: &[String],
    ) -> IndexResult<Vec<InstanceLocation>> {
        if uids.is_empty() {
            return Ok(Vec::new());
        }
        let sql = nearline_locations_sql(level, uids.len());
        let mut query = sqlx::query_as::<_, NearlineLocationRow>(&sql);
        for uid in uids {
            query = query.bind(uid.as_str());
        }
        let rows = query.fetch_all(self.pool()).await?;
        if rows.is_empty() {
            // Every instance has its ONLINE file (the usual case): no targets to rank.
            return Ok(Vec::new());
        }
        let priority: std::collections::HashMap<String, u32> = self
            .targets()
            .await?
            .into_iter()
            .map(|t| (t.spec.name, t.spec.priority))
            .collect();
        // Rows of one instance are adjacent (ORDER BY); each becomes one location whose copies
        // are ordered by target priority, then newest pack first.
        let mut locations: Vec<InstanceLocation> = Vec::new();
        let mut copies: Vec<NearlineMember> = Vec::new();
        for row in rows {
            if locations.last().is_some_and(|l| l.sop_uid != row.sop_uid) {
                settle_copies(locations.last_mut(), &mut copies, &priority);
            }
            let location = InstanceLocation::from(row);
            if locations
                .last()
                .is_none_or(|l| l.sop_uid != location.sop_uid)
            {
                locations.push(location.clone());
            }
            copies.extend(location.nearline);
        }
        settle_copies(locations.last_mut(), &mut copies, &priority);
        Ok(locations)
    }
}

/// An instance with no ONLINE file and the newest ARCHIVED pack member holding it.
#[derive(sqlx::FromRow)]
struct NearlineLocationRow {
    sop_uid: String,
    sop_class_uid: String,
    series_uid: String,
    study_uid: String,
    instance_number: Option<i64>,
    transfer_syntax: String,
    number_of_frames: Option<i64>,
    pack_id: i64,
    target_name: String,
    object_key: String,
    pack_size: i64,
    pack_sha256: String,
    member_path: String,
    data_offset: i64,
    size_bytes: i64,
    sha256: String,
}

/// Gives `location` its copies in the order retrieval tries them.
fn settle_copies(
    location: Option<&mut InstanceLocation>,
    copies: &mut Vec<NearlineMember>,
    priority: &std::collections::HashMap<String, u32>,
) {
    let Some(location) = location else { return };
    copies.sort_by_key(|c| {
        (
            priority.get(&c.target_name).copied().unwrap_or(u32::MAX),
            std::cmp::Reverse(c.pack_id),
        )
    });
    let mut ordered = std::mem::take(copies).into_iter();
    location.nearline = ordered.next();
    location.nearline_fallbacks = ordered.collect();
}

impl From<NearlineLocationRow> for InstanceLocation {
    fn from(row: NearlineLocationRow) -> InstanceLocation {
        InstanceLocation {
            sop_uid: row.sop_uid,
            sop_class_uid: row.sop_class_uid,
            series_uid: row.series_uid,
            study_uid: row.study_uid,
            instance_number: row.instance_number,
            transfer_syntax: row.transfer_syntax,
            number_of_frames: row.number_of_frames,
            filesystem_id: 0,
            filesystem_path: String::new(),
            rel_path: String::new(),
            size_bytes: row.size_bytes,
            sha256: row.sha256,
            nearline: Some(NearlineMember {
                pack_id: row.pack_id,
                target_name: row.target_name,
                object_key: row.object_key,
                pack_size: row.pack_size,
                pack_sha256: row.pack_sha256,
                member_path: row.member_path,
                data_offset: row.data_offset,
            }),
            nearline_fallbacks: Vec::new(),
        }
    }
}

/// A retention rule as stored.
#[derive(sqlx::FromRow)]
struct RetentionRuleRow {
    name: String,
    group_name: String,
    schedule: String,
    not_accessed_days: Option<i64>,
    free_below_percent: Option<i64>,
    free_target_percent: Option<i64>,
    min_study_age_days: i64,
    modalities: String,
    calling_aes: String,
    require_target: String,
    enabled: i64,
}

impl From<RetentionRuleRow> for RetentionRuleConfig {
    fn from(row: RetentionRuleRow) -> RetentionRuleConfig {
        let list = super::placeholders::split_list;
        RetentionRuleConfig {
            name: row.name,
            group: row.group_name,
            schedule: row.schedule,
            not_accessed_days: row.not_accessed_days.and_then(|d| u32::try_from(d).ok()),
            free_below_percent: row.free_below_percent.and_then(|p| u8::try_from(p).ok()),
            free_target_percent: row.free_target_percent.and_then(|p| u8::try_from(p).ok()),
            min_study_age_days: u32::try_from(row.min_study_age_days).unwrap_or(0),
            modalities: list(row.modalities),
            calling_aes: list(row.calling_aes),
            require_target: row.require_target,
            enabled: row.enabled != 0,
        }
    }
}

/// On PostgreSQL, locks the study's instance rows in SOP Instance UID order before anything
/// else of the study, the order in which an ingest batch locks the instances whose file it
/// changes (`ingest_tx.rs`). Otherwise the UPDATEs that follow lock file and instance rows in
/// whatever order their plans meet them, and a batch holding one instance while it waits for
/// another (or for that instance's file row) could close a cycle with them. (SQLite has one
/// writer and no row locks.)
async fn lock_study_instances(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    dialect: Dialect,
    study_uid: &str,
) -> IndexResult<()> {
    // Byte order (COLLATE "C"), as the writer sorts UIDs in Rust: a database's default
    // collation may order "1.23.4" and "1.2.35" the other way round.
    let lock = dialect.lock_in_order(
        "SELECT i.id FROM instance i JOIN series se ON se.id = i.series_fk \
         JOIN study s ON s.id = se.study_fk WHERE s.study_uid = $1",
        "i",
        "i.sop_uid COLLATE \"C\"",
    );
    if let Some(lock) = lock {
        sqlx::query(&lock)
            .bind(study_uid)
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

/// The caller has locked the study's instances ([`lock_study_instances`]).
async fn update_availability(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    dialect: Dialect,
    study_uid: &str,
) -> IndexResult<()> {
    let [instances, series, study] = availability_updates();
    // The study's series in id order, as ingest batches lock them, before they are written.
    let lock_series = dialect.lock_in_order(
        "SELECT se.id FROM series se JOIN study s ON s.id = se.study_fk WHERE s.study_uid = $1",
        "se",
        "se.id",
    );
    let statements = [Some(instances), lock_series, Some(series), Some(study)];
    for statement in statements.into_iter().flatten() {
        sqlx::query(&statement)
            .bind(study_uid)
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

/// Instances under `count` unique keys of `level` (`$1`…) that have no ONLINE file, with
/// their ARCHIVED copies.
fn nearline_locations_sql(level: Level, count: usize) -> String {
    let column = Attr::unique_key(level).column(level);
    format!(
        "SELECT i.sop_uid, i.sop_class_uid, se.series_uid, st.study_uid, i.instance_number, \
         i.transfer_syntax, i.number_of_frames, pk.id AS pack_id, t.name AS target_name, \
         pk.object_key, pk.size_bytes AS pack_size, pk.sha256 AS pack_sha256, pm.member_path, \
         pm.data_offset, pm.size_bytes, pm.sha256 \
         FROM instance i JOIN series se ON se.id = i.series_fk JOIN study st ON st.id = se.study_fk \
         JOIN patient p ON p.id = st.patient_fk \
         JOIN pack_member pm ON pm.instance_fk = i.id \
         JOIN pack pk ON pk.id = pm.pack_fk AND pk.status = 'ARCHIVED' \
         JOIN nearline_target t ON t.id = pk.target_fk \
         WHERE {column} IN ({}) \
         AND NOT EXISTS (SELECT 1 FROM file f WHERE f.instance_fk = i.id AND f.status = 'OK') \
         ORDER BY se.series_number, se.series_uid, i.instance_number, i.sop_uid, pk.id DESC",
        super::placeholders::placeholder_list(1, count)
    )
}

/// ONLINE if any ONLINE file, else NEARLINE if an ARCHIVED copy, else OFFLINE.
const INSTANCE_AVAILABILITY: &str = "CASE \
    WHEN EXISTS (SELECT 1 FROM file f WHERE f.instance_fk = instance.id AND f.status = 'OK') THEN 'ONLINE' \
    WHEN EXISTS (SELECT 1 FROM pack_member pm JOIN pack p ON p.id = pm.pack_fk \
      WHERE pm.instance_fk = instance.id AND p.status = 'ARCHIVED') THEN 'NEARLINE' \
    ELSE 'OFFLINE' END";
const SERIES_AVAILABILITY: &str = "CASE \
    WHEN EXISTS (SELECT 1 FROM instance i WHERE i.series_fk = series.id AND i.availability = 'ONLINE') THEN 'ONLINE' \
    WHEN EXISTS (SELECT 1 FROM instance i WHERE i.series_fk = series.id AND i.availability = 'NEARLINE') THEN 'NEARLINE' \
    ELSE 'OFFLINE' END";
const STUDY_AVAILABILITY: &str = "CASE \
    WHEN EXISTS (SELECT 1 FROM series x WHERE x.study_fk = study.id AND x.availability = 'ONLINE') THEN 'ONLINE' \
    WHEN EXISTS (SELECT 1 FROM series x WHERE x.study_fk = study.id AND x.availability = 'NEARLINE') THEN 'NEARLINE' \
    ELSE 'OFFLINE' END";

/// The study's instances, then series, then the study itself get the availability their
/// files, copies or members give them (`$1` is the Study Instance UID). Only rows whose
/// availability changes are written: fewer writes on a large study, and on PostgreSQL no
/// lock on an instance committed after the caller locked the study's instances (it would be
/// taken out of their order).
fn availability_updates() -> [String; 3] {
    [
        format!(
            "UPDATE instance SET availability = {INSTANCE_AVAILABILITY} \
             WHERE series_fk IN (SELECT se.id FROM series se JOIN study s ON s.id = se.study_fk \
             WHERE s.study_uid = $1) AND availability <> {INSTANCE_AVAILABILITY}"
        ),
        format!(
            "UPDATE series SET availability = {SERIES_AVAILABILITY} \
             WHERE study_fk = (SELECT id FROM study WHERE study_uid = $1) \
             AND availability <> {SERIES_AVAILABILITY}"
        ),
        format!(
            "UPDATE study SET availability = {STUDY_AVAILABILITY} \
             WHERE study_uid = $1 AND availability <> {STUDY_AVAILABILITY}"
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::super::plan_check::{assert_no_status_walk, sqlite_plan};
    use super::*;

    #[tokio::test]
    async fn nearline_locations_start_from_the_keys_not_from_every_archived_pack() {
        for level in [Level::Patient, Level::Study, Level::Series, Level::Image] {
            let plan = sqlite_plan(&nearline_locations_sql(level, 2)).await;
            assert_no_status_walk("NEARLINE locations", &plan);
            assert!(
                plan.iter()
                    .any(|step| step.contains("pack_member_instance_idx")),
                "{level:?}: pack members should be found by instance: {plan:#?}"
            );
        }
    }

    #[tokio::test]
    async fn availability_recompute_reads_only_the_studys_rows() {
        for sql in availability_updates() {
            let plan = sqlite_plan(&sql).await;
            assert_no_status_walk("availability recompute", &plan);
            assert!(
                !plan.iter().any(|step| step.starts_with("SCAN")),
                "availability recompute scans a whole table: {plan:#?}"
            );
        }
    }
}
