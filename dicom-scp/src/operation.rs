//! The multi-response operations (C-FIND, C-MOVE, C-GET): which one a command asks for, and
//! running it once its identifier has arrived.

use crate::context::ScpContext;
use crate::dimse::{command_field as cf, status, Command, Response};
use crate::find::{model_of, serve_find, FindContext};
use crate::messaging::{send_final, Association, DicomStream};
use crate::retrieve::{
    get_model_of, move_model_of, serve_get, serve_move, PeerContext, RetrieveContext,
};
use archive_core::audit::{AuditAction, AuditOutcome, NewAuditEvent};
use archive_core::dicom_header::text;
use archive_core::query::Model;
use dicom_dictionary_std::tags;
use dicom_encoding::TransferSyntaxIndex;
use dicom_object::InMemDicomObject;
use dicom_transfer_syntax_registry::TransferSyntaxRegistry;
use dicom_ul::association::Association as _;
use std::net::SocketAddr;

#[derive(Clone, Copy, Debug)]
pub enum Operation {
    Find(Model),
    Move(Model),
    Get(Model),
}

impl Operation {
    /// The operation `command_field` asks for on a context of `abstract_syntax`, if we serve it.
    pub fn of(command_field: u16, abstract_syntax: &str) -> Option<Operation> {
        match command_field {
            cf::C_FIND_RQ => model_of(abstract_syntax).map(Operation::Find),
            cf::C_MOVE_RQ => move_model_of(abstract_syntax).map(Operation::Move),
            cf::C_GET_RQ => get_model_of(abstract_syntax).map(Operation::Get),
            _ => None,
        }
    }
}

/// Runs the operation; false when the association must end.
#[allow(clippy::too_many_arguments)]
pub async fn run_operation<S: DicomStream>(
    association: &mut Association<S>,
    context: &ScpContext,
    operation: Operation,
    command: &Command,
    pc_id: u8,
    transfer_syntax: &str,
    identifier: &[u8],
    storage_contexts: &[PeerContext],
    peer: SocketAddr,
) -> bool {
    let calling_ae = association.peer_ae_title().trim().to_string();
    let mut final_status = None;
    let keep_going = if let Some(refusal) = not_allowed(context, operation, &calling_ae).await {
        tracing::info!(calling_ae = %calling_ae, %refusal, "operation refused");
        let response = Response::to(command, status::NOT_AUTHORIZED).with_comment(refusal);
        send_final(association, pc_id, &response, None, &mut final_status).await
    } else {
        serve(
            association,
            context,
            operation,
            command,
            pc_id,
            transfer_syntax,
            identifier,
            storage_contexts,
            &calling_ae,
            &mut final_status,
        )
        .await
    };
    let (study, patient) = requested_study_and_patient(identifier, transfer_syntax);
    let event = audit_event(operation, command, &calling_ae, final_status)
        .peer(peer.ip())
        .study(study)
        .patient(patient);
    context.auditor.record(event).await;
    keep_going
}

/// The audit event of a finished operation (study and patient are added by the caller).
fn audit_event(
    operation: Operation,
    command: &Command,
    calling_ae: &str,
    final_status: Option<u16>,
) -> NewAuditEvent {
    let (action, name) = match operation {
        Operation::Find(_) => (AuditAction::Query, "C-FIND"),
        Operation::Move(_) => (AuditAction::Retrieve, "C-MOVE"),
        Operation::Get(_) => (AuditAction::Retrieve, "C-GET"),
    };
    let success = matches!(final_status, Some(status::SUCCESS));
    let status = match final_status {
        Some(code) => format!("status {code:#06X}"),
        None => "association lost before the final response".to_string(),
    };
    let detail = match operation {
        Operation::Move(_) => format!("{name} to {}: {status}", command.move_destination),
        _ => format!("{name}: {status}"),
    };
    NewAuditEvent::new(action, AuditOutcome::of(success), calling_ae).detail(detail)
}

/// The Study Instance UID and Patient ID the request's identifier names (empty if absent or
/// unreadable): the audit event records what was asked for.
fn requested_study_and_patient(identifier: &[u8], transfer_syntax: &str) -> (String, String) {
    TransferSyntaxRegistry
        .get(transfer_syntax)
        .and_then(|ts| InMemDicomObject::read_dataset_with_ts(identifier, ts).ok())
        .map(|object| {
            (
                text(&object, tags::STUDY_INSTANCE_UID),
                text(&object, tags::PATIENT_ID),
            )
        })
        .unwrap_or_default()
}

#[allow(clippy::too_many_arguments)]
async fn serve<S: DicomStream>(
    association: &mut Association<S>,
    context: &ScpContext,
    operation: Operation,
    command: &Command,
    pc_id: u8,
    transfer_syntax: &str,
    identifier: &[u8],
    storage_contexts: &[PeerContext],
    calling_ae: &str,
    final_status: &mut Option<u16>,
) -> bool {
    let retrieve = RetrieveContext {
        index: &context.index,
        retriever: &context.retriever,
        ae_title: &context.ae_title,
        max_pdu: context.max_pdu,
        artim_timeout: context.artim_timeout,
        tls_client: context.tls_client.clone(),
    };
    match operation {
        Operation::Find(model) => {
            let find = FindContext {
                index: &context.index,
                ae_title: &context.ae_title,
                max_results: context.max_find_results,
            };
            serve_find(
                association,
                &find,
                command,
                pc_id,
                model,
                transfer_syntax,
                identifier,
                final_status,
            )
            .await
        }
        Operation::Move(model) => {
            serve_move(
                association,
                &retrieve,
                command,
                pc_id,
                model,
                transfer_syntax,
                identifier,
                calling_ae,
                final_status,
            )
            .await
        }
        Operation::Get(model) => {
            serve_get(
                association,
                &retrieve,
                command,
                pc_id,
                model,
                transfer_syntax,
                identifier,
                storage_contexts,
                final_status,
            )
            .await
        }
    }
}

/// Why a calling AE listed in the peer table may not run `operation`, if it may not. AEs not
/// in the table are governed by the association policy alone.
async fn not_allowed(
    context: &ScpContext,
    operation: Operation,
    calling_ae: &str,
) -> Option<String> {
    let peer = match context.index.ae_get(calling_ae).await {
        Ok(Some(peer)) => peer,
        Ok(None) => return None,
        Err(error) => {
            tracing::warn!(%error, "cannot read the peer table; allowing the operation");
            return None;
        }
    };
    match operation {
        Operation::Find(_) if !peer.can_query => Some(format!(
            "{calling_ae} may not query (strata ae add … without --no-query)"
        )),
        Operation::Move(_) | Operation::Get(_) if !peer.can_retrieve => Some(format!(
            "{calling_ae} may not retrieve (strata ae add … without --no-retrieve)"
        )),
        _ => None,
    }
}
