//! Sending DIMSE messages on an accepted association, and noticing C-CANCEL while a
//! multi-response operation (C-FIND, C-MOVE, C-GET) is under way.

use crate::dimse::{command_field, Command, Response};
use dicom_ul::association::{AsyncAssociation, AsyncServerAssociation};
use dicom_ul::pdu::{write_pdu, PDataValue, PDataValueType, Pdu};
use std::future::Future;
use tokio::io::AsyncWriteExt;
use tokio::io::{AsyncRead, AsyncWrite};

/// The byte stream under an association: a TCP socket, or TLS over one (`dicom.tls`).
pub trait DicomStream: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> DicomStream for T {}

/// An association we accepted, over either kind of stream.
pub type Association<S> = AsyncServerAssociation<S>;

#[derive(Debug, thiserror::Error)]
#[error("cannot send: {0}")]
pub struct SendError(pub String);

/// Sends a command and, if given, its data set, split to fit the peer's maximum PDU length.
pub async fn send_message<S: DicomStream, A: AsyncAssociation<S> + Send>(
    association: &mut A,
    pc_id: u8,
    response: &Response,
    data_set: Option<&[u8]>,
) -> Result<(), SendError> {
    send_fragments(
        association,
        pc_id,
        PDataValueType::Command,
        &response.encode(),
    )
    .await?;
    if let Some(data_set) = data_set {
        send_fragments(association, pc_id, PDataValueType::Data, data_set).await?;
    }
    Ok(())
}

/// Sends the final response of an operation and notes its status for the audit trail;
/// false when the association is unusable.
pub async fn send_final<S: DicomStream, A: AsyncAssociation<S> + Send>(
    association: &mut A,
    pc_id: u8,
    response: &Response,
    data_set: Option<&[u8]>,
    final_status: &mut Option<u16>,
) -> bool {
    *final_status = Some(response.status);
    send_message(association, pc_id, response, data_set)
        .await
        .is_ok()
}

/// Sends `bytes` as one complete message part (command or data set).
pub async fn send_fragments<S: DicomStream, A: AsyncAssociation<S> + Send>(
    association: &mut A,
    pc_id: u8,
    value_type: PDataValueType,
    bytes: &[u8],
) -> Result<(), SendError> {
    send_piece(association, pc_id, value_type, bytes, true).await
}

/// Sends `bytes` as PDVs of `value_type`, the last PDV marked last only when `last` is set:
/// a data set streamed in several pieces is still one message.
pub async fn send_piece<S: DicomStream, A: AsyncAssociation<S> + Send>(
    association: &mut A,
    pc_id: u8,
    value_type: PDataValueType,
    bytes: &[u8],
    last: bool,
) -> Result<(), SendError> {
    // PDU payload = per PDV: 4 bytes length + context id + control header + data.
    let peer_max = association.peer_max_pdu_length() as usize;
    let chunk = if peer_max == 0 {
        1 << 20
    } else {
        peer_max.saturating_sub(6).max(1)
    };
    let pieces: Vec<&[u8]> = if bytes.is_empty() {
        vec![&[]]
    } else {
        bytes.chunks(chunk).collect()
    };
    // All PDUs of this piece are encoded into one buffer and written with one call: a 128 KiB
    // object to a peer with 16 KiB PDUs is then one write, not nine. Writing to the inner
    // stream is allowed at PDU boundaries, which this is.
    let final_piece = pieces.len() - 1;
    let mut wire = Vec::with_capacity(bytes.len() + pieces.len() * 12);
    for (position, piece) in pieces.into_iter().enumerate() {
        let value = PDataValue {
            presentation_context_id: pc_id,
            value_type: value_type.clone(),
            is_last: last && position == final_piece,
            data: piece.to_vec(),
        };
        write_pdu(&mut wire, &Pdu::PData { data: vec![value] })
            .map_err(|e| SendError(e.to_string()))?;
    }
    association
        .inner_stream()
        .write_all(&wire)
        .await
        .map_err(|e| SendError(e.to_string()))
}

/// What arrived while an operation was sending its responses.
pub enum Interruption {
    Nothing,
    /// C-CANCEL for this operation.
    Cancelled,
    /// The peer aborted or closed, or broke the protocol: stop everything.
    Gone,
}

/// Reads one whole DIMSE command (which may span PDUs), skipping nothing: for waiting on a
/// C-STORE response during C-MOVE and C-GET.
pub async fn read_command<S: DicomStream, A: AsyncAssociation<S> + Send>(
    association: &mut A,
) -> Result<Command, SendError> {
    let mut bytes = Vec::new();
    loop {
        match AsyncAssociation::receive(association)
            .await
            .map_err(|e| SendError(e.to_string()))?
        {
            Pdu::PData { data } => {
                for value in data {
                    if value.value_type != PDataValueType::Command {
                        return Err(SendError("data where a command was expected".into()));
                    }
                    bytes.extend_from_slice(&value.data);
                    if value.is_last {
                        return Command::decode(&bytes).map_err(|e| SendError(e.to_string()));
                    }
                }
            }
            other => {
                return Err(SendError(format!(
                    "unexpected {}",
                    other.short_description()
                )))
            }
        }
    }
}

/// Looks, without waiting, for a C-CANCEL of `message_id`. dicom-ul's `receive` only reads
/// into the association's buffer, so abandoning it when nothing is there loses nothing.
pub async fn check_for_cancel<S: DicomStream, A: AsyncAssociation<S> + Send>(
    association: &mut A,
    message_id: u16,
) -> Interruption {
    // Yield first: tokio then polls its I/O driver before resuming us, so socket readiness is
    // current and a C-CANCEL that has arrived is seen. Then poll the receive exactly once.
    // (tokio::time::timeout(ZERO, …) is not that: its timer only fires at the next millisecond
    // tick, which cost ~1 ms per pending response and per retrieve sub-operation.)
    tokio::task::yield_now().await;
    let pdu = {
        let receive = std::pin::pin!(AsyncAssociation::receive(association));
        let mut context = std::task::Context::from_waker(std::task::Waker::noop());
        match receive.poll(&mut context) {
            std::task::Poll::Pending => return Interruption::Nothing,
            std::task::Poll::Ready(Err(_)) => return Interruption::Gone,
            std::task::Poll::Ready(Ok(pdu)) => pdu,
        }
    };
    match pdu {
        Pdu::PData { data } => {
            let mut command = Vec::new();
            for value in &data {
                if value.value_type != PDataValueType::Command {
                    return Interruption::Gone;
                }
                command.extend_from_slice(&value.data);
            }
            match Command::decode(&command) {
                Ok(cancel)
                    if cancel.command_field == command_field::C_CANCEL_RQ
                        && cancel.message_id == message_id =>
                {
                    Interruption::Cancelled
                }
                _ => Interruption::Gone,
            }
        }
        _ => Interruption::Gone,
    }
}
