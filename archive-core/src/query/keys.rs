//! Which DICOM attribute is which query attribute of the index, with the VR it is answered in.
//! C-FIND and QIDO-RS both read keys through this table.

use super::Attr;
use dicom_core::{Tag, VR};
use dicom_dictionary_std::tags;

const KEYS: &[(Tag, VR, Attr)] = &[
    (tags::PATIENT_ID, VR::LO, Attr::PatientId),
    (tags::ISSUER_OF_PATIENT_ID, VR::LO, Attr::IssuerOfPatientId),
    (tags::PATIENT_NAME, VR::PN, Attr::PatientName),
    (tags::PATIENT_BIRTH_DATE, VR::DA, Attr::PatientBirthDate),
    (tags::PATIENT_SEX, VR::CS, Attr::PatientSex),
    (
        tags::NUMBER_OF_PATIENT_RELATED_STUDIES,
        VR::IS,
        Attr::NumberOfPatientRelatedStudies,
    ),
    (
        tags::NUMBER_OF_PATIENT_RELATED_SERIES,
        VR::IS,
        Attr::NumberOfPatientRelatedSeries,
    ),
    (
        tags::NUMBER_OF_PATIENT_RELATED_INSTANCES,
        VR::IS,
        Attr::NumberOfPatientRelatedInstances,
    ),
    (tags::STUDY_INSTANCE_UID, VR::UI, Attr::StudyInstanceUid),
    (tags::STUDY_DATE, VR::DA, Attr::StudyDate),
    (tags::STUDY_TIME, VR::TM, Attr::StudyTime),
    (tags::ACCESSION_NUMBER, VR::SH, Attr::AccessionNumber),
    (tags::STUDY_ID, VR::SH, Attr::StudyId),
    (tags::STUDY_DESCRIPTION, VR::LO, Attr::StudyDescription),
    (
        tags::REFERRING_PHYSICIAN_NAME,
        VR::PN,
        Attr::ReferringPhysicianName,
    ),
    (tags::MODALITIES_IN_STUDY, VR::CS, Attr::ModalitiesInStudy),
    (
        tags::NUMBER_OF_STUDY_RELATED_SERIES,
        VR::IS,
        Attr::NumberOfStudyRelatedSeries,
    ),
    (
        tags::NUMBER_OF_STUDY_RELATED_INSTANCES,
        VR::IS,
        Attr::NumberOfStudyRelatedInstances,
    ),
    (tags::SERIES_INSTANCE_UID, VR::UI, Attr::SeriesInstanceUid),
    (tags::MODALITY, VR::CS, Attr::Modality),
    (tags::SERIES_NUMBER, VR::IS, Attr::SeriesNumber),
    (tags::SERIES_DESCRIPTION, VR::LO, Attr::SeriesDescription),
    (tags::BODY_PART_EXAMINED, VR::CS, Attr::BodyPartExamined),
    (
        tags::NUMBER_OF_SERIES_RELATED_INSTANCES,
        VR::IS,
        Attr::NumberOfSeriesRelatedInstances,
    ),
    (tags::SOP_INSTANCE_UID, VR::UI, Attr::SopInstanceUid),
    (tags::SOP_CLASS_UID, VR::UI, Attr::SopClassUid),
    (tags::INSTANCE_NUMBER, VR::IS, Attr::InstanceNumber),
    (tags::NUMBER_OF_FRAMES, VR::IS, Attr::NumberOfFrames),
    (
        tags::INSTANCE_AVAILABILITY,
        VR::CS,
        Attr::InstanceAvailability,
    ),
];

/// The index attribute and answer VR of a tag, if the index keeps it.
pub fn attribute_of(tag: Tag) -> Option<(Attr, VR)> {
    KEYS.iter()
        .find(|(t, _, _)| *t == tag)
        .map(|(_, vr, attr)| (*attr, *vr))
}

/// The tag of an index attribute (the table is complete for every `Attr`, tested below).
pub fn tag_of(attr: Attr) -> Tag {
    KEYS.iter()
        .find(|(_, _, a)| *a == attr)
        .map(|(tag, _, _)| *tag)
        .unwrap_or(tags::SOP_INSTANCE_UID)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::query::Level;

    #[test]
    fn every_attribute_has_exactly_one_tag() {
        let mut attrs: Vec<Attr> = KEYS.iter().map(|(_, _, a)| *a).collect();
        attrs.sort();
        attrs.dedup();
        assert_eq!(attrs.len(), KEYS.len());
        assert_eq!(
            attribute_of(tags::PATIENT_NAME),
            Some((Attr::PatientName, VR::PN))
        );
        assert_eq!(attribute_of(tags::PIXEL_DATA), None);
        for level in [Level::Patient, Level::Study, Level::Series, Level::Image] {
            let key = Attr::unique_key(level);
            assert_eq!(attribute_of(tag_of(key)).map(|(attr, _)| attr), Some(key));
        }
    }
}
