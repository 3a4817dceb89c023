//! DIMSE command sets: decoding requests and encoding responses (PS3.7 §9, §E).
//! Command sets are always Implicit VR Little Endian, whatever the negotiated transfer syntax.

use dicom_core::{DataElement, PrimitiveValue, Tag, VR};
use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;
use dicom_transfer_syntax_registry::entries::IMPLICIT_VR_LITTLE_ENDIAN;

/// CommandField values we route on.
pub mod command_field {
    pub const C_STORE_RQ: u16 = 0x0001;
    pub const C_GET_RQ: u16 = 0x0010;
    pub const C_FIND_RQ: u16 = 0x0020;
    pub const C_MOVE_RQ: u16 = 0x0021;
    pub const C_ECHO_RQ: u16 = 0x0030;
    pub const C_CANCEL_RQ: u16 = 0x0FFF;
    /// A response's CommandField is the request's with this bit set.
    pub const RESPONSE_BIT: u16 = 0x8000;
}

/// Status codes Strata answers with (PS3.4 Annex B, PS3.7 Annex C). Strata-specific codes
/// use the "cannot understand" range Cxxx, which the standard leaves to implementations.
pub mod status {
    /// The C-STORE outcomes of archive-core's accept path (documented there and in the README):
    /// out of resources 0xA700, data set does not match SOP class 0xA900, cannot understand
    /// 0xC000, missing or inconsistent UID 0xC001, conflicts with stored hierarchy 0xC002
    /// (dcm4chee's "forbidden coercion"), processing failure 0x0110, duplicate 0x0111.
    pub use archive_core::accept::status::*;
    pub const SUCCESS: u16 = 0x0000;
    /// Refused: not authorized (a listed peer without the right to query or retrieve).
    pub const NOT_AUTHORIZED: u16 = 0x0124;
    /// Failure: SOP class not supported.
    pub const SOP_CLASS_NOT_SUPPORTED: u16 = 0x0122;
    /// Failure: unrecognized operation.
    pub const UNRECOGNIZED_OPERATION: u16 = 0x0211;
    /// C-FIND / C-MOVE / C-GET: pending, more responses follow.
    pub const PENDING: u16 = 0xFF00;
    /// Cancelled by C-CANCEL.
    pub const CANCEL: u16 = 0xFE00;
    /// C-FIND / C-MOVE / C-GET: identifier does not match SOP class.
    pub const IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS: u16 = 0xA900;
    /// C-MOVE: move destination unknown.
    pub const MOVE_DESTINATION_UNKNOWN: u16 = 0xA801;
    /// C-MOVE / C-GET: unable to perform sub-operations (destination unreachable).
    pub const UNABLE_TO_PERFORM_SUBOPERATIONS: u16 = 0xA702;
    /// C-MOVE / C-GET: finished, one or more sub-operations failed or had warnings.
    pub const SUBOPERATIONS_COMPLETE_WITH_FAILURES: u16 = 0xB000;
}

/// Longest Error Comment sent; see `Response::encode`.
const MAX_ERROR_COMMENT: usize = 256;

/// CommandDataSetType value meaning "no data set follows".
const NO_DATA_SET: u16 = 0x0101;

/// The fields of a request command that Strata reads.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Command {
    pub command_field: u16,
    pub message_id: u16,
    pub affected_sop_class_uid: String,
    pub affected_sop_instance_uid: String,
    pub has_data_set: bool,
    /// Present in responses.
    pub status: Option<u16>,
    pub error_comment: Option<String>,
    /// C-MOVE: the AE title to send to.
    pub move_destination: String,
}

#[derive(Debug, thiserror::Error)]
#[error("malformed command set: {0}")]
pub struct CommandError(String);

impl Command {
    /// Reads a command set: group 0000 elements in Implicit VR Little Endian, each
    /// tag (4) + length (4) + value. Parsed here rather than with dicom-object, whose data set
    /// reader builds an error with a forced backtrace at the end of every input.
    pub fn decode(bytes: &[u8]) -> Result<Command, CommandError> {
        let mut command = Command::default();
        let mut data_set_type = NO_DATA_SET;
        let mut has_field = false;
        let mut rest = bytes;
        while !rest.is_empty() {
            let header = rest.get(..8).ok_or_else(|| {
                CommandError(format!(
                    "truncated element header at byte {}",
                    bytes.len() - rest.len()
                ))
            })?;
            let group = u16::from_le_bytes([header[0], header[1]]);
            let element = u16::from_le_bytes([header[2], header[3]]);
            let length = u32::from_le_bytes([header[4], header[5], header[6], header[7]]) as usize;
            let value = rest.get(8..8usize.saturating_add(length)).ok_or_else(|| {
                CommandError(format!(
                    "element ({group:04X},{element:04X}) is longer than the command set"
                ))
            })?;
            rest = &rest[8 + length..];
            if group != 0x0000 {
                return Err(CommandError(format!(
                    "element ({group:04X},{element:04X}) outside group 0000"
                )));
            }
            let tag = Tag(group, element);
            let us = || (value.len() >= 2).then(|| u16::from_le_bytes([value[0], value[1]]));
            let text = || {
                String::from_utf8_lossy(value)
                    .trim_end_matches(['\0', ' '])
                    .to_string()
            };
            match tag {
                tags::COMMAND_FIELD => {
                    command.command_field =
                        us().ok_or_else(|| CommandError("CommandField is not US".into()))?;
                    has_field = true;
                }
                tags::MESSAGE_ID => command.message_id = us().unwrap_or(0),
                tags::MESSAGE_ID_BEING_RESPONDED_TO if command.message_id == 0 => {
                    command.message_id = us().unwrap_or(0)
                }
                tags::COMMAND_DATA_SET_TYPE => data_set_type = us().unwrap_or(NO_DATA_SET),
                tags::STATUS => command.status = us(),
                tags::AFFECTED_SOP_CLASS_UID => command.affected_sop_class_uid = text(),
                tags::AFFECTED_SOP_INSTANCE_UID => command.affected_sop_instance_uid = text(),
                tags::ERROR_COMMENT => {
                    command.error_comment = Some(text()).filter(|c| !c.is_empty())
                }
                tags::MOVE_DESTINATION => command.move_destination = text().trim().to_string(),
                _ => {}
            }
        }
        if !has_field {
            return Err(CommandError("no CommandField (0000,0100)".into()));
        }
        command.has_data_set = data_set_type != NO_DATA_SET;
        Ok(command)
    }
}

/// A request command set (Strata as SCU: C-MOVE/C-GET sub-operations, tools, tests).
pub fn encode_request(
    command_field: u16,
    message_id: u16,
    sop_class_uid: &str,
    sop_instance_uid: Option<&str>,
    data_set_follows: bool,
) -> Vec<u8> {
    encode_with_group_length(&request_object(
        command_field,
        message_id,
        sop_class_uid,
        sop_instance_uid,
        data_set_follows,
    ))
}

fn request_object(
    command_field: u16,
    message_id: u16,
    sop_class_uid: &str,
    sop_instance_uid: Option<&str>,
    data_set_follows: bool,
) -> InMemDicomObject {
    let mut object = InMemDicomObject::new_empty();
    object.put(uid_element(tags::AFFECTED_SOP_CLASS_UID, sop_class_uid));
    object.put(us_element(tags::COMMAND_FIELD, command_field));
    object.put(us_element(tags::MESSAGE_ID, message_id));
    if command_field != command_field::C_ECHO_RQ {
        object.put(us_element(tags::PRIORITY, 0));
    }
    let data_set_type = if data_set_follows {
        0x0000
    } else {
        NO_DATA_SET
    };
    object.put(us_element(tags::COMMAND_DATA_SET_TYPE, data_set_type));
    if let Some(uid) = sop_instance_uid {
        object.put(uid_element(tags::AFFECTED_SOP_INSTANCE_UID, uid));
    }
    object
}

pub fn encode_c_store_rq(message_id: u16, sop_class_uid: &str, sop_instance_uid: &str) -> Vec<u8> {
    encode_request(
        command_field::C_STORE_RQ,
        message_id,
        sop_class_uid,
        Some(sop_instance_uid),
        true,
    )
}

pub fn encode_c_echo_rq(message_id: u16) -> Vec<u8> {
    encode_request(
        command_field::C_ECHO_RQ,
        message_id,
        dicom_dictionary_std::uids::VERIFICATION,
        None,
        false,
    )
}

/// C-STORE-RQ of a C-MOVE sub-operation, naming the AE and message that asked for the move.
pub fn encode_c_store_rq_for_move(
    message_id: u16,
    sop_class_uid: &str,
    sop_instance_uid: &str,
    originator_ae: &str,
    originator_message_id: u16,
) -> Vec<u8> {
    let mut object = request_object(
        command_field::C_STORE_RQ,
        message_id,
        sop_class_uid,
        Some(sop_instance_uid),
        true,
    );
    object.put(text_element(
        tags::MOVE_ORIGINATOR_APPLICATION_ENTITY_TITLE,
        VR::AE,
        originator_ae,
    ));
    object.put(us_element(
        tags::MOVE_ORIGINATOR_MESSAGE_ID,
        originator_message_id,
    ));
    encode_with_group_length(&object)
}

/// C-CANCEL-RQ for the operation with `message_id`.
pub fn encode_c_cancel_rq(message_id: u16) -> Vec<u8> {
    let mut object = InMemDicomObject::new_empty();
    object.put(us_element(tags::COMMAND_FIELD, command_field::C_CANCEL_RQ));
    object.put(us_element(tags::MESSAGE_ID_BEING_RESPONDED_TO, message_id));
    object.put(us_element(tags::COMMAND_DATA_SET_TYPE, NO_DATA_SET));
    encode_with_group_length(&object)
}

/// A response command, built field by field.
#[derive(Clone, Debug, Default)]
pub struct Response {
    pub command_field: u16,
    pub message_id_being_responded_to: u16,
    pub affected_sop_class_uid: String,
    pub affected_sop_instance_uid: String,
    pub status: u16,
    pub error_comment: Option<String>,
    /// A data set follows the command (C-FIND pending responses, C-MOVE failed-UID lists).
    pub data_set_follows: bool,
    /// Further US elements, e.g. the sub-operation counts of C-MOVE and C-GET.
    pub counters: Vec<(Tag, u16)>,
}

impl Response {
    /// The response to `request` with `status`; SOP UIDs echoed as PS3.7 asks.
    pub fn to(request: &Command, status: u16) -> Response {
        Response {
            command_field: request.command_field | command_field::RESPONSE_BIT,
            message_id_being_responded_to: request.message_id,
            affected_sop_class_uid: request.affected_sop_class_uid.clone(),
            affected_sop_instance_uid: request.affected_sop_instance_uid.clone(),
            status,
            error_comment: None,
            data_set_follows: false,
            counters: Vec::new(),
        }
    }

    pub fn with_data_set(mut self) -> Response {
        self.data_set_follows = true;
        self
    }

    pub fn with_counter(mut self, tag: Tag, value: u16) -> Response {
        self.counters.push((tag, value));
        self
    }

    pub fn with_comment(mut self, comment: impl Into<String>) -> Response {
        self.error_comment = Some(comment.into());
        self
    }

    /// Encodes the command set, CommandGroupLength first.
    pub fn encode(&self) -> Vec<u8> {
        let mut object = InMemDicomObject::new_empty();
        if !self.affected_sop_class_uid.is_empty() {
            object.put(uid_element(
                tags::AFFECTED_SOP_CLASS_UID,
                &self.affected_sop_class_uid,
            ));
        }
        object.put(us_element(tags::COMMAND_FIELD, self.command_field));
        object.put(us_element(
            tags::MESSAGE_ID_BEING_RESPONDED_TO,
            self.message_id_being_responded_to,
        ));
        let data_set_type = if self.data_set_follows {
            0x0000
        } else {
            NO_DATA_SET
        };
        object.put(us_element(tags::COMMAND_DATA_SET_TYPE, data_set_type));
        object.put(us_element(tags::STATUS, self.status));
        for (tag, value) in &self.counters {
            object.put(us_element(*tag, *value));
        }
        if let Some(comment) = &self.error_comment {
            // ErrorComment is LO (64 characters), but a conflict must name two UIDs of up to
            // 64 characters each. Peers read the value by its length (DCMTK and pynetdicom
            // print it whole), so the full text is sent, capped to stay a short message.
            let comment: String = comment.chars().take(MAX_ERROR_COMMENT).collect();
            object.put(text_element(tags::ERROR_COMMENT, VR::LO, comment));
        }
        if !self.affected_sop_instance_uid.is_empty() {
            object.put(uid_element(
                tags::AFFECTED_SOP_INSTANCE_UID,
                &self.affected_sop_instance_uid,
            ));
        }
        encode_with_group_length(&object)
    }
}

fn us_element(tag: Tag, value: u16) -> DataElement<InMemDicomObject> {
    DataElement::new(tag, VR::US, PrimitiveValue::from(value))
}

fn uid_element(tag: Tag, uid: &str) -> DataElement<InMemDicomObject> {
    text_element(tag, VR::UI, uid)
}

/// A text element padded to even length as PS3.5 requires: UIDs with NUL, the rest with space.
pub fn text_element(tag: Tag, vr: VR, value: impl Into<String>) -> DataElement<InMemDicomObject> {
    let mut value = value.into();
    if value.len() % 2 == 1 {
        value.push(if vr == VR::UI { '\0' } else { ' ' });
    }
    DataElement::new(tag, vr, PrimitiveValue::from(value))
}

/// Writes the elements, then prepends (0000,0000) CommandGroupLength with their length.
fn encode_with_group_length(object: &InMemDicomObject) -> Vec<u8> {
    let ts = IMPLICIT_VR_LITTLE_ENDIAN.erased();
    let mut body = Vec::with_capacity(256);
    if let Err(error) = object.write_dataset_with_ts(&mut body, &ts) {
        // Only reachable through a bug in how we build the object; keep the association alive.
        tracing::error!(%error, "cannot encode DIMSE command");
    }
    let mut out = Vec::with_capacity(body.len() + 12);
    out.extend_from_slice(&[0, 0, 0, 0]); // tag (0000,0000)
    out.extend_from_slice(&4u32.to_le_bytes());
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&body);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn response_round_trips_and_carries_group_length() {
        let request = Command {
            command_field: command_field::C_STORE_RQ,
            message_id: 42,
            affected_sop_class_uid: "1.2.840.10008.5.1.4.1.1.2".into(),
            affected_sop_instance_uid: "1.2.3.4.5".into(),
            has_data_set: true,
            ..Command::default()
        };
        let bytes = Response::to(&request, status::CANNOT_UNDERSTAND)
            .with_comment("bad data set")
            .encode();
        let group_length = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
        assert_eq!(group_length as usize, bytes.len() - 12);
        let decoded = Command::decode(&bytes).expect("decodes");
        assert_eq!(decoded.command_field, 0x8001);
        assert_eq!(decoded.message_id, 42);
        assert_eq!(decoded.affected_sop_instance_uid, "1.2.3.4.5");
        assert!(!decoded.has_data_set);
        assert_eq!(decoded.status, Some(0xC000));
        assert_eq!(decoded.error_comment.as_deref(), Some("bad data set"));
        let object =
            InMemDicomObject::read_dataset_with_ts(&bytes[..], &IMPLICIT_VR_LITTLE_ENDIAN.erased())
                .expect("parse");
        assert_eq!(
            object
                .element(tags::STATUS)
                .expect("status")
                .to_int::<u16>()
                .expect("u16"),
            0xC000
        );
        assert_eq!(
            object
                .element(tags::ERROR_COMMENT)
                .expect("comment")
                .to_str()
                .expect("str")
                .trim(),
            "bad data set"
        );
    }

    #[test]
    fn store_request_decodes_as_a_store_with_data() {
        let decoded = Command::decode(&encode_c_store_rq(7, "1.2.3", "4.5.6")).expect("decodes");
        assert_eq!(decoded.command_field, command_field::C_STORE_RQ);
        assert_eq!(decoded.message_id, 7);
        assert_eq!(decoded.affected_sop_class_uid, "1.2.3");
        assert_eq!(decoded.affected_sop_instance_uid, "4.5.6");
        assert!(decoded.has_data_set);
        assert_eq!(decoded.status, None);
    }

    #[test]
    fn cancel_names_the_operation() {
        let decoded = Command::decode(&encode_c_cancel_rq(9)).expect("decodes");
        assert_eq!(decoded.command_field, command_field::C_CANCEL_RQ);
        assert_eq!(decoded.message_id, 9);
        assert!(!decoded.has_data_set);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(Command::decode(&[1, 2, 3]).is_err());
        assert!(Command::decode(&[]).is_err());
    }
}
