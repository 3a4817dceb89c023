//! C-STORE SCP: receive into the spool → hand to archive-core's accept path → respond.
//!
//! The data set is spooled exactly as it arrived behind a preamble and a file meta group we
//! build (no re-encoding). archive-core's [`Acceptor`] makes it durable and indexes it; this
//! module only checks what the command and the presentation context say before any byte is
//! kept, and maps the outcome to a DIMSE status with an Error Comment. Nothing here closes the
//! association.

use crate::context::ScpContext;
use crate::dimse::{status, Command, Response};
use crate::syntaxes::is_storage_sop_class;
use archive_core::accept::{Acceptor, Arrival, Identity, Refusal, Spooled};
use archive_core::dicom_header;

pub use archive_core::dicom_header::{IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME};

/// One C-STORE whose data set is arriving.
pub struct IncomingObject {
    command: Command,
    transfer_syntax: String,
    calling_ae: String,
    /// `Err` once the object is known to fail: the rest of its data is read and dropped.
    spooled: Result<Spooled, (u16, String)>,
}

impl IncomingObject {
    pub async fn begin(
        context: &ScpContext,
        command: Command,
        abstract_syntax: &str,
        transfer_syntax: &str,
        calling_ae: &str,
    ) -> IncomingObject {
        let spooled = Self::open_spool(
            &context.acceptor,
            &command,
            abstract_syntax,
            transfer_syntax,
            calling_ae,
        )
        .await;
        IncomingObject {
            command,
            transfer_syntax: transfer_syntax.to_string(),
            calling_ae: calling_ae.to_string(),
            spooled,
        }
    }

    async fn open_spool(
        acceptor: &Acceptor,
        command: &Command,
        abstract_syntax: &str,
        transfer_syntax: &str,
        calling_ae: &str,
    ) -> Result<Spooled, (u16, String)> {
        let sop_class = &command.affected_sop_class_uid;
        if !is_storage_sop_class(sop_class) {
            return Err((
                status::SOP_CLASS_NOT_SUPPORTED,
                format!("{sop_class} is not a storage SOP class"),
            ));
        }
        if sop_class != abstract_syntax.trim_end_matches('\0') {
            return Err((
                status::DATA_SET_DOES_NOT_MATCH_SOP_CLASS,
                "SOP class differs from the presentation context".into(),
            ));
        }
        if command.affected_sop_instance_uid.is_empty() {
            return Err((
                status::MISSING_OR_INCONSISTENT_UID,
                "no Affected SOP Instance UID".into(),
            ));
        }
        let mut spooled = acceptor.begin().map_err(refusal_status)?;
        let header = part10_header(command, transfer_syntax, calling_ae)?;
        spooled
            .write_bytes(header.into())
            .await
            .map_err(refusal_status)?;
        Ok(spooled)
    }

    /// Appends one Data PDV's bytes (kept as they are until written, not copied).
    pub async fn receive(&mut self, bytes: Vec<u8>) {
        if let Ok(spooled) = &mut self.spooled {
            if let Err(refusal) = spooled.write_bytes(bytes.into()).await {
                self.spooled = Err(refusal_status(refusal));
            }
        }
    }

    /// Called after the last Data PDV: makes the object durable, indexes it, and returns the
    /// response to send and, when known, what the object was (for the audit trail).
    pub async fn complete(self, context: &ScpContext) -> (Response, Option<Identity>) {
        let command = self.command;
        let (code, comment, identity) = match self.spooled {
            Err((code, comment)) => (code, comment, None),
            Ok(spooled) => {
                let arrival = Arrival {
                    transfer_syntax: Some(&self.transfer_syntax),
                    source: &self.calling_ae,
                    sop_instance_uid: Some(&command.affected_sop_instance_uid),
                    sop_class_uid: Some(&command.affected_sop_class_uid),
                    study_uid: None,
                };
                match context.acceptor.accept(spooled, arrival).await {
                    Ok(accepted) => {
                        let response = Response::to(&command, status::SUCCESS);
                        return (response, Some(accepted.identity));
                    }
                    Err(refused) => {
                        let (code, comment) = refusal_status(refused.reason);
                        (code, comment, refused.identity)
                    }
                }
            }
        };
        // The comment can name patient IDs (a study under another patient): debug level only.
        tracing::info!(
            sop_instance_uid = %command.affected_sop_instance_uid,
            status = format_args!("{code:#06X}"),
            "C-STORE refused"
        );
        tracing::debug!(sop_instance_uid = %command.affected_sop_instance_uid, reason = %comment, "C-STORE refusal reason");
        (Response::to(&command, code).with_comment(comment), identity)
    }
}

/// The DIMSE status and Error Comment of a refusal.
fn refusal_status(refusal: Refusal) -> (u16, String) {
    (refusal.status(), refusal.to_string())
}

/// Preamble, `DICM`, and a file meta group describing the object as received.
fn part10_header(
    command: &Command,
    transfer_syntax: &str,
    calling_ae: &str,
) -> Result<Vec<u8>, (u16, String)> {
    dicom_header::part10_header(
        &command.affected_sop_class_uid,
        &command.affected_sop_instance_uid,
        transfer_syntax,
        calling_ae,
    )
    .map_err(|e| (status::MISSING_OR_INCONSISTENT_UID, e))
}

/// Used by tests and tools: the offset where the received data set starts in a stored file.
pub use archive_core::retrieve::part10_data_set_offset as data_set_offset;
