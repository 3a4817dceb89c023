//! One C-STORE sub-operation of a C-MOVE or C-GET: choose a presentation context the peer
//! accepted, convert the data set only where that is lossless, stream it, and read the answer.

use crate::dimse::status;
use crate::messaging::{send_fragments, send_piece, DicomStream, SendError};
use archive_core::retrieve::OpenedInstance;
use archive_core::transcode::{convert, is_native};
use dicom_dictionary_std::uids;
use dicom_ul::association::AsyncAssociation;
use dicom_ul::pdu::PDataValueType;

pub enum SubOutcome {
    Completed,
    Warning,
    Failed(String),
}

impl SubOutcome {
    pub fn from_status(code: u16, comment: Option<String>) -> SubOutcome {
        match code {
            status::SUCCESS => SubOutcome::Completed,
            0xB000..=0xBFFF => SubOutcome::Warning,
            other => SubOutcome::Failed(format!(
                "peer answered {other:#06X}{}",
                comment.map(|c| format!(": {c}")).unwrap_or_default()
            )),
        }
    }
}

/// A presentation context the peer accepted.
#[derive(Clone, Debug)]
pub struct PeerContext {
    pub id: u8,
    pub abstract_syntax: String,
    pub transfer_syntax: String,
}

/// Presentation contexts to propose for objects stored in `stored`: one with exactly that
/// syntax (a peer choosing from a longer list may prefer another and force a conversion), and,
/// where conversion is lossless, a second with the uncompressed little-endian syntaxes.
pub fn proposals_for(stored: &str) -> Vec<Vec<String>> {
    let mut contexts = vec![vec![stored.to_string()]];
    if is_native(stored) {
        let fallbacks: Vec<String> = [
            uids::EXPLICIT_VR_LITTLE_ENDIAN,
            uids::IMPLICIT_VR_LITTLE_ENDIAN,
        ]
        .into_iter()
        .filter(|ts| *ts != stored)
        .map(String::from)
        .collect();
        contexts.push(fallbacks);
    }
    contexts
}

/// How to send an instance: as stored, converted to a syntax the peer took, or not at all.
pub enum Plan {
    AsStored(u8),
    Convert { pc: u8, target: String },
    Impossible(String),
}

pub fn plan(contexts: &[PeerContext], sop_class: &str, stored: &str) -> Plan {
    let for_class = || contexts.iter().filter(|c| c.abstract_syntax == sop_class);
    if let Some(context) = for_class().find(|c| c.transfer_syntax == stored) {
        return Plan::AsStored(context.id);
    }
    if is_native(stored) {
        if let Some(context) = for_class().find(|c| is_native(&c.transfer_syntax)) {
            return Plan::Convert {
                pc: context.id,
                target: context.transfer_syntax.clone(),
            };
        }
    }
    if for_class().next().is_none() {
        Plan::Impossible(format!(
            "the peer accepted no presentation context for SOP class {sop_class}"
        ))
    } else {
        Plan::Impossible(format!(
            "the peer refused transfer syntax {stored} and no lossless conversion exists"
        ))
    }
}

/// Why a sub-operation could not be sent.
pub enum SendFailure {
    /// This instance failed (unreadable, not convertible); the association is fine.
    Instance(String),
    /// The association broke.
    Association(SendError),
}

/// Sends the C-STORE-RQ `command` and the instance's data set on `pc`, converting to
/// `convert_to` if given. Does not read the response.
pub async fn send_store<S: DicomStream, A: AsyncAssociation<S> + Send>(
    association: &mut A,
    pc: u8,
    command: Vec<u8>,
    mut instance: OpenedInstance,
    convert_to: Option<&str>,
) -> Result<(), SendFailure> {
    if let Some(target) = convert_to {
        let stored = instance.location.transfer_syntax.clone();
        let bytes = instance
            .read_all()
            .await
            .map_err(|e| SendFailure::Instance(e.to_string()))?;
        // Re-encoding a whole data set is CPU work: on the blocking pool, so the association
        // tasks on this runtime's threads keep moving.
        let target_syntax = target.to_string();
        let converted =
            tokio::task::spawn_blocking(move || convert(&bytes, &stored, &target_syntax))
                .await
                .map_err(|e| SendFailure::Instance(format!("conversion stopped: {e}")))?
                .map_err(SendFailure::Instance)?;
        send_fragments(association, pc, PDataValueType::Command, &command)
            .await
            .map_err(SendFailure::Association)?;
        return send_fragments(association, pc, PDataValueType::Data, &converted)
            .await
            .map_err(SendFailure::Association);
    }
    // Read the first piece before sending the command, so an unreadable file fails the
    // sub-operation instead of leaving a half-sent message.
    let mut current = instance
        .next_chunk()
        .await
        .map_err(|e| SendFailure::Instance(e.to_string()))?
        .unwrap_or_default();
    send_fragments(association, pc, PDataValueType::Command, &command)
        .await
        .map_err(SendFailure::Association)?;
    loop {
        let next = match instance.next_chunk().await {
            Ok(next) => next,
            Err(error) => {
                // Mid-message: the only clean way out is to end the association.
                return Err(SendFailure::Association(SendError(error.to_string())));
            }
        };
        let last = next.is_none();
        send_piece(association, pc, PDataValueType::Data, &current, last)
            .await
            .map_err(SendFailure::Association)?;
        match next {
            Some(piece) => current = piece,
            None => return Ok(()),
        }
    }
}

/// How sending a sub-operation went, before its response.
pub enum Sent {
    /// On the wire: read the C-STORE response next.
    AwaitingResponse,
    /// Never sent (no acceptable context, unreadable, not convertible): this is its outcome.
    NotSent(SubOutcome),
}

/// Plans, encodes (with `request`, given the chosen context) and sends one sub-operation.
/// `Err` means the association is unusable.
pub async fn send_sub_operation<S: DicomStream, A: AsyncAssociation<S> + Send>(
    association: &mut A,
    opened: Result<OpenedInstance, archive_core::retrieve::RetrieveError>,
    contexts: &[PeerContext],
    request: impl FnOnce() -> Vec<u8>,
) -> Result<Sent, String> {
    let instance = match opened {
        Ok(instance) => instance,
        Err(error) => return Ok(Sent::NotSent(SubOutcome::Failed(error.to_string()))),
    };
    let location = &instance.location;
    let (pc, convert_to) = match plan(contexts, &location.sop_class_uid, &location.transfer_syntax)
    {
        Plan::AsStored(pc) => (pc, None),
        Plan::Convert { pc, target } => (pc, Some(target)),
        Plan::Impossible(reason) => return Ok(Sent::NotSent(SubOutcome::Failed(reason))),
    };
    match send_store(association, pc, request(), instance, convert_to.as_deref()).await {
        Ok(()) => Ok(Sent::AwaitingResponse),
        Err(SendFailure::Instance(reason)) => Ok(Sent::NotSent(SubOutcome::Failed(reason))),
        Err(SendFailure::Association(error)) => Err(error.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(id: u8, ts: &str) -> PeerContext {
        PeerContext {
            id,
            abstract_syntax: "1.2.3".into(),
            transfer_syntax: ts.into(),
        }
    }

    #[test]
    fn prefers_the_stored_syntax_and_converts_only_losslessly() {
        let contexts = [
            ctx(1, uids::EXPLICIT_VR_LITTLE_ENDIAN),
            ctx(3, uids::JPEG_BASELINE8_BIT),
        ];
        assert!(matches!(
            plan(&contexts, "1.2.3", uids::JPEG_BASELINE8_BIT),
            Plan::AsStored(3)
        ));
        assert!(matches!(
            plan(&contexts, "1.2.3", uids::IMPLICIT_VR_LITTLE_ENDIAN),
            Plan::Convert { pc: 1, .. }
        ));
        let only_le = [ctx(1, uids::EXPLICIT_VR_LITTLE_ENDIAN)];
        assert!(matches!(
            plan(&only_le, "1.2.3", uids::RLE_LOSSLESS),
            Plan::Impossible(_)
        ));
        assert!(matches!(
            plan(&only_le, "9.9", uids::EXPLICIT_VR_LITTLE_ENDIAN),
            Plan::Impossible(_)
        ));
    }

    #[test]
    fn proposals_add_fallbacks_only_for_convertible_syntaxes() {
        assert_eq!(
            proposals_for(uids::RLE_LOSSLESS),
            vec![vec![uids::RLE_LOSSLESS.to_string()]]
        );
        let implicit = proposals_for(uids::IMPLICIT_VR_LITTLE_ENDIAN);
        assert_eq!(
            implicit[0],
            vec![uids::IMPLICIT_VR_LITTLE_ENDIAN.to_string()],
            "stored syntax alone first"
        );
        assert_eq!(
            implicit[1],
            vec![uids::EXPLICIT_VR_LITTLE_ENDIAN.to_string()]
        );
    }
}
