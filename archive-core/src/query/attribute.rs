//! The attributes C-FIND can match and return, and where the index keeps each.

use super::Level;
use crate::index::counts;

/// How an attribute's values compare (PS3.4 C.2.2.2 depends on the VR).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ValueKind {
    /// Single value and wildcard matching, case-sensitive.
    Text,
    /// Person name: like `Text`, but case-insensitive (the index keeps an upper-case copy).
    PersonName,
    /// DA, `YYYYMMDD`: single value and range matching.
    Date,
    /// TM, `HHMMSS.FFFFFF`: single value and range matching.
    Time,
    /// UI: single value and list-of-UID matching; no wildcards.
    Uid,
    /// IS: single value matching on the number.
    Integer,
    /// Computed by the index (counts, availability): returned, not matched.
    Computed,
    /// `ModalitiesInStudy`: matches when any of the study's modalities matches.
    ModalityList,
}

/// Declares `Attr` and `Attr::ALL` from one list, so the two cannot drift apart.
macro_rules! attributes {
    ($($(#[$doc:meta])* $name:ident,)+) => {
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Attr {
            $($(#[$doc])* $name,)+
        }

        impl Attr {
            /// Every attribute, in declaration order (patient → image).
            pub const ALL: &'static [Attr] = &[$(Attr::$name,)+];
        }
    };
}

attributes! {
    PatientId,
    IssuerOfPatientId,
    PatientName,
    PatientBirthDate,
    PatientSex,
    NumberOfPatientRelatedStudies,
    NumberOfPatientRelatedSeries,
    NumberOfPatientRelatedInstances,
    StudyInstanceUid,
    StudyDate,
    StudyTime,
    AccessionNumber,
    StudyId,
    StudyDescription,
    ReferringPhysicianName,
    ModalitiesInStudy,
    NumberOfStudyRelatedSeries,
    NumberOfStudyRelatedInstances,
    SeriesInstanceUid,
    Modality,
    SeriesNumber,
    SeriesDescription,
    BodyPartExamined,
    NumberOfSeriesRelatedInstances,
    SopInstanceUid,
    SopClassUid,
    InstanceNumber,
    NumberOfFrames,
    /// Availability at the query level (0008,0056).
    InstanceAvailability,
}

impl Attr {
    /// The level the attribute belongs to. `InstanceAvailability` exists at every level but
    /// is reported as the query level's (see `column`), so it counts as a patient-level key.
    pub fn level(self) -> Level {
        use Attr::*;
        match self {
            PatientId
            | IssuerOfPatientId
            | PatientName
            | PatientBirthDate
            | PatientSex
            | NumberOfPatientRelatedStudies
            | NumberOfPatientRelatedSeries
            | NumberOfPatientRelatedInstances
            | InstanceAvailability => Level::Patient,
            StudyInstanceUid
            | StudyDate
            | StudyTime
            | AccessionNumber
            | StudyId
            | StudyDescription
            | ReferringPhysicianName
            | ModalitiesInStudy
            | NumberOfStudyRelatedSeries
            | NumberOfStudyRelatedInstances => Level::Study,
            SeriesInstanceUid
            | Modality
            | SeriesNumber
            | SeriesDescription
            | BodyPartExamined
            | NumberOfSeriesRelatedInstances => Level::Series,
            SopInstanceUid | SopClassUid | InstanceNumber | NumberOfFrames => Level::Image,
        }
    }

    pub fn kind(self) -> ValueKind {
        use Attr::*;
        match self {
            PatientName | ReferringPhysicianName => ValueKind::PersonName,
            PatientBirthDate | StudyDate => ValueKind::Date,
            StudyTime => ValueKind::Time,
            StudyInstanceUid | SeriesInstanceUid | SopInstanceUid | SopClassUid => ValueKind::Uid,
            SeriesNumber | InstanceNumber | NumberOfFrames => ValueKind::Integer,
            ModalitiesInStudy => ValueKind::ModalityList,
            NumberOfPatientRelatedStudies
            | NumberOfPatientRelatedSeries
            | NumberOfPatientRelatedInstances
            | NumberOfStudyRelatedSeries
            | NumberOfStudyRelatedInstances
            | NumberOfSeriesRelatedInstances
            | InstanceAvailability => ValueKind::Computed,
            _ => ValueKind::Text,
        }
    }

    /// The unique key of each level: always returned, and what retrievals resolve.
    pub fn unique_key(level: Level) -> Attr {
        match level {
            Level::Patient => Attr::PatientId,
            Level::Study => Attr::StudyInstanceUid,
            Level::Series => Attr::SeriesInstanceUid,
            Level::Image => Attr::SopInstanceUid,
        }
    }

    /// SQL expression returning the value (aliases: p patient, st study, se series, i instance),
    /// and for person names the upper-case column matched against.
    pub(crate) fn column(self, level: Level) -> &'static str {
        use Attr::*;
        match self {
            PatientId => "p.patient_id",
            IssuerOfPatientId => "p.issuer",
            PatientName => "p.patient_name",
            PatientBirthDate => "p.birth_date",
            PatientSex => "p.sex",
            NumberOfPatientRelatedStudies => "(SELECT COUNT(*) FROM study x WHERE x.patient_fk = p.id)",
            NumberOfPatientRelatedSeries => "(SELECT COALESCE(SUM(x.num_series), 0) FROM study x WHERE x.patient_fk = p.id)",
            NumberOfPatientRelatedInstances => counts::patient_instances!("p"),
            StudyInstanceUid => "st.study_uid",
            StudyDate => "st.study_date",
            StudyTime => "st.study_time",
            AccessionNumber => "st.accession_number",
            StudyId => "st.study_id",
            StudyDescription => "st.description",
            ReferringPhysicianName => "st.referring_physician",
            ModalitiesInStudy => "st.modalities",
            NumberOfStudyRelatedSeries => "st.num_series",
            NumberOfStudyRelatedInstances => counts::study_instances!("st"),
            SeriesInstanceUid => "se.series_uid",
            Modality => "se.modality",
            SeriesNumber => "se.series_number",
            SeriesDescription => "se.description",
            BodyPartExamined => "se.body_part",
            NumberOfSeriesRelatedInstances => counts::series_instances!("se"),
            SopInstanceUid => "i.sop_uid",
            SopClassUid => "i.sop_class_uid",
            InstanceNumber => "i.instance_number",
            NumberOfFrames => "i.number_of_frames",
            InstanceAvailability => match level {
                Level::Patient => "(SELECT CASE WHEN SUM(CASE WHEN x.availability = 'ONLINE' THEN 1 ELSE 0 END) > 0 THEN 'ONLINE' WHEN SUM(CASE WHEN x.availability = 'NEARLINE' THEN 1 ELSE 0 END) > 0 THEN 'NEARLINE' ELSE 'OFFLINE' END FROM study x WHERE x.patient_fk = p.id)",
                Level::Study => "st.availability",
                Level::Series => "se.availability",
                Level::Image => "i.availability",
            },
        }
    }

    /// The column matched for person names (upper-case copy); the value column otherwise.
    pub(crate) fn match_column(self, level: Level) -> &'static str {
        match self {
            Attr::PatientName => "p.patient_name_norm",
            Attr::ReferringPhysicianName => "st.referring_physician_norm",
            other => other.column(level),
        }
    }
}
