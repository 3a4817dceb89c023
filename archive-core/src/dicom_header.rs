//! Reading the attributes the index needs from a received object, up to Pixel Data only.
//! Every way in (C-STORE, STOW-RS, import) parses through here, so they index alike.

use crate::model::{InstanceAttrs, InstanceRecord, PatientAttrs, SeriesAttrs, StudyAttrs};
use crate::online::ParseSource;
use dicom_core::Tag;
use dicom_dictionary_std::tags;
use dicom_object::file::ReadPreamble;
use dicom_object::{DefaultDicomObject, InMemDicomObject, OpenFileOptions};

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ParseError(String);

/// Parses the Part-10 object (preamble, meta, data set) the writer holds.
pub fn parse_header(source: ParseSource<'_>) -> Result<DefaultDicomObject, ParseError> {
    let options = OpenFileOptions::new()
        .read_preamble(ReadPreamble::Always)
        .read_until(tags::PIXEL_DATA);
    let result = match source {
        ParseSource::Memory(bytes) => options.from_reader(bytes),
        ParseSource::File(path) => options.open_file(path),
    };
    result.map_err(|e| ParseError(e.to_string()))
}

/// Uses `get`, not `element_opt`: the latter builds an error with a forced backtrace for
/// every missing attribute (snafu), which cost more than the rest of C-STORE together.
/// A text value trimmed of padding; empty when absent.
pub fn text(object: &InMemDicomObject, tag: Tag) -> String {
    object
        .get(tag)
        .and_then(|e| e.to_str().ok())
        .map(|s| s.trim_matches(|c: char| c == ' ' || c == '\0').to_string())
        .unwrap_or_default()
}

fn number(object: &DefaultDicomObject, tag: Tag) -> Option<i64> {
    let value = text(object, tag);
    value.split('\\').next()?.trim().parse().ok()
}

/// The index record of a parsed object; `transfer_syntax` and `source_ae` come from the
/// association, not the data set.
pub fn instance_record(
    object: &DefaultDicomObject,
    transfer_syntax: &str,
    source_ae: &str,
) -> InstanceRecord {
    InstanceRecord {
        patient: PatientAttrs {
            patient_id: text(object, tags::PATIENT_ID),
            issuer_of_patient_id: text(object, tags::ISSUER_OF_PATIENT_ID),
            patient_name: text(object, tags::PATIENT_NAME),
            birth_date: text(object, tags::PATIENT_BIRTH_DATE),
            sex: text(object, tags::PATIENT_SEX),
        },
        study: StudyAttrs {
            study_uid: text(object, tags::STUDY_INSTANCE_UID),
            study_date: text(object, tags::STUDY_DATE),
            study_time: text(object, tags::STUDY_TIME),
            accession_number: text(object, tags::ACCESSION_NUMBER),
            study_id: text(object, tags::STUDY_ID),
            description: text(object, tags::STUDY_DESCRIPTION),
            referring_physician: text(object, tags::REFERRING_PHYSICIAN_NAME),
        },
        series: SeriesAttrs {
            series_uid: text(object, tags::SERIES_INSTANCE_UID),
            modality: text(object, tags::MODALITY),
            series_number: number(object, tags::SERIES_NUMBER),
            description: text(object, tags::SERIES_DESCRIPTION),
            body_part: text(object, tags::BODY_PART_EXAMINED),
        },
        instance: InstanceAttrs {
            sop_instance_uid: text(object, tags::SOP_INSTANCE_UID),
            sop_class_uid: text(object, tags::SOP_CLASS_UID),
            instance_number: number(object, tags::INSTANCE_NUMBER),
            transfer_syntax: transfer_syntax.to_string(),
            number_of_frames: number(object, tags::NUMBER_OF_FRAMES),
        },
        source_ae: source_ae.to_string(),
    }
}
