//! What the REST API asks the index beyond C-FIND: study search with paging, where a study's
//! ONLINE copies are, and retrying a job.

use super::counts::folded_mark;
use super::{Index, IndexResult, StudyRow};
use crate::jobs::JobState;
use crate::model::{AePeer, Availability};
use serde::Serialize;

const UPSERT_AE: &str = "INSERT INTO ae_peer \
    (ae_title, host, port, can_query, can_retrieve, can_store, description, created_at, tls) \
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (ae_title) DO UPDATE SET \
    host = excluded.host, port = excluded.port, can_query = excluded.can_query, \
    can_retrieve = excluded.can_retrieve, can_store = excluded.can_store, \
    description = excluded.description, tls = excluded.tls";

const AE_COLUMNS: &str =
    "SELECT ae_title, host, port, can_query, can_retrieve, can_store, description, tls \
     FROM ae_peer";

fn select_aes() -> String {
    format!("{AE_COLUMNS} ORDER BY ae_title")
}

fn select_ae() -> String {
    format!("{AE_COLUMNS} WHERE ae_title = $1")
}

const DELETE_AE: &str = "DELETE FROM ae_peer WHERE ae_title = $1";

/// Filters of a study search; every given one must hold.
#[derive(Clone, Debug, Default)]
pub struct StudySearch {
    /// Exact, or with `*` wildcards.
    pub patient_id: Option<String>,
    /// Case-insensitive, with `*` wildcards (e.g. `DOE*`).
    pub patient_name: Option<String>,
    /// `YYYYMMDD`, inclusive.
    pub date_from: Option<String>,
    pub date_to: Option<String>,
    /// A series of the study has this modality.
    pub modality: Option<String>,
    pub accession_number: Option<String>,
    pub availability: Option<Availability>,
    pub limit: i64,
    pub offset: i64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct AvailabilityTotal {
    #[sqlx(try_from = "String")]
    pub availability: Availability,
    pub studies: i64,
    pub instances: i64,
    pub bytes: i64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct JobTotal {
    #[sqlx(try_from = "String")]
    pub state: JobState,
    pub jobs: i64,
}

/// A setting the API can remove by name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Setting {
    Target,
    CopyRule,
    RetentionRule,
}

impl Setting {
    fn table(self) -> &'static str {
        match self {
            Setting::Target => "nearline_target",
            Setting::CopyRule => "copy_rule",
            Setting::RetentionRule => "retention_rule",
        }
    }
}

/// What removing a setting did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Removal {
    Removed,
    NotFound,
    /// Defined in the config file: it would come back at the next start; remove it there.
    FromConfig,
    /// Still referenced (a target holding packs, or named by a copy rule).
    InUse(String),
}

/// A study's ONLINE files on one filesystem.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct OnlineCopy {
    pub filesystem_id: i64,
    pub group_name: String,
    pub path: String,
    pub instances: i64,
    pub bytes: i64,
}

/// `*` → `%`, with `%`, `_` and `!` escaped (`ESCAPE '!'`).
fn like_pattern(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '!' | '%' | '_' => {
                out.push('!');
                out.push(c);
            }
            '*' => out.push('%'),
            other => out.push(other),
        }
    }
    out
}

impl Index {
    /// Studies matching `search`, newest study date first.
    pub async fn search_studies(&self, search: &StudySearch) -> IndexResult<Vec<StudyRow>> {
        let mut conditions: Vec<String> = Vec::new();
        let mut binds: Vec<String> = Vec::new();
        let mut add = |condition: &str, value: String| {
            binds.push(value);
            conditions.push(condition.replace("$?", &format!("${}", binds.len())));
        };
        if let Some(id) = &search.patient_id {
            add("p.patient_id LIKE $? ESCAPE '!'", like_pattern(id));
        }
        if let Some(name) = &search.patient_name {
            add(
                "UPPER(p.patient_name) LIKE UPPER($?) ESCAPE '!'",
                like_pattern(name),
            );
        }
        if let Some(from) = &search.date_from {
            add("s.study_date >= $?", from.clone());
        }
        if let Some(to) = &search.date_to {
            add("s.study_date <> '' AND s.study_date <= $?", to.clone());
        }
        if let Some(modality) = &search.modality {
            add(
                "EXISTS (SELECT 1 FROM series x WHERE x.study_fk = s.id AND x.modality = $?)",
                modality.clone(),
            );
        }
        if let Some(accession) = &search.accession_number {
            add("s.accession_number = $?", accession.clone());
        }
        if let Some(availability) = search.availability {
            add("s.availability = $?", availability.as_str().to_string());
        }
        let filter = if conditions.is_empty() {
            String::new()
        } else {
            format!(" AND {}", conditions.join(" AND "))
        };
        let sql = format!(
            "{} WHERE 1 = 1{filter} ORDER BY s.study_date DESC, s.id DESC LIMIT {} OFFSET {}",
            super::query::SELECT_STUDY_COLUMNS,
            search.limit.clamp(1, 1000),
            search.offset.max(0)
        );
        let mut query = sqlx::query_as(&sql);
        for value in &binds {
            query = query.bind(value.as_str());
        }
        Ok(query.fetch_all(self.pool()).await?)
    }

    pub async fn online_copies(&self, study_uid: &str) -> IndexResult<Vec<OnlineCopy>> {
        Ok(sqlx::query_as(
            "SELECT fs.id AS filesystem_id, fs.group_name, fs.path, COUNT(*) AS instances, \
             CAST(SUM(f.size_bytes) AS BIGINT) AS bytes \
             FROM file f JOIN filesystem fs ON fs.id = f.filesystem_fk \
             JOIN instance i ON i.id = f.instance_fk JOIN series se ON se.id = i.series_fk \
             JOIN study s ON s.id = se.study_fk WHERE s.study_uid = $1 AND f.status = 'OK' \
             GROUP BY fs.id, fs.group_name, fs.path ORDER BY fs.id",
        )
        .bind(study_uid)
        .fetch_all(self.pool())
        .await?)
    }

    /// Removes a target or rule added at run time.
    pub async fn remove_setting(&self, setting: Setting, name: &str) -> IndexResult<Removal> {
        let table = setting.table();
        let row: Option<(i64, i64)> = sqlx::query_as(&format!(
            "SELECT id, from_config FROM {table} WHERE name = $1"
        ))
        .bind(name)
        .fetch_optional(self.pool())
        .await?;
        let Some((id, from_config)) = row else {
            return Ok(Removal::NotFound);
        };
        if from_config != 0 {
            return Ok(Removal::FromConfig);
        }
        if setting == Setting::Target {
            let (packs,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM pack WHERE target_fk = $1")
                .bind(id)
                .fetch_one(self.pool())
                .await?;
            if packs > 0 {
                return Ok(Removal::InUse(format!("it holds {packs} pack(s)")));
            }
            let (rules,): (i64,) =
                // One name, or several separated by backslashes (a rule with `targets`).
                sqlx::query_as(
                    "SELECT COUNT(*) FROM copy_rule \
                     WHERE ('\\' || target_name || '\\') LIKE ('%\\' || $1 || '\\%') ESCAPE '!'",
                )
                    .bind(name)
                    .fetch_one(self.pool())
                    .await?;
            if rules > 0 {
                return Ok(Removal::InUse(format!("{rules} copy rule(s) name it")));
            }
        }
        sqlx::query(&format!("DELETE FROM {table} WHERE id = $1"))
            .bind(id)
            .execute(self.pool())
            .await?;
        Ok(Removal::Removed)
    }

    /// Studies, instances and bytes for each availability that occurs.
    pub async fn availability_totals(&self) -> IndexResult<Vec<AvailabilityTotal>> {
        // The counters plus the instances not yet folded into them (`counts.rs`), found from
        // the mark up through the primary key rather than per study.
        Ok(sqlx::query_as(concat!(
            "SELECT s.availability, COUNT(*) AS studies, \
             CAST(COALESCE(SUM(s.num_instances + COALESCE(u.instances, 0)), 0) AS BIGINT) AS instances, \
             CAST(COALESCE(SUM(s.size_bytes + COALESCE(u.bytes, 0)), 0) AS BIGINT) AS bytes \
             FROM study s LEFT JOIN (SELECT us.study_fk, COUNT(*) AS instances, \
               SUM(ui.size_bytes) AS bytes FROM instance ui JOIN series us ON us.id = ui.series_fk \
               WHERE ui.id > ",
            folded_mark!(),
            " GROUP BY us.study_fk) u ON u.study_fk = s.id \
             GROUP BY s.availability ORDER BY s.availability"
        ))
        .fetch_all(self.pool())
        .await?)
    }

    /// Jobs in each state that occurs.
    pub async fn job_totals(&self) -> IndexResult<Vec<JobTotal>> {
        Ok(
            sqlx::query_as("SELECT state, COUNT(*) AS jobs FROM job GROUP BY state ORDER BY state")
                .fetch_all(self.pool())
                .await?,
        )
    }

    /// Puts a FAILED or CANCELLED job back in the queue with fresh attempts; `false` if it is
    /// not in one of those states.
    pub async fn retry_job(&self, id: i64, now: i64) -> IndexResult<bool> {
        // ON CONFLICT: a live job for the same work may exist meanwhile; then nothing changes.
        let result = sqlx::query(
            "UPDATE job SET state = 'QUEUED', attempts = 0, next_run_at = $1, updated_at = $1, \
             finished_at = NULL, last_error = '', owner_node = '', lease_expires_at = 0 \
             WHERE id = $2 AND state IN ('FAILED', 'CANCELLED') AND NOT EXISTS (SELECT 1 FROM job l \
               WHERE l.job_type = job.job_type AND l.study_uid = job.study_uid \
               AND l.target_name = job.target_name AND l.state IN ('QUEUED', 'RUNNING'))",
        )
        .bind(now)
        .bind(id)
        .execute(self.pool())
        .await?;
        Ok(result.rows_affected() == 1)
    }
}

/// AE peers (the DICOM nodes C-MOVE sends to and the AE policy knows).
impl Index {
    /// Adds a peer, or updates the one with the same AE title.
    pub async fn ae_upsert(&self, peer: &AePeer) -> IndexResult<()> {
        sqlx::query(UPSERT_AE)
            .bind(&peer.ae_title)
            .bind(&peer.host)
            .bind(i64::from(peer.port))
            .bind(i64::from(peer.can_query))
            .bind(i64::from(peer.can_retrieve))
            .bind(i64::from(peer.can_store))
            .bind(&peer.description)
            .bind(super::now_millis())
            .bind(i64::from(peer.tls))
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn ae_list(&self) -> IndexResult<Vec<AePeer>> {
        let rows: Vec<AeRow> = sqlx::query_as(&select_aes()).fetch_all(&self.pool).await?;
        Ok(rows.into_iter().map(AePeer::from).collect())
    }

    pub async fn ae_get(&self, ae_title: &str) -> IndexResult<Option<AePeer>> {
        let row: Option<AeRow> = sqlx::query_as(&select_ae())
            .bind(ae_title)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(AePeer::from))
    }

    /// Returns whether a peer was removed.
    pub async fn ae_remove(&self, ae_title: &str) -> IndexResult<bool> {
        let result = sqlx::query(DELETE_AE)
            .bind(ae_title)
            .execute(&self.pool)
            .await?;
        Ok(result.rows_affected() > 0)
    }
}

type AeRow = (String, String, i64, i64, i64, i64, String, i64);

impl From<AeRow> for AePeer {
    fn from(
        (ae_title, host, port, can_query, can_retrieve, can_store, description, tls): AeRow,
    ) -> AePeer {
        AePeer {
            ae_title,
            host,
            port: u16::try_from(port).unwrap_or(0),
            can_query: can_query != 0,
            can_retrieve: can_retrieve != 0,
            can_store: can_store != 0,
            description,
            tls: tls != 0,
        }
    }
}
