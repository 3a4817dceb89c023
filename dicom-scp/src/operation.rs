//! The multi-response operations (C-FIND, C-MOVE, C-GET): which one a command asks for, and
//! running it once its identifier has arrived.

use crate::context::ScpContext;
use crate::dimse::{command_field as cf, Command};
use crate::find::{model_of, serve_find, FindContext};
use crate::messaging::Association;
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
    let retrieve = RetrieveContext {
        index: &context.index,
        retriever: &context.retriever,
        ae_title: &context.ae_title,
        max_pdu: context.max_pdu,
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
            let calling_ae = association.peer_ae_title().trim().to_string();
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
