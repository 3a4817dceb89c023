//! Reading the index: C-FIND answers, what a retrieval sends (ONLINE files, or NEARLINE pack
//! members where there is no file), studies and series for the API, stored metadata, counts.

use super::counts::{series_bytes, series_instances, study_bytes, study_instances};
use super::find_sql::{build_find_sql, Bind};
use super::placeholders::placeholder_list;
use super::rows::{IndexCounts, InstanceLocation, SeriesRow, StudyRow};
use super::{Dialect, Index, IndexResult, StoredMetadata};
use crate::query::{Attr, FindQuery, FindRow, Level};
use sqlx::Row;

pub(super) const SELECT_STUDY_COLUMNS: &str = concat!(
    "SELECT s.study_uid, p.patient_id, p.issuer, \
    p.patient_name, p.birth_date, p.sex, s.study_date, s.study_time, s.accession_number, \
    s.study_id, s.description, s.referring_physician, s.modalities, s.num_series, ",
    study_instances!("s"),
    " AS num_instances, ",
    study_bytes!("s"),
    " AS size_bytes, s.availability, s.received_at, s.updated_at, \
    s.last_accessed_at FROM study s JOIN patient p ON p.id = s.patient_fk"
);

fn select_study() -> String {
    format!("{SELECT_STUDY_COLUMNS} WHERE s.study_uid = $1")
}

const SELECT_SERIES_OF_STUDY: &str = concat!(
    "SELECT se.series_uid, se.modality, se.series_number, \
    se.description, se.body_part, se.source_ae, ",
    series_instances!("se"),
    " AS num_instances, ",
    series_bytes!("se"),
    " AS size_bytes, se.availability \
    FROM series se JOIN study st ON st.id = se.study_fk WHERE st.study_uid = $1 \
    ORDER BY se.series_number, se.series_uid"
);

const LOCATION_COLUMNS: &str = "SELECT i.sop_uid, i.sop_class_uid, se.series_uid, st.study_uid, \
    i.instance_number, i.transfer_syntax, i.number_of_frames, fs.id AS filesystem_id, \
    fs.path AS filesystem_path, f.path AS rel_path, f.size_bytes, f.sha256 \
    FROM instance i JOIN series se ON se.id = i.series_fk JOIN study st ON st.id = se.study_fk \
    JOIN patient p ON p.id = st.patient_fk \
    JOIN file f ON f.instance_fk = i.id AND f.status = 'OK' \
    JOIN filesystem fs ON fs.id = f.filesystem_fk";

fn select_location_by_sop() -> String {
    format!("{LOCATION_COLUMNS} WHERE i.sop_uid = $1")
}

fn select_locations_of_study() -> String {
    format!("{LOCATION_COLUMNS} WHERE st.study_uid = $1 ORDER BY se.series_number, i.instance_number, i.sop_uid")
}

/// Instances to retrieve: `column IN (…)` with the level's unique key column.
fn select_locations_where_in(column: &str, count: usize) -> String {
    format!(
        "{LOCATION_COLUMNS} WHERE {column} IN ({}) ORDER BY st.id, se.series_number, se.id, i.instance_number, i.id",
        placeholder_list(1, count)
    )
}

/// On PostgreSQL the rows are locked in id order first, the order ingest batches lock study
/// rows in (`ingest_tx.rs`): an UPDATE alone locks them as its plan meets them, and two
/// statements locking two studies in opposite orders deadlock.
fn touch_studies(dialect: Dialect, count: usize) -> String {
    let list = placeholder_list(2, count);
    match dialect {
        Dialect::Sqlite => {
            format!("UPDATE study SET last_accessed_at = $1 WHERE study_uid IN ({list})")
        }
        Dialect::Postgres => format!(
            "UPDATE study SET last_accessed_at = $1 WHERE id IN (SELECT id FROM study \
             WHERE study_uid IN ({list}) ORDER BY id FOR NO KEY UPDATE)"
        ),
    }
}

/// Stored metadata of the instances under a study, optionally one series or one instance:
/// `$1` study UID, `$2` series UID or '', `$3` SOP Instance UID or ''.
const SELECT_METADATA: &str = "SELECT st.study_uid, se.series_uid, i.sop_uid, m.metadata \
    FROM instance_metadata m JOIN instance i ON i.id = m.instance_fk \
    JOIN series se ON se.id = i.series_fk JOIN study st ON st.id = se.study_fk \
    WHERE st.study_uid = $1 AND ($2 = '' OR se.series_uid = $2) AND ($3 = '' OR i.sop_uid = $3) \
    ORDER BY se.series_number, se.id, i.instance_number, i.id";

const COUNTS: &str = "SELECT (SELECT COUNT(*) FROM patient), (SELECT COUNT(*) FROM study), \
    (SELECT COUNT(*) FROM series), (SELECT COUNT(*) FROM instance), (SELECT COUNT(*) FROM file)";

impl Index {
    pub async fn study(&self, study_uid: &str) -> IndexResult<Option<StudyRow>> {
        Ok(sqlx::query_as(&select_study())
            .bind(study_uid)
            .fetch_optional(&self.pool)
            .await?)
    }

    pub async fn series_of_study(&self, study_uid: &str) -> IndexResult<Vec<SeriesRow>> {
        Ok(sqlx::query_as(SELECT_SERIES_OF_STUDY)
            .bind(study_uid)
            .fetch_all(&self.pool)
            .await?)
    }

    pub async fn instance_location(&self, sop_uid: &str) -> IndexResult<Option<InstanceLocation>> {
        Ok(sqlx::query_as(&select_location_by_sop())
            .bind(sop_uid)
            .fetch_optional(&self.pool)
            .await?)
    }

    pub async fn study_locations(&self, study_uid: &str) -> IndexResult<Vec<InstanceLocation>> {
        Ok(sqlx::query_as(&select_locations_of_study())
            .bind(study_uid)
            .fetch_all(&self.pool)
            .await?)
    }

    pub async fn counts(&self) -> IndexResult<IndexCounts> {
        let (patients, studies, series, instances, files): (i64, i64, i64, i64, i64) =
            sqlx::query_as(COUNTS).fetch_one(&self.pool).await?;
        Ok(IndexCounts {
            patients,
            studies,
            series,
            instances,
            files,
        })
    }

    /// Answers a C-FIND query from the index alone: at most `query.limit + 1` rows (the extra
    /// one tells the caller the answer was limited).
    pub async fn find(&self, query: &FindQuery) -> IndexResult<Vec<FindRow>> {
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

    /// Stored metadata of a study's instances (of one series, or one instance, when given),
    /// in series and instance order.
    pub async fn metadata(
        &self,
        study_uid: &str,
        series_uid: Option<&str>,
        sop_uid: Option<&str>,
    ) -> IndexResult<Vec<StoredMetadata>> {
        Ok(sqlx::query_as(SELECT_METADATA)
            .bind(study_uid)
            .bind(series_uid.unwrap_or(""))
            .bind(sop_uid.unwrap_or(""))
            .fetch_all(&self.pool)
            .await?)
    }

    /// Every instance under the given unique keys of `level`, in study / series /
    /// instance-number order: what a C-MOVE or C-GET sends. Read from its ONLINE file, or,
    /// where it has none, from its newest ARCHIVED pack (`InstanceLocation::nearline`).
    pub async fn retrieve_locations(
        &self,
        level: Level,
        uids: &[String],
    ) -> IndexResult<Vec<InstanceLocation>> {
        if uids.is_empty() {
            return Ok(Vec::new());
        }
        let column = Attr::unique_key(level).column(level);
        let sql = select_locations_where_in(column, uids.len());
        let mut query = sqlx::query_as(&sql);
        for uid in uids {
            query = query.bind(uid.as_str());
        }
        let mut locations: Vec<InstanceLocation> = query.fetch_all(&self.pool).await?;
        let nearline = self.nearline_locations(level, uids).await?;
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

    /// Records that these studies were just retrieved (one statement for all of them).
    pub async fn touch_studies(&self, study_uids: &[String], at: i64) -> IndexResult<()> {
        if study_uids.is_empty() {
            return Ok(());
        }
        let sql = touch_studies(self.dialect, study_uids.len());
        let mut query = sqlx::query(&sql).bind(at);
        for uid in study_uids {
            query = query.bind(uid.as_str());
        }
        query.execute(&self.pool).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::plan_check::{assert_no_status_walk, sqlite_plan};
    use super::*;

    #[tokio::test]
    async fn retrieval_locations_are_read_through_the_study_not_every_file() {
        let mut statements = vec![select_locations_of_study(), select_location_by_sop()];
        // C-MOVE and C-GET, at every level they retrieve.
        for level in [Level::Patient, Level::Study, Level::Series, Level::Image] {
            let column = Attr::unique_key(level).column(level);
            statements.push(select_locations_where_in(column, 2));
        }
        for sql in statements {
            let plan = sqlite_plan(&sql).await;
            assert_no_status_walk("retrieval locations", &plan);
            assert!(
                plan.iter().any(|step| step.contains("file_instance_idx")),
                "files should be found by instance: {plan:#?}"
            );
        }
    }
}
