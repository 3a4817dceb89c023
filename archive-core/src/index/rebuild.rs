//! What `rebuild-index` needs of the index beyond the ingest path: checkpoints, which packs and
//! instances are already there, and recording a pack found on a target.

use super::nearline::{insert_pack_members, MemberRow};
use super::{Index, IndexResult};
use crate::nearline::{PackStatus, PackedMember};
use std::collections::{HashMap, HashSet};

/// An instance the index already has, as a pack member is checked against it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KnownInstance {
    pub id: i64,
    /// SHA-256 of its ONLINE file; `None` when it has none.
    pub online_sha256: Option<String>,
}

/// A pack found on a target, to be recorded with its members.
#[derive(Clone, Debug)]
pub struct FoundPack<'a> {
    pub study_uid: &'a str,
    pub target_id: i64,
    pub object_key: &'a str,
    pub status: PackStatus,
    pub size: u64,
    /// Empty: not known (only the lost index had it).
    pub sha256: &'a str,
    /// What verification found wrong (VERIFY_FAILED), else empty.
    pub error: &'a str,
    pub created_at: i64,
    pub verified_at: Option<i64>,
    pub members: &'a [PackedMember],
}

impl Index {
    pub async fn rebuild_checkpoint(&self, scope: &str) -> IndexResult<Option<String>> {
        Ok(
            sqlx::query_scalar("SELECT position FROM rebuild_checkpoint WHERE scope = $1")
                .bind(scope)
                .fetch_optional(self.pool())
                .await?,
        )
    }

    pub async fn set_rebuild_checkpoint(
        &self,
        scope: &str,
        position: &str,
        now: i64,
    ) -> IndexResult<()> {
        sqlx::query(
            "INSERT INTO rebuild_checkpoint (scope, position, updated_at) VALUES ($1, $2, $3) \
             ON CONFLICT (scope) DO UPDATE SET position = excluded.position, \
             updated_at = excluded.updated_at",
        )
        .bind(scope)
        .bind(position)
        .bind(now)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// A finished rebuild forgets where it was: the next one starts from the beginning.
    pub async fn clear_rebuild_checkpoints(&self) -> IndexResult<()> {
        sqlx::query("DELETE FROM rebuild_checkpoint")
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// A finished scan of one filesystem or target (an import) forgets where it was.
    pub async fn clear_rebuild_checkpoint(&self, scope: &str) -> IndexResult<()> {
        sqlx::query("DELETE FROM rebuild_checkpoint WHERE scope = $1")
            .bind(scope)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// Keys of every pack the index records on the target, whatever its status.
    pub async fn pack_keys(&self, target_id: i64) -> IndexResult<HashSet<String>> {
        let keys: Vec<(String,)> =
            sqlx::query_as("SELECT object_key FROM pack WHERE target_fk = $1")
                .bind(target_id)
                .fetch_all(self.pool())
                .await?;
        Ok(keys.into_iter().map(|(key,)| key).collect())
    }

    /// Which of `sop_uids` are indexed, with their ONLINE file's SHA-256.
    pub async fn known_instances(
        &self,
        sop_uids: &[&str],
    ) -> IndexResult<HashMap<String, KnownInstance>> {
        let mut known = HashMap::new();
        for chunk in sop_uids.chunks(500) {
            let sql = format!(
                "SELECT i.sop_uid, i.id, f.sha256 FROM instance i \
                 LEFT JOIN file f ON f.instance_fk = i.id AND f.status = 'OK' \
                 WHERE i.sop_uid IN ({})",
                super::placeholders::placeholder_list(1, chunk.len())
            );
            let mut query = sqlx::query_as::<_, (String, i64, Option<String>)>(&sql);
            for uid in chunk {
                query = query.bind(*uid);
            }
            for (uid, id, online_sha256) in query.fetch_all(self.pool()).await? {
                known.insert(uid, KnownInstance { id, online_sha256 });
            }
        }
        Ok(known)
    }

    /// Records a pack found on a target and its members (whose instances must be indexed),
    /// then the study's availability. `false` if the pack was already recorded.
    pub async fn record_found_pack(&self, pack: &FoundPack<'_>, now: i64) -> IndexResult<bool> {
        let uids: Vec<&str> = pack.members.iter().map(|m| m.sop_uid.as_str()).collect();
        let instances = self.known_instances(&uids).await?;
        let mut tx = self.pool().begin().await?;
        let id: Option<(i64,)> = sqlx::query_as(
            "INSERT INTO pack (study_fk, target_fk, object_key, status, size_bytes, sha256, \
             member_count, error, created_at, updated_at, verified_at) \
             SELECT id, $1, $2, $3, $4, $5, $6, $7, $8, $9, $10 FROM study WHERE study_uid = $11 \
             ON CONFLICT (target_fk, object_key) DO NOTHING RETURNING id",
        )
        .bind(pack.target_id)
        .bind(pack.object_key)
        .bind(pack.status.as_str())
        .bind(pack.size as i64)
        .bind(pack.sha256)
        .bind(pack.members.len() as i64)
        .bind(pack.error)
        .bind(pack.created_at)
        .bind(now)
        .bind(pack.verified_at)
        .bind(pack.study_uid)
        .fetch_optional(&mut *tx)
        .await?;
        let Some((pack_id,)) = id else {
            tx.rollback().await?;
            return Ok(false);
        };
        let rows: Vec<MemberRow<'_>> = pack
            .members
            .iter()
            .filter_map(|m| {
                instances.get(&m.sop_uid).map(|known| MemberRow {
                    instance_id: known.id,
                    member_path: &m.member_path,
                    data_offset: m.data_offset,
                    size: m.size,
                    sha256: &m.sha256,
                    blake3: "",
                })
            })
            .collect();
        insert_pack_members(&mut tx, pack_id, &rows).await?;
        tx.commit().await?;
        self.recompute_availability(pack.study_uid).await?;
        Ok(true)
    }
}
