//! Indexing one received instance inside an open transaction.
//!
//! All consistency checks run before the first write, so a refused instance leaves no trace
//! (no empty patient, study or series rows) even though it shares its transaction with others.

use super::queries as q;
use super::{IndexResult, NewInstance};
use crate::config::DuplicatePolicy;
use crate::model::{IntegrityConflict, StoreOutcome, StoredFile};
use sqlx::AnyConnection;

struct StoredStudy {
    id: i64,
    patient_fk: i64,
    patient_id: String,
    modalities: String,
}

pub(super) async fn store_one(
    conn: &mut AnyConnection,
    new: &NewInstance,
) -> IndexResult<StoreOutcome> {
    let record = &new.record;
    let patient_id: Option<i64> = sqlx::query_scalar(q::FIND_PATIENT)
        .bind(&record.patient.patient_id)
        .bind(&record.patient.issuer_of_patient_id)
        .fetch_optional(&mut *conn)
        .await?;

    let study: Option<StoredStudy> = sqlx::query_as(q::FIND_STUDY)
        .bind(&record.study.study_uid)
        .fetch_optional(&mut *conn)
        .await?
        .map(|(id, patient_fk, patient_id, modalities)| StoredStudy {
            id,
            patient_fk,
            patient_id,
            modalities,
        });
    if let Some(study) = &study {
        if Some(study.patient_fk) != patient_id {
            return Ok(StoreOutcome::Conflict(
                IntegrityConflict::StudyOfOtherPatient {
                    study_uid: record.study.study_uid.clone(),
                    stored_patient_id: study.patient_id.clone(),
                    received_patient_id: record.patient.patient_id.clone(),
                },
            ));
        }
    }

    let series: Option<(i64, i64, String)> = sqlx::query_as(q::FIND_SERIES)
        .bind(&record.series.series_uid)
        .fetch_optional(&mut *conn)
        .await?;
    if let Some((_, study_fk, stored_study_uid)) = &series {
        if Some(*study_fk) != study.as_ref().map(|s| s.id) {
            return Ok(StoreOutcome::Conflict(
                IntegrityConflict::SeriesInOtherStudy {
                    series_uid: record.series.series_uid.clone(),
                    stored_study_uid: stored_study_uid.clone(),
                    received_study_uid: record.study.study_uid.clone(),
                },
            ));
        }
    }

    let instance: Option<(i64, i64, String)> = sqlx::query_as(q::FIND_INSTANCE)
        .bind(&record.instance.sop_instance_uid)
        .fetch_optional(&mut *conn)
        .await?;
    if let Some((instance_id, series_fk, stored_series_uid)) = instance {
        if Some(series_fk) != series.as_ref().map(|s| s.0) {
            return Ok(StoreOutcome::Conflict(
                IntegrityConflict::InstanceInOtherSeries {
                    sop_instance_uid: record.instance.sop_instance_uid.clone(),
                    stored_series_uid,
                    received_series_uid: record.series.series_uid.clone(),
                },
            ));
        }
        return match new.policy {
            DuplicatePolicy::KeepFirst => Ok(StoreOutcome::DuplicateKept),
            DuplicatePolicy::Reject => Ok(StoreOutcome::DuplicateRejected),
            DuplicatePolicy::Replace => {
                let study_id = study.as_ref().map(|s| s.id).unwrap_or_default();
                replace_file(conn, new, instance_id, series_fk, study_id).await
            }
        };
    }

    // From here on: writes. Everything above was a read.
    let patient_id = match patient_id {
        Some(id) => id,
        None => insert_patient(conn, new).await?,
    };
    let study_id = match &study {
        Some(study) => study.id,
        None => insert_study(conn, new, patient_id).await?,
    };
    let series_id = match series {
        Some((id, _, _)) => id,
        None => {
            let known = study.map(|s| s.modalities).unwrap_or_default();
            insert_series(conn, new, study_id, &known).await?
        }
    };

    let instance_id: i64 = sqlx::query_scalar(q::INSERT_INSTANCE)
        .bind(&record.instance.sop_instance_uid)
        .bind(series_id)
        .bind(&record.instance.sop_class_uid)
        .bind(record.instance.instance_number)
        .bind(&record.instance.transfer_syntax)
        .bind(record.instance.number_of_frames)
        .bind(new.received_at)
        .fetch_one(&mut *conn)
        .await?;
    insert_file(conn, instance_id, &new.file, new.received_at).await?;
    add_to_counts(
        conn,
        1,
        new.file.size as i64,
        new.received_at,
        series_id,
        study_id,
    )
    .await?;
    Ok(StoreOutcome::Stored)
}

async fn insert_patient(conn: &mut AnyConnection, new: &NewInstance) -> IndexResult<i64> {
    let patient = &new.record.patient;
    Ok(sqlx::query_scalar(q::INSERT_PATIENT)
        .bind(&patient.patient_id)
        .bind(&patient.issuer_of_patient_id)
        .bind(&patient.patient_name)
        .bind(normalize_name(&patient.patient_name))
        .bind(&patient.birth_date)
        .bind(&patient.sex)
        .bind(new.received_at)
        .fetch_one(&mut *conn)
        .await?)
}

async fn insert_study(
    conn: &mut AnyConnection,
    new: &NewInstance,
    patient_id: i64,
) -> IndexResult<i64> {
    let study = &new.record.study;
    Ok(sqlx::query_scalar(q::INSERT_STUDY)
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
        .fetch_one(&mut *conn)
        .await?)
}

async fn insert_series(
    conn: &mut AnyConnection,
    new: &NewInstance,
    study_id: i64,
    known_modalities: &str,
) -> IndexResult<i64> {
    let series = &new.record.series;
    let id = sqlx::query_scalar(q::INSERT_SERIES)
        .bind(&series.series_uid)
        .bind(study_id)
        .bind(&series.modality)
        .bind(series.series_number)
        .bind(&series.description)
        .bind(&series.body_part)
        .bind(&new.record.source_ae)
        .bind(new.received_at)
        .bind(new.received_at)
        .fetch_one(&mut *conn)
        .await?;
    sqlx::query(q::STUDY_ADD_SERIES)
        .bind(add_modality(known_modalities, &series.modality))
        .bind(study_id)
        .execute(&mut *conn)
        .await?;
    Ok(id)
}

async fn insert_file(
    conn: &mut AnyConnection,
    instance_id: i64,
    file: &StoredFile,
    now: i64,
) -> IndexResult<()> {
    sqlx::query(q::INSERT_FILE)
        .bind(instance_id)
        .bind(file.filesystem_id)
        .bind(&file.rel_path)
        .bind(file.size as i64)
        .bind(&file.sha256)
        .bind(now)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

async fn add_to_counts(
    conn: &mut AnyConnection,
    instances: i64,
    bytes: i64,
    now: i64,
    series_id: i64,
    study_id: i64,
) -> IndexResult<()> {
    for (statement, id) in [
        (q::SERIES_ADD_BYTES, series_id),
        (q::STUDY_ADD_BYTES, study_id),
    ] {
        sqlx::query(statement)
            .bind(instances)
            .bind(bytes)
            .bind(now)
            .bind(id)
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

async fn replace_file(
    conn: &mut AnyConnection,
    new: &NewInstance,
    instance_id: i64,
    series_id: i64,
    study_id: i64,
) -> IndexResult<StoreOutcome> {
    let old: Option<(i64, i64, String, i64, String)> = sqlx::query_as(q::FIND_FILE_OF_INSTANCE)
        .bind(instance_id)
        .fetch_optional(&mut *conn)
        .await?;
    let Some((file_id, filesystem_id, rel_path, size, sha256)) = old else {
        // The instance has no ONLINE file (e.g. only a nearline copy): give it this one.
        insert_file(conn, instance_id, &new.file, new.received_at).await?;
        add_to_counts(
            conn,
            0,
            new.file.size as i64,
            new.received_at,
            series_id,
            study_id,
        )
        .await?;
        return Ok(StoreOutcome::Stored);
    };
    sqlx::query(q::REPLACE_FILE)
        .bind(new.file.filesystem_id)
        .bind(&new.file.rel_path)
        .bind(new.file.size as i64)
        .bind(&new.file.sha256)
        .bind(new.received_at)
        .bind(file_id)
        .execute(&mut *conn)
        .await?;
    let delta = new.file.size as i64 - size;
    add_to_counts(conn, 0, delta, new.received_at, series_id, study_id).await?;
    Ok(StoreOutcome::Replaced {
        old_file: StoredFile {
            filesystem_id,
            rel_path,
            size: size.max(0) as u64,
            sha256,
        },
    })
}

/// Person names are matched case-insensitively (C-FIND), so the index keeps an upper-case copy.
pub fn normalize_name(name: &str) -> String {
    name.trim().to_uppercase()
}

/// Appends a modality to a backslash-separated list unless it is already there.
fn add_modality(list: &str, modality: &str) -> String {
    if modality.is_empty() || list.split('\\').any(|m| m == modality) {
        list.to_string()
    } else if list.is_empty() {
        modality.to_string()
    } else {
        format!("{list}\\{modality}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modalities_accumulate_once_each() {
        assert_eq!(add_modality("", "CT"), "CT");
        assert_eq!(add_modality("CT", "CT"), "CT");
        assert_eq!(add_modality("CT", "SR"), "CT\\SR");
        assert_eq!(add_modality("CT\\SR", ""), "CT\\SR");
    }
}
