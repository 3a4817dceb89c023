//! Which abstract and transfer syntaxes Strata accepts.
//!
//! Abstract syntaxes are accepted promiscuously at negotiation (dicom-ul cannot filter with a
//! predicate, and the standard dictionary offers lookups, not a list), and C-STORE then checks
//! the SOP class: standard Storage SOP classes (retired ones too: old modalities still send
//! them) and private classes the dictionary does not know (vendor objects an archive must
//! keep) are stored; other standard services are refused with 0x0122.
//! Transfer syntaxes: every one whose data sets the registry can read. Pixel data is never
//! decoded, so compressed syntaxes are stored exactly as sent.

use dicom_core::dictionary::{UidDictionary, UidType};
use dicom_dictionary_std::StandardSopClassDictionary;
use dicom_encoding::TransferSyntaxIndex;
use dicom_transfer_syntax_registry::TransferSyntaxRegistry;
use std::sync::OnceLock;

/// True for SOP classes C-STORE may deliver.
pub fn is_storage_sop_class(uid: &str) -> bool {
    match StandardSopClassDictionary.by_uid(uid) {
        Some(entry) => entry.r#type == UidType::SopClass && is_storage_name(entry.name),
        None => uid.starts_with(|c: char| c.is_ascii_digit()) && !uid.starts_with("1.2.840.10008."),
    }
}

/// Storage SOP classes are the ones named "… Storage" (PS3.4 Annex B), minus the few other
/// services whose names contain the word.
fn is_storage_name(name: &str) -> bool {
    name.contains("Storage")
        && !name.contains("Commitment")
        && !name.contains("Media Storage Directory")
        && !name.contains("Storage Management")
}

/// Transfer syntaxes whose data sets the registry can parse (we parse headers only).
pub fn accepted_transfer_syntaxes() -> Vec<&'static str> {
    static SYNTAXES: OnceLock<Vec<&'static str>> = OnceLock::new();
    SYNTAXES
        .get_or_init(|| {
            TransferSyntaxRegistry
                .iter()
                .filter(|ts| !ts.is_unsupported())
                .map(|ts| ts.uid())
                .collect()
        })
        .clone()
}

pub fn transfer_syntax_is_known(uid: &str) -> bool {
    TransferSyntaxRegistry
        .get(uid)
        .map(|ts| !ts.is_unsupported())
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use dicom_dictionary_std::uids;

    #[test]
    fn storage_classes_cover_the_usual_suspects() {
        for uid in [
            uids::CT_IMAGE_STORAGE,
            uids::MR_IMAGE_STORAGE,
            uids::ENHANCED_CT_IMAGE_STORAGE,
            uids::SECONDARY_CAPTURE_IMAGE_STORAGE,
            uids::MULTI_FRAME_GRAYSCALE_WORD_SECONDARY_CAPTURE_IMAGE_STORAGE,
            uids::BASIC_TEXT_SR_STORAGE,
            uids::ENCAPSULATED_PDF_STORAGE,
            uids::DIGITAL_X_RAY_IMAGE_STORAGE_FOR_PRESENTATION,
            uids::ULTRASOUND_MULTI_FRAME_IMAGE_STORAGE,
            uids::GRAYSCALE_SOFTCOPY_PRESENTATION_STATE_STORAGE,
            uids::RT_DOSE_STORAGE,
        ] {
            assert!(is_storage_sop_class(uid), "{uid} should be a storage class");
        }
        for uid in [
            uids::VERIFICATION,
            uids::STORAGE_COMMITMENT_PUSH_MODEL,
            uids::STUDY_ROOT_QUERY_RETRIEVE_INFORMATION_MODEL_FIND,
            uids::MEDIA_STORAGE_DIRECTORY_STORAGE,
            "1.2.840.10008.9.9.9",
        ] {
            assert!(!is_storage_sop_class(uid), "{uid} is not a storage class");
        }
        assert!(
            is_storage_sop_class("1.3.12.2.1107.5.9.1"),
            "private classes are kept"
        );
    }

    #[test]
    fn transfer_syntaxes_include_compressed_and_odd_ones() {
        let syntaxes = accepted_transfer_syntaxes();
        for uid in [
            uids::IMPLICIT_VR_LITTLE_ENDIAN,
            uids::EXPLICIT_VR_LITTLE_ENDIAN,
            "1.2.840.10008.1.2.2", // Explicit VR Big Endian (retired, still sent by old modalities)
            uids::DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN,
            uids::JPEG_BASELINE8_BIT,
            uids::JPEG_LOSSLESS_SV1,
            uids::JPEG2000_LOSSLESS,
            uids::JPEG2000,
            uids::RLE_LOSSLESS,
            uids::JPEGLS_LOSSLESS,
        ] {
            assert!(syntaxes.contains(&uid), "{uid} should be accepted");
        }
    }
}
