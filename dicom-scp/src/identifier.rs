//! Reading the identifier of a C-FIND, C-MOVE or C-GET: the data set in the negotiated
//! transfer syntax, and its QueryRetrieveLevel checked against the information model.

use crate::dimse::status;
use archive_core::dicom_header::text;
use archive_core::query::{Level, Model};
use dicom_core::Tag;
use dicom_dictionary_std::tags;
use dicom_encoding::TransferSyntaxIndex;
use dicom_object::InMemDicomObject;
use dicom_transfer_syntax_registry::TransferSyntaxRegistry;

pub(crate) struct Identifier {
    pub object: InMemDicomObject,
    pub level: Level,
}

impl Identifier {
    /// Parses `bytes`; failures are the (status, Error Comment) to answer with.
    pub fn read(
        bytes: &[u8],
        transfer_syntax: &str,
        model: Model,
    ) -> Result<Identifier, (u16, String)> {
        let ts = TransferSyntaxRegistry.get(transfer_syntax).ok_or((
            status::CANNOT_UNDERSTAND,
            format!("unknown transfer syntax {transfer_syntax}"),
        ))?;
        let object = InMemDicomObject::read_dataset_with_ts(bytes, ts).map_err(|e| {
            (
                status::CANNOT_UNDERSTAND,
                format!("cannot parse identifier: {e}"),
            )
        })?;
        let level_text = text(&object, tags::QUERY_RETRIEVE_LEVEL);
        let level = Level::parse(&level_text).ok_or((
            status::IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS,
            format!("QueryRetrieveLevel `{level_text}` is not PATIENT, STUDY, SERIES or IMAGE"),
        ))?;
        if !model.has_level(level) {
            return Err((
                status::IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS,
                format!("the {model:?} model has no {} level", level.as_str()),
            ));
        }
        Ok(Identifier { object, level })
    }

    /// A text value, trimmed of padding; empty when absent.
    pub fn text(&self, tag: Tag) -> String {
        text(&self.object, tag)
    }
}
