//! NEARLINE bookkeeping over SQL: targets, copy rules, packs and their members.

use super::{Index, IndexError, IndexResult};
use crate::config::{CopyRuleConfig, TargetSpec};
use crate::nearline::{MemberPlacement, PackMemberRow, PackRow, PackSource, PackStatus, TargetRow};
use std::path::Path;

/// A copy rule as stored (config rules are mirrored here at start).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct CopyRule {
    pub rule: CopyRuleConfig,
    pub from_config: bool,
}

type TargetTuple = (i64, String, i64);

fn target_row((id, spec, from_config): TargetTuple) -> IndexResult<TargetRow> {
    let spec: TargetSpec = serde_json::from_str(&spec).map_err(|e| {
        IndexError::Database(sqlx::Error::Decode(
            format!("nearline_target {id} has unreadable settings: {e}").into(),
        ))
    })?;
    Ok(TargetRow {
        id,
        spec,
        from_config: from_config != 0,
    })
}

fn spec_json(spec: &TargetSpec) -> IndexResult<String> {
    serde_json::to_string(spec)
        .map_err(|e| IndexError::Database(sqlx::Error::Encode(e.to_string().into())))
}

/// Deletes the rows of `table` that came from the config file and are not named any more.
pub(super) async fn delete_config_rows_except<'a>(
    index: &Index,
    table: &str,
    names: impl Iterator<Item = &'a str>,
) -> IndexResult<()> {
    let names: Vec<&str> = names.collect();
    let sql = if names.is_empty() {
        format!("DELETE FROM {table} WHERE from_config = 1")
    } else {
        format!(
            "DELETE FROM {table} WHERE from_config = 1 AND name NOT IN ({})",
            super::placeholders::placeholder_list(1, names.len())
        )
    };
    let mut query = sqlx::query(&sql);
    for name in names {
        query = query.bind(name);
    }
    query.execute(index.pool()).await?;
    Ok(())
}

/// A copy rule as stored.
#[derive(sqlx::FromRow)]
struct CopyRuleRow {
    name: String,
    target_name: String,
    schedule: String,
    stable_minutes: i64,
    min_age_days: i64,
    modalities: String,
    calling_aes: String,
    enabled: i64,
    from_config: i64,
}

impl From<CopyRuleRow> for CopyRule {
    fn from(row: CopyRuleRow) -> CopyRule {
        let split = super::placeholders::split_list;
        // One target is stored as its name, several as a backslash-separated list.
        let mut targets = split(row.target_name);
        let target = if targets.len() == 1 {
            targets.remove(0)
        } else {
            String::new()
        };
        CopyRule {
            rule: CopyRuleConfig {
                name: row.name,
                target,
                targets,
                schedule: row.schedule,
                stable_minutes: u32::try_from(row.stable_minutes).unwrap_or(0),
                min_age_days: u32::try_from(row.min_age_days).unwrap_or(0),
                modalities: split(row.modalities),
                calling_aes: split(row.calling_aes),
                enabled: row.enabled != 0,
            },
            from_config: row.from_config != 0,
        }
    }
}

/// One pack member row to insert.
pub(super) struct MemberRow<'a> {
    pub instance_id: i64,
    pub member_path: &'a str,
    pub data_offset: u64,
    pub size: u64,
    pub sha256: &'a str,
    /// Empty when not known (packs found by rebuild-index).
    pub blake3: &'a str,
}

/// Inserts a pack's member rows in multi-row statements: a study of thousands of instances
/// commits in a few statements.
pub(super) async fn insert_pack_members(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    pack_id: i64,
    rows: &[MemberRow<'_>],
) -> IndexResult<()> {
    for chunk in rows.chunks(100) {
        let sql = format!(
            "INSERT INTO pack_member (pack_fk, instance_fk, member_path, data_offset, \
             size_bytes, sha256, blake3) VALUES {}",
            super::placeholders::values_placeholders(chunk.len(), 7)
        );
        let mut query = sqlx::query(&sql);
        for row in chunk {
            query = query
                .bind(pack_id)
                .bind(row.instance_id)
                .bind(row.member_path)
                .bind(row.data_offset as i64)
                .bind(row.size as i64)
                .bind(row.sha256)
                .bind(row.blake3);
        }
        query.execute(&mut **tx).await?;
    }
    Ok(())
}

/// An ONLINE file not yet on the target, as a pack member to be.
#[derive(sqlx::FromRow)]
struct UnpackedRow {
    instance_id: i64,
    sop_uid: String,
    series_uid: String,
    sop_class_uid: String,
    transfer_syntax: String,
    filesystem_path: String,
    rel_path: String,
    size_bytes: i64,
    sha256: String,
    received_at: i64,
}

impl From<UnpackedRow> for PackSource {
    fn from(row: UnpackedRow) -> PackSource {
        PackSource {
            instance_id: row.instance_id,
            file_path: Path::new(&row.filesystem_path).join(row.rel_path),
            sop_uid: row.sop_uid,
            series_uid: row.series_uid,
            sop_class_uid: row.sop_class_uid,
            transfer_syntax: row.transfer_syntax,
            size: u64::try_from(row.size_bytes).unwrap_or(0),
            sha256: row.sha256,
            received_at: row.received_at,
        }
    }
}

const PACK_COLUMNS: &str = "p.id, s.study_uid, p.target_fk AS target_id, t.name AS target_name, \
    p.object_key, p.status, p.size_bytes, p.sha256, p.member_count, p.error, p.created_at, \
    p.verified_at";

impl Index {
    async fn upsert_copy_rule_row(
        &self,
        rule: &CopyRuleConfig,
        from_config: bool,
        now: i64,
    ) -> IndexResult<()> {
        sqlx::query(
            "INSERT INTO copy_rule (name, target_name, schedule, stable_minutes, min_age_days, \
             modalities, calling_aes, enabled, from_config, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $10, $9, $9) ON CONFLICT (name) DO UPDATE SET \
             target_name = excluded.target_name, schedule = excluded.schedule, \
             stable_minutes = excluded.stable_minutes, min_age_days = excluded.min_age_days, \
             modalities = excluded.modalities, calling_aes = excluded.calling_aes, \
             enabled = excluded.enabled, from_config = excluded.from_config, updated_at = excluded.updated_at",
        )
        .bind(&rule.name)
        .bind(rule.target_names().join("\\"))
        .bind(&rule.schedule)
        .bind(i64::from(rule.stable_minutes))
        .bind(i64::from(rule.min_age_days))
        .bind(rule.modalities.join("\\"))
        .bind(rule.calling_aes.join("\\"))
        .bind(i64::from(rule.enabled))
        .bind(now)
        .bind(i64::from(from_config))
        .execute(self.pool())
        .await?;
        Ok(())
    }

    async fn upsert_target_row(
        &self,
        spec: &TargetSpec,
        from_config: bool,
        now: i64,
    ) -> IndexResult<()> {
        sqlx::query(
            "INSERT INTO nearline_target (name, kind, spec, from_config, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $5) ON CONFLICT (name) DO UPDATE SET kind = excluded.kind, \
             spec = excluded.spec, from_config = excluded.from_config, updated_at = excluded.updated_at",
        )
        .bind(&spec.name)
        .bind(spec.kind.as_str())
        .bind(spec_json(spec)?)
        .bind(i64::from(from_config))
        .bind(now)
        .execute(self.pool())
        .await?;
        Ok(())
    }
}

/// NEARLINE bookkeeping: targets, packs, their members and copy rules.
impl Index {
    /// Records the configured targets (by name); targets added at run time are kept.
    pub async fn sync_targets(&self, specs: &[TargetSpec], now: i64) -> IndexResult<()> {
        for spec in specs {
            self.upsert_target_row(spec, true, now).await?;
        }
        Ok(())
    }

    /// Adds a target or replaces the settings of the one with the same name.
    pub async fn upsert_target(&self, spec: &TargetSpec, now: i64) -> IndexResult<()> {
        self.upsert_target_row(spec, false, now).await
    }

    pub async fn targets(&self) -> IndexResult<Vec<TargetRow>> {
        let rows: Vec<TargetTuple> =
            sqlx::query_as("SELECT id, spec, from_config FROM nearline_target ORDER BY name")
                .fetch_all(self.pool())
                .await?;
        rows.into_iter().map(target_row).collect()
    }

    pub async fn target(&self, name: &str) -> IndexResult<Option<TargetRow>> {
        let row: Option<TargetTuple> =
            sqlx::query_as("SELECT id, spec, from_config FROM nearline_target WHERE name = $1")
                .bind(name)
                .fetch_optional(self.pool())
                .await?;
        row.map(target_row).transpose()
    }

    /// Records the configured copy rules (by name); rules added at run time are kept.
    pub async fn sync_copy_rules(&self, rules: &[CopyRuleConfig], now: i64) -> IndexResult<()> {
        // A rule removed from the config file stops: its row goes (rules added at run time stay).
        delete_config_rows_except(self, "copy_rule", rules.iter().map(|r| r.name.as_str())).await?;
        for rule in rules {
            self.upsert_copy_rule_row(rule, true, now).await?;
        }
        Ok(())
    }

    /// Adds a copy rule or replaces the one with the same name (REST API).
    pub async fn save_copy_rule(&self, rule: &CopyRuleConfig, now: i64) -> IndexResult<()> {
        self.upsert_copy_rule_row(rule, false, now).await
    }

    pub async fn copy_rules(&self) -> IndexResult<Vec<CopyRule>> {
        let rows: Vec<CopyRuleRow> = sqlx::query_as(
            "SELECT name, target_name, schedule, stable_minutes, min_age_days, modalities, \
             calling_aes, enabled, from_config FROM copy_rule ORDER BY name",
        )
        .fetch_all(self.pool())
        .await?;
        Ok(rows.into_iter().map(CopyRule::from).collect())
    }

    /// Studies the rule selects that have ONLINE instances without a live copy on the target.
    pub async fn copy_candidates(
        &self,
        rule: &CopyRuleConfig,
        target_id: i64,
        now: i64,
        limit: i64,
    ) -> IndexResult<Vec<String>> {
        let (series_filter, binds) =
            super::placeholders::series_filter("se", &rule.modalities, &rule.calling_aes, 4);
        let sql = format!(
            "SELECT s.study_uid FROM study s WHERE s.updated_at <= $1 AND s.received_at <= $2 \
             AND NOT {unfolded} \
             AND EXISTS (SELECT 1 FROM series se JOIN instance i ON i.series_fk = se.id \
                JOIN file f ON f.instance_fk = i.id \
                WHERE se.study_fk = s.id AND f.status = 'OK'{series_filter} \
                AND NOT EXISTS (SELECT 1 FROM pack_member pm JOIN pack p ON p.id = pm.pack_fk \
                    WHERE pm.instance_fk = i.id AND p.target_fk = $3 \
                    AND p.status IN ('UPLOADING', 'TO_ARCHIVE', 'ARCHIVED'))) \
             ORDER BY s.updated_at LIMIT {limit}",
            // updated_at moves when instances are folded into the row: an instance not yet
            // folded that arrived after the cutoff makes the study not stable either.
            unfolded = super::counts::study_unfolded_after!("s", "$1"),
        );
        let stable_cutoff = now - i64::from(rule.stable_minutes) * 60_000;
        let age_cutoff = now - i64::from(rule.min_age_days) * 86_400_000;
        let mut query = sqlx::query_as::<_, (String,)>(&sql)
            .bind(stable_cutoff)
            .bind(age_cutoff)
            .bind(target_id);
        for value in &binds {
            query = query.bind(value.as_str());
        }
        Ok(query
            .fetch_all(self.pool())
            .await?
            .into_iter()
            .map(|(uid,)| uid)
            .collect())
    }

    /// The study's ONLINE instances that have no copy on the target yet (none UPLOADING,
    /// TO_ARCHIVE or ARCHIVED), in series / instance order.
    pub async fn unpacked_instances(
        &self,
        study_uid: &str,
        target_id: i64,
    ) -> IndexResult<Vec<PackSource>> {
        let rows: Vec<UnpackedRow> = sqlx::query_as(
            "SELECT i.id AS instance_id, i.sop_uid, se.series_uid, i.sop_class_uid, \
             i.transfer_syntax, fs.path AS filesystem_path, f.path AS rel_path, f.size_bytes, \
             f.sha256, i.received_at \
             FROM study s JOIN series se ON se.study_fk = s.id \
             JOIN instance i ON i.series_fk = se.id JOIN file f ON f.instance_fk = i.id \
             JOIN filesystem fs ON fs.id = f.filesystem_fk \
             WHERE s.study_uid = $1 AND f.status = 'OK' \
             AND NOT EXISTS (SELECT 1 FROM pack_member pm JOIN pack p ON p.id = pm.pack_fk \
                WHERE pm.instance_fk = i.id AND p.target_fk = $2 \
                AND p.status IN ('UPLOADING', 'TO_ARCHIVE', 'ARCHIVED')) \
             ORDER BY se.series_number, se.id, i.instance_number, i.id",
        )
        .bind(study_uid)
        .bind(target_id)
        .fetch_all(self.pool())
        .await?;
        Ok(rows.into_iter().map(PackSource::from).collect())
    }

    /// Marks the study's UPLOADING packs on the target ABANDONED, and returns (id, key) of
    /// every ABANDONED pack whose leftovers were not removed yet: the caller removes them
    /// and calls [`Index::mark_pack_discarded`]. An upload cut off by an outage
    /// could not be cleaned up then; it is cleaned up by the attempt that finds S3 back.
    pub async fn abandon_unfinished_packs(
        &self,
        study_uid: &str,
        target_id: i64,
        now: i64,
    ) -> IndexResult<Vec<(i64, String)>> {
        sqlx::query(
            "UPDATE pack SET status = 'ABANDONED', updated_at = $1, \
             error = 'upload did not finish (interrupted or failed)' \
             WHERE status = 'UPLOADING' AND target_fk = $2 \
             AND study_fk = (SELECT id FROM study WHERE study_uid = $3)",
        )
        .bind(now)
        .bind(target_id)
        .bind(study_uid)
        .execute(self.pool())
        .await?;
        Ok(sqlx::query_as(
            "SELECT id, object_key FROM pack WHERE status = 'ABANDONED' AND discarded_at IS NULL \
             AND target_fk = $1 AND study_fk = (SELECT id FROM study WHERE study_uid = $2) \
             ORDER BY id",
        )
        .bind(target_id)
        .bind(study_uid)
        .fetch_all(self.pool())
        .await?)
    }

    pub async fn mark_pack_discarded(&self, pack_id: i64, now: i64) -> IndexResult<()> {
        sqlx::query("UPDATE pack SET discarded_at = $1 WHERE id = $2")
            .bind(now)
            .bind(pack_id)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// Records a pack about to be uploaded (UPLOADING) and returns its id.
    pub async fn begin_pack(
        &self,
        study_uid: &str,
        target_id: i64,
        object_key: &str,
        job_id: i64,
        now: i64,
    ) -> IndexResult<i64> {
        let (id,): (i64,) = sqlx::query_as(
            "INSERT INTO pack (study_fk, target_fk, object_key, status, job_fk, created_at, updated_at) \
             SELECT id, $1, $2, 'UPLOADING', $3, $4, $4 FROM study WHERE study_uid = $5 RETURNING id",
        )
        .bind(target_id)
        .bind(object_key)
        .bind(job_id)
        .bind(now)
        .bind(study_uid)
        .fetch_one(self.pool())
        .await?;
        Ok(id)
    }

    /// Records a finished upload: the members with their placements, status TO_ARCHIVE.
    /// `false` if the pack was no longer UPLOADING (abandoned by another node meanwhile).
    pub async fn complete_pack(
        &self,
        pack_id: i64,
        size: u64,
        sha256: &str,
        members: &[(PackSource, MemberPlacement)],
        now: i64,
    ) -> IndexResult<bool> {
        let mut tx = self.pool().begin().await?;
        let updated = sqlx::query(
            "UPDATE pack SET status = 'TO_ARCHIVE', size_bytes = $1, sha256 = $2, \
             member_count = $3, updated_at = $4 WHERE id = $5 AND status = 'UPLOADING'",
        )
        .bind(size as i64)
        .bind(sha256)
        .bind(members.len() as i64)
        .bind(now)
        .bind(pack_id)
        .execute(&mut *tx)
        .await?;
        if updated.rows_affected() != 1 {
            tx.rollback().await?;
            return Ok(false);
        }
        let rows: Vec<MemberRow<'_>> = members
            .iter()
            .map(|(source, placement)| MemberRow {
                instance_id: source.instance_id,
                member_path: &placement.member_path,
                data_offset: placement.data_offset,
                size: placement.size,
                sha256: &source.sha256,
                blake3: &placement.blake3,
            })
            .collect();
        insert_pack_members(&mut tx, pack_id, &rows).await?;
        tx.commit().await?;
        Ok(true)
    }

    pub async fn packs_of_study(&self, study_uid: &str) -> IndexResult<Vec<PackRow>> {
        Ok(sqlx::query_as(&format!(
            "SELECT {PACK_COLUMNS} FROM pack p JOIN study s ON s.id = p.study_fk \
             JOIN nearline_target t ON t.id = p.target_fk WHERE s.study_uid = $1 ORDER BY p.id"
        ))
        .bind(study_uid)
        .fetch_all(self.pool())
        .await?)
    }

    pub async fn pack_members(&self, pack_id: i64) -> IndexResult<Vec<PackMemberRow>> {
        Ok(sqlx::query_as(
            "SELECT i.sop_uid, pm.member_path, pm.data_offset, pm.size_bytes, pm.sha256, \
             pm.blake3 FROM pack_member pm JOIN instance i ON i.id = pm.instance_fk \
             WHERE pm.pack_fk = $1 ORDER BY pm.data_offset",
        )
        .bind(pack_id)
        .fetch_all(self.pool())
        .await?)
    }

    /// Sets a pack's status after verification (`verified_at` for ARCHIVED).
    pub async fn set_pack_status(
        &self,
        pack_id: i64,
        status: PackStatus,
        error: &str,
        now: i64,
    ) -> IndexResult<()> {
        let verified_at = (status == PackStatus::Archived).then_some(now);
        sqlx::query(
            "UPDATE pack SET status = $1, error = $2, updated_at = $3, \
             verified_at = COALESCE($4, verified_at) WHERE id = $5",
        )
        .bind(status.as_str())
        .bind(error)
        .bind(now)
        .bind(verified_at)
        .bind(pack_id)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// (study UID, target name) of every pack waiting for verification.
    pub async fn packs_to_verify(&self, limit: i64) -> IndexResult<Vec<(String, String)>> {
        Ok(sqlx::query_as(&format!(
            "SELECT DISTINCT s.study_uid, t.name FROM pack p JOIN study s ON s.id = p.study_fk \
             JOIN nearline_target t ON t.id = p.target_fk WHERE p.status = 'TO_ARCHIVE' \
             LIMIT {limit}"
        ))
        .fetch_all(self.pool())
        .await?)
    }
}
