//! Fixity checks: which ARCHIVED packs and ONLINE files are due for a re-read, and the record
//! of every check.

use super::{Index, IndexResult};
use std::path::PathBuf;

/// Something the fixity service re-reads: a pack on a target, or an ONLINE file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FixityItem {
    Pack {
        pack_id: i64,
        study_uid: String,
        target_name: String,
        size: u64,
        /// Last complete check (or verification) time; the oldest go first.
        last: i64,
        /// Members (in tar order) this cycle has already checked by range: a pack larger
        /// than the budget left is checked a few members a day, continuing here.
        resume_at: i64,
    },
    File {
        file_id: i64,
        study_uid: String,
        /// The filesystem's root: a missing file under an empty or absent root is an unmounted
        /// filesystem, not a damaged copy.
        root: PathBuf,
        path: PathBuf,
        size: u64,
        sha256: String,
        last: i64,
    },
}

impl FixityItem {
    pub fn size(&self) -> u64 {
        match self {
            FixityItem::Pack { size, .. } | FixityItem::File { size, .. } => *size,
        }
    }
    pub fn last(&self) -> i64 {
        match self {
            FixityItem::Pack { last, .. } | FixityItem::File { last, .. } => *last,
        }
    }
}

/// One fixity check, as recorded.
#[derive(Clone, Debug)]
pub struct FixityRecord<'a> {
    pub at: i64,
    /// What the check read (the daily budget counts it).
    pub bytes: u64,
    pub ok: bool,
    pub detail: &'a str,
    /// 0: a complete check; otherwise how many members of the pack this cycle has checked
    /// by range so far (the next check continues there).
    pub next_member: i64,
}

/// The last fixity check of one copy of a study, for the study page.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, sqlx::FromRow)]
pub struct CopyFixity {
    /// `pack <id>` or `ONLINE`.
    pub copy: String,
    pub checked_at: Option<i64>,
    /// Checks of this copy that failed, ever.
    pub failures: i64,
    pub detail: String,
}

impl Index {
    /// ARCHIVED packs and OK ONLINE files not checked (nor, for packs, verified; for files,
    /// written) since `cutoff`, oldest first, at most `limit` of each.
    pub async fn fixity_due(&self, cutoff: i64, limit: i64) -> IndexResult<Vec<FixityItem>> {
        let packs: Vec<(i64, String, String, i64, i64, i64)> = sqlx::query_as(&format!(
            "SELECT id, study_uid, target_name, size_bytes, last, resume_at FROM (\
               SELECT p.id, s.study_uid, t.name AS target_name, p.size_bytes, \
               CAST(COALESCE((SELECT MAX(c.checked_at) FROM fixity_check c \
                 WHERE c.pack_fk = p.id AND c.next_member = 0), p.verified_at, 0) AS BIGINT) AS last, \
               CAST(COALESCE((SELECT c.next_member FROM fixity_check c WHERE c.pack_fk = p.id \
                 ORDER BY c.checked_at DESC, c.id DESC LIMIT 1), 0) AS BIGINT) AS resume_at \
               FROM pack p JOIN study s ON s.id = p.study_fk \
               JOIN nearline_target t ON t.id = p.target_fk WHERE p.status = 'ARCHIVED') due \
             WHERE last < $1 ORDER BY last, id LIMIT {limit}"
        ))
        .bind(cutoff)
        .fetch_all(self.pool())
        .await?;
        let files: Vec<(i64, String, String, String, i64, String, i64)> = sqlx::query_as(&format!(
            "SELECT id, study_uid, root, rel, size_bytes, sha256, last FROM (\
               SELECT f.id, st.study_uid, fs.path AS root, f.path AS rel, f.size_bytes, f.sha256, \
               CAST(COALESCE((SELECT MAX(c.checked_at) FROM fixity_check c WHERE c.file_fk = f.id), \
                 f.created_at) AS BIGINT) AS last \
               FROM file f JOIN filesystem fs ON fs.id = f.filesystem_fk \
               JOIN instance i ON i.id = f.instance_fk JOIN series se ON se.id = i.series_fk \
               JOIN study st ON st.id = se.study_fk WHERE f.status = 'OK') due \
             WHERE last < $1 ORDER BY last, id LIMIT {limit}"
        ))
        .bind(cutoff)
        .fetch_all(self.pool())
        .await?;
        let mut due: Vec<FixityItem> =
            packs
                .into_iter()
                .map(
                    |(pack_id, study_uid, target_name, size, last, resume_at)| FixityItem::Pack {
                        pack_id,
                        study_uid,
                        target_name,
                        size: size.max(0) as u64,
                        last,
                        resume_at,
                    },
                )
                .chain(files.into_iter().map(
                    |(file_id, study_uid, root, rel, size, sha256, last)| FixityItem::File {
                        file_id,
                        study_uid,
                        path: std::path::Path::new(&root).join(rel),
                        root: PathBuf::from(root),
                        size: size.max(0) as u64,
                        sha256,
                        last,
                    },
                ))
                .collect();
        due.sort_by_key(FixityItem::last);
        Ok(due)
    }

    /// Records a check of `item` that read `check.bytes`.
    pub async fn record_fixity(
        &self,
        item: &FixityItem,
        check: &FixityRecord<'_>,
    ) -> IndexResult<()> {
        let (pack, file) = match item {
            FixityItem::Pack { pack_id, .. } => (Some(*pack_id), None),
            FixityItem::File { file_id, .. } => (None, Some(*file_id)),
        };
        sqlx::query(
            "INSERT INTO fixity_check (pack_fk, file_fk, checked_at, bytes, ok, detail, next_member) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(pack)
        .bind(file)
        .bind(check.at)
        .bind(i64::try_from(check.bytes).unwrap_or(i64::MAX))
        .bind(i64::from(check.ok))
        .bind(check.detail)
        .bind(check.next_member)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Bytes fixity checks read since `since` (the daily budget counts these).
    pub async fn fixity_bytes_since(&self, since: i64) -> IndexResult<u64> {
        let (bytes,): (i64,) = sqlx::query_as(
            "SELECT CAST(COALESCE(SUM(bytes), 0) AS BIGINT) FROM fixity_check WHERE checked_at >= $1",
        )
        .bind(since)
        .fetch_one(self.pool())
        .await?;
        Ok(bytes.max(0) as u64)
    }

    /// An ONLINE file that no longer matches its checksum: retrievals and deletions stop
    /// using it (they take OK rows only); the row stays as the record of what was there.
    /// `false` if the row changed since it was read (deleted, replaced): nothing was found
    /// about the current file.
    pub async fn mark_file_damaged(
        &self,
        file_id: i64,
        checked_sha256: &str,
        study_uid: &str,
    ) -> IndexResult<bool> {
        let marked = sqlx::query(
            "UPDATE file SET status = 'DAMAGED' WHERE id = $1 AND status = 'OK' AND sha256 = $2",
        )
        .bind(file_id)
        .bind(checked_sha256)
        .execute(self.pool())
        .await?
        .rows_affected();
        self.recompute_availability(study_uid).await?;
        Ok(marked == 1)
    }

    /// Each copy of the study with its last fixity check: every pack (its last complete
    /// check; the detail of its latest, which may be a partial one), and the ONLINE files
    /// taken together (their oldest last check).
    pub async fn fixity_of_study(&self, study_uid: &str) -> IndexResult<Vec<CopyFixity>> {
        let mut copies: Vec<CopyFixity> = sqlx::query_as(
            "SELECT 'pack ' || CAST(p.id AS TEXT) AS copy, \
               (SELECT MAX(c.checked_at) FROM fixity_check c WHERE c.pack_fk = p.id \
                 AND c.next_member = 0) AS checked_at, \
               (SELECT COUNT(*) FROM fixity_check c WHERE c.pack_fk = p.id AND c.ok = 0) AS failures, \
               COALESCE((SELECT c.detail FROM fixity_check c WHERE c.pack_fk = p.id \
                 ORDER BY c.checked_at DESC, c.id DESC LIMIT 1), '') AS detail \
             FROM pack p JOIN study s ON s.id = p.study_fk WHERE s.study_uid = $1 ORDER BY p.id",
        )
        .bind(study_uid)
        .fetch_all(self.pool())
        .await?;
        let files = "FROM file f JOIN instance i ON i.id = f.instance_fk \
            JOIN series se ON se.id = i.series_fk JOIN study s ON s.id = se.study_fk \
            WHERE s.study_uid = $1";
        let online: Option<CopyFixity> = sqlx::query_as(&format!(
            "SELECT 'ONLINE' AS copy, \
               (SELECT MIN(last) FROM (SELECT (SELECT MAX(c.checked_at) FROM fixity_check c \
                 WHERE c.file_fk = f.id) AS last {files} AND f.status = 'OK') x) AS checked_at, \
               (SELECT COUNT(*) FROM fixity_check c WHERE c.ok = 0 AND c.file_fk IN \
                 (SELECT f.id {files})) AS failures, \
               '' AS detail \
             WHERE EXISTS (SELECT 1 {files})"
        ))
        .bind(study_uid)
        .fetch_optional(self.pool())
        .await?;
        copies.extend(online);
        Ok(copies)
    }
}
