//! What the index answers with.

use crate::model::Availability;
use serde::Serialize;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct StudyRow {
    pub study_uid: String,
    pub patient_id: String,
    pub issuer: String,
    pub patient_name: String,
    pub birth_date: String,
    pub sex: String,
    pub study_date: String,
    pub study_time: String,
    pub accession_number: String,
    pub study_id: String,
    pub description: String,
    pub referring_physician: String,
    /// Backslash-separated, in order of arrival.
    pub modalities: String,
    pub num_series: i64,
    pub num_instances: i64,
    pub size_bytes: i64,
    #[sqlx(try_from = "String")]
    pub availability: Availability,
    pub received_at: i64,
    pub updated_at: i64,
    pub last_accessed_at: i64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct SeriesRow {
    pub series_uid: String,
    pub modality: String,
    pub series_number: Option<i64>,
    pub description: String,
    pub body_part: String,
    pub source_ae: String,
    pub num_instances: i64,
    pub size_bytes: i64,
    #[sqlx(try_from = "String")]
    pub availability: Availability,
}

/// An instance and where it is read from: its ONLINE file, or its NEARLINE pack member.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct InstanceLocation {
    pub sop_uid: String,
    pub sop_class_uid: String,
    pub series_uid: String,
    pub study_uid: String,
    pub instance_number: Option<i64>,
    pub transfer_syntax: String,
    pub number_of_frames: Option<i64>,
    pub filesystem_id: i64,
    pub filesystem_path: String,
    pub rel_path: String,
    pub size_bytes: i64,
    pub sha256: String,
    /// Set when the instance has no ONLINE file and is read from an ARCHIVED pack instead
    /// (the filesystem fields are then empty).
    #[sqlx(skip)]
    pub nearline: Option<super::NearlineMember>,
    /// Other ARCHIVED copies of a NEARLINE-only instance, in the order retrieval tries them
    /// when reading `nearline` fails (target priority, then newest).
    #[sqlx(skip)]
    pub nearline_fallbacks: Vec<super::NearlineMember>,
}

impl InstanceLocation {
    pub fn full_path(&self) -> std::path::PathBuf {
        std::path::Path::new(&self.filesystem_path).join(&self.rel_path)
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct IndexCounts {
    pub patients: i64,
    pub studies: i64,
    pub series: i64,
    pub instances: i64,
    pub files: i64,
}
