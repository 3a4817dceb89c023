//! The multi-response operations (C-FIND, C-MOVE, C-GET): which one a command asks for, and
//! running it once its identifier has arrived.

use crate::context::ScpContext;
use crate::dimse::{command_field as cf, status, Command, Response};
use crate::find::{model_of, serve_find, FindContext};
use crate::messaging::{send_message, Association};
use crate::retrieve::{
    get_model_of, move_model_of, serve_get, serve_move, PeerContext, RetrieveContext,
};
use archive_core::query::Model;
use dicom_ul::association::Association as _;

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
pub async fn run_operation(
    association: &mut Association,
    context: &ScpContext,
    operation: Operation,
    command: &Command,
    pc_id: u8,
    transfer_syntax: &str,
    identifier: &[u8],
    storage_contexts: &[PeerContext],
) -> bool {
    let calling_ae = association.peer_ae_title().trim().to_string();
    if let Some(refusal) = not_allowed(context, operation, &calling_ae).await {
        tracing::info!(calling_ae = %calling_ae, %refusal, "operation refused");
        let response = Response::to(command, status::NOT_AUTHORIZED).with_comment(refusal);
        return send_message(association, pc_id, &response, None)
            .await
            .is_ok();
    }
    let retrieve = RetrieveContext {
        index: &context.index,
        retriever: &context.retriever,
        ae_title: &context.ae_title,
        max_pdu: context.max_pdu,
        artim_timeout: context.artim_timeout,
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
                &calling_ae,
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
