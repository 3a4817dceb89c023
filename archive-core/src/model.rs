//! Domain records shared by every crate: what an instance says about itself, where its
//! file is, and what the index answers.

use crate::text_enum::text_enum;
use serde::Serialize;

/// Patient-level attributes as received (raw DICOM string values, trimmed).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PatientAttrs {
    pub patient_id: String,
    pub issuer_of_patient_id: String,
    pub patient_name: String,
    pub birth_date: String,
    pub sex: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StudyAttrs {
    pub study_uid: String,
    /// DA, `YYYYMMDD` (kept as text so range matching is a string comparison).
    pub study_date: String,
    /// TM, `HHMMSS.FFFFFF`.
    pub study_time: String,
    pub accession_number: String,
    pub study_id: String,
    pub description: String,
    pub referring_physician: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SeriesAttrs {
    pub series_uid: String,
    pub modality: String,
    pub series_number: Option<i64>,
    pub description: String,
    pub body_part: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct InstanceAttrs {
    pub sop_instance_uid: String,
    pub sop_class_uid: String,
    pub instance_number: Option<i64>,
    pub transfer_syntax: String,
    pub number_of_frames: Option<i64>,
}

/// Everything the index needs to know about one received object.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct InstanceRecord {
    pub patient: PatientAttrs,
    pub study: StudyAttrs,
    pub series: SeriesAttrs,
    pub instance: InstanceAttrs,
    /// Calling AE title of the association that delivered it.
    pub source_ae: String,
}

/// A file written to an ONLINE filesystem, durable before the index hears of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredFile {
    pub filesystem_id: i64,
    /// Path relative to the filesystem root, `/`-separated.
    pub rel_path: String,
    pub size: u64,
    /// Lower-case hex SHA-256 of the whole file.
    pub sha256: String,
}

text_enum! {
    /// Where an object can be read from, best first. Stored as text in the index.
    pub enum Availability("availability") {
        Online = "ONLINE", Nearline = "NEARLINE", Offline = "OFFLINE",
    }
}

/// Why an object was refused although it parsed: it contradicts what is already stored.
/// These are dcm4chee's "forbidden coercion" cases; the message names both UIDs.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum IntegrityConflict {
    #[error("Series {series_uid} already belongs to Study {stored_study_uid}, not to Study {received_study_uid}")]
    SeriesInOtherStudy {
        series_uid: String,
        stored_study_uid: String,
        received_study_uid: String,
    },
    #[error("Study {study_uid} already belongs to Patient ID {stored_patient_id}, not to Patient ID {received_patient_id}")]
    StudyOfOtherPatient {
        study_uid: String,
        stored_patient_id: String,
        received_patient_id: String,
    },
    #[error("SOP Instance {sop_instance_uid} is already stored in Series {stored_series_uid}, not in Series {received_series_uid}")]
    InstanceInOtherSeries {
        sop_instance_uid: String,
        stored_series_uid: String,
        received_series_uid: String,
    },
}

impl IntegrityConflict {
    /// A short name for logs: the Display text can name patient IDs, which stay out of logs
    /// above debug level.
    pub fn kind(&self) -> &'static str {
        match self {
            IntegrityConflict::SeriesInOtherStudy { .. } => "series in another study",
            IntegrityConflict::StudyOfOtherPatient { .. } => "study of another patient",
            IntegrityConflict::InstanceInOtherSeries { .. } => "instance in another series",
        }
    }
}

/// What the index did with a received object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreOutcome {
    /// New instance, now indexed.
    Stored,
    /// Already stored; the new file was not indexed (keep-first) and can be removed.
    DuplicateKept,
    /// Already stored; policy is to refuse the new copy.
    DuplicateRejected,
    /// Already stored; the new file replaced it. The old file can be removed.
    Replaced { old_file: StoredFile },
    /// Refused: contradicts the stored hierarchy.
    Conflict(IntegrityConflict),
}

/// An ONLINE filesystem as recorded in the index.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Filesystem {
    pub id: i64,
    pub group: String,
    pub path: String,
    pub mode: String,
    pub min_free_bytes: u64,
}

impl Filesystem {
    pub fn is_writable(&self) -> bool {
        self.mode == "rw"
    }
}

/// A DICOM peer Strata knows: a C-MOVE destination, and what it may do.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AePeer {
    pub ae_title: String,
    pub host: String,
    pub port: u16,
    pub can_query: bool,
    pub can_retrieve: bool,
    pub can_store: bool,
    pub description: String,
    /// Associations Strata opens to this peer (C-MOVE) use TLS (`dicom.tls`).
    pub tls: bool,
}
