//! Reading the attributes the index needs from a received object, up to Pixel Data only.
//! Every way in (C-STORE, STOW-RS, import) parses through here, so they index alike.

use crate::model::{InstanceAttrs, InstanceRecord, PatientAttrs, SeriesAttrs, StudyAttrs};
use crate::online::{ChunksReader, ParseSource};
use dicom_core::Tag;
use dicom_dictionary_std::tags;
use dicom_object::file::ReadPreamble;
use dicom_object::meta::FileMetaTableBuilder;
use dicom_object::{DefaultDicomObject, InMemDicomObject, OpenFileOptions};

/// Strata's DICOM implementation class UID (a UUID-derived 2.25 UID) and version name.
pub const IMPLEMENTATION_CLASS_UID: &str = "2.25.301225174053336555257649484838812991108";
pub const IMPLEMENTATION_VERSION_NAME: &str = "STRATA_0_1";

/// Preamble, `DICM`, and a file meta group for a data set in `transfer_syntax`: written in
/// front of a received C-STORE data set, and of a stored one sent as a Part-10 file.
pub fn part10_header(
    sop_class_uid: &str,
    sop_instance_uid: &str,
    transfer_syntax: &str,
    source_ae: &str,
) -> Result<Vec<u8>, String> {
    let mut builder = FileMetaTableBuilder::new()
        .media_storage_sop_class_uid(sop_class_uid)
        .media_storage_sop_instance_uid(sop_instance_uid)
        .transfer_syntax(transfer_syntax)
        .implementation_class_uid(IMPLEMENTATION_CLASS_UID)
        .implementation_version_name(IMPLEMENTATION_VERSION_NAME);
    if !source_ae.trim().is_empty() {
        builder = builder.source_application_entity_title(source_ae.trim());
    }
    let meta = builder
        .build()
        .map_err(|e| format!("cannot build file meta: {e}"))?;
    let mut header = vec![0u8; 128];
    header.extend_from_slice(b"DICM");
    meta.write(&mut header)
        .map_err(|e| format!("cannot encode file meta: {e}"))?;
    Ok(header)
}

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
        ParseSource::Chunks(chunks) => options.from_reader(ChunksReader::new(chunks)),
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
