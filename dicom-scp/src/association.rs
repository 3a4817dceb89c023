//! One established association: reassemble DIMSE messages from P-DATA PDUs and route them.
//!
//! dicom-ul has no DIMSE layer. Command PDVs may span several PDUs (`is_last` ends them);
//! data PDVs stream into the C-STORE in progress as they arrive, so an object of any size
//! passes through with memory bounded by the PDU size and the writer's buffer.

use crate::command_pdvs::{Collected, CommandPdvs, MAX_COMMAND};
use crate::context::ScpContext;
use crate::dimse::{command_field as cf, status, Command, Response};
use crate::messaging::{send_message, Association, DicomStream};
use crate::operation::{run_operation, Operation};
use crate::received::ReceivedStudies;
use crate::retrieve::PeerContext;
use crate::store::IncomingObject;
use crate::syntaxes::is_storage_sop_class;
use dicom_ul::association::Association as _;
use dicom_ul::pdu::{PDataValue, PDataValueType, Pdu, PresentationContextResultReason};
use std::collections::HashMap;
use std::net::SocketAddr;

/// Largest C-FIND/C-MOVE/C-GET identifier accepted; real ones are a few hundred bytes.
const MAX_IDENTIFIER: usize = 1 << 20;

/// Accepted presentation context: abstract syntax and transfer syntax.
pub(crate) struct AcceptedContext {
    pub abstract_syntax: String,
    pub transfer_syntax: String,
}

/// What the data PDVs that follow a command are for.
enum Expecting {
    /// A C-STORE data set, and the presentation context its response goes on.
    Store(Box<IncomingObject>, u8),
    /// A data set we will not use (unsupported operation): read it, then send this response.
    Discard(Response, u8),
    /// A C-FIND, C-MOVE or C-GET identifier being collected.
    Query {
        operation: Operation,
        command: Command,
        pc_id: u8,
        identifier: Vec<u8>,
    },
}

enum Flow {
    Continue,
    Stop,
}

pub async fn serve<S: DicomStream>(
    mut association: Association<S>,
    context: &ScpContext,
    peer: SocketAddr,
) {
    let calling_ae = association.peer_ae_title().trim().to_string();
    let contexts: HashMap<u8, AcceptedContext> = association
        .presentation_contexts()
        .iter()
        .filter(|pc| pc.reason == PresentationContextResultReason::Acceptance)
        .map(|pc| {
            (
                pc.id,
                AcceptedContext {
                    abstract_syntax: pc.abstract_syntax.trim_end_matches('\0').to_string(),
                    transfer_syntax: pc.transfer_syntax.trim_end_matches('\0').to_string(),
                },
            )
        })
        .collect();
    let span = tracing::info_span!("association", calling_ae = %calling_ae, peer = %peer);
    let _entered = span.enter();
    tracing::info!(contexts = contexts.len(), "association established");
    drop(_entered);

    let mut command_pdvs = CommandPdvs::default();
    let mut expecting: Option<Expecting> = None;
    let mut received = ReceivedStudies::default();
    'session: loop {
        let pdu = match tokio::time::timeout(context.idle_timeout, association.receive()).await {
            Ok(Ok(pdu)) => pdu,
            Ok(Err(error)) => {
                tracing::info!(parent: &span, %error, "association ended without release");
                break 'session;
            }
            Err(_) => {
                tracing::info!(parent: &span, "association idle too long; aborting");
                abort(association, context).await;
                break 'session;
            }
        };
        let values = match pdu {
            Pdu::PData { data } => data,
            Pdu::ReleaseRQ => {
                let _ = association.send(&Pdu::ReleaseRP).await;
                tracing::info!(parent: &span, "association released");
                break 'session;
            }
            Pdu::AbortRQ { .. } => {
                tracing::info!(parent: &span, "association aborted by peer");
                break 'session;
            }
            other => {
                tracing::warn!(parent: &span, pdu = %other.short_description(), "unexpected PDU; aborting");
                abort(association, context).await;
                break 'session;
            }
        };
        for value in values {
            let flow = match value.value_type {
                PDataValueType::Command => {
                    let bytes = match command_pdvs.push(&value.data, value.is_last) {
                        Collected::Partial => continue,
                        Collected::Complete(bytes) => bytes,
                        Collected::TooLong => {
                            tracing::warn!(parent: &span, max = MAX_COMMAND, "command set too long");
                            abort(association, context).await;
                            break 'session;
                        }
                    };
                    on_command(
                        &mut association,
                        context,
                        &contexts,
                        &calling_ae,
                        &bytes,
                        value.presentation_context_id,
                        &mut expecting,
                    )
                    .await
                }
                PDataValueType::Data => {
                    let data = Data {
                        contexts: &contexts,
                        peer,
                        received: &mut received,
                    };
                    on_data(&mut association, context, data, value, &mut expecting).await
                }
            };
            if let Flow::Stop = flow {
                tracing::warn!(parent: &span, "protocol error; association aborted");
                abort(association, context).await;
                break 'session;
            }
        }
    }
    // An association that ends in any way (release, abort, error) reports what it stored.
    received.report(context, &calling_ae, peer).await;
}

async fn on_command<S: DicomStream>(
    association: &mut Association<S>,
    context: &ScpContext,
    contexts: &HashMap<u8, AcceptedContext>,
    calling_ae: &str,
    bytes: &[u8],
    pc_id: u8,
    expecting: &mut Option<Expecting>,
) -> Flow {
    let Some(accepted) = contexts.get(&pc_id) else {
        tracing::warn!(
            pc_id,
            "command on a presentation context that was not accepted"
        );
        return Flow::Stop;
    };
    if expecting.is_some() {
        tracing::warn!("new command while a data set was still expected");
        return Flow::Stop;
    }
    let command = match Command::decode(bytes) {
        Ok(command) => command,
        Err(error) => {
            tracing::warn!(%error, "undecodable command set");
            return Flow::Stop;
        }
    };
    match command.command_field {
        cf::C_ECHO_RQ => {
            send_response(association, pc_id, Response::to(&command, status::SUCCESS)).await
        }
        cf::C_STORE_RQ if command.has_data_set => {
            let object = IncomingObject::begin(
                context,
                command,
                &accepted.abstract_syntax,
                &accepted.transfer_syntax,
                calling_ae,
            )
            .await;
            *expecting = Some(Expecting::Store(Box::new(object), pc_id));
            Flow::Continue
        }
        cf::C_STORE_RQ => {
            let response = Response::to(&command, status::CANNOT_UNDERSTAND)
                .with_comment("C-STORE without a data set");
            send_response(association, pc_id, response).await
        }
        field
            if command.has_data_set
                && Operation::of(field, &accepted.abstract_syntax).is_some() =>
        {
            let Some(operation) = Operation::of(field, &accepted.abstract_syntax) else {
                return Flow::Stop;
            };
            *expecting = Some(Expecting::Query {
                operation,
                command,
                pc_id,
                identifier: Vec::new(),
            });
            Flow::Continue
        }
        // Nothing to cancel: DIMSE operations here run to completion before the next command.
        cf::C_CANCEL_RQ => Flow::Continue,
        other => {
            tracing::info!(
                command_field = format_args!("{other:#06X}"),
                "unsupported DIMSE operation"
            );
            let response = Response::to(&command, status::UNRECOGNIZED_OPERATION)
                .with_comment("operation not supported by this SCP");
            if command.has_data_set {
                *expecting = Some(Expecting::Discard(response, pc_id));
                Flow::Continue
            } else {
                send_response(association, pc_id, response).await
            }
        }
    }
}

/// What data PDVs need to know about the association they arrive on.
struct Data<'a> {
    contexts: &'a HashMap<u8, AcceptedContext>,
    peer: SocketAddr,
    received: &'a mut ReceivedStudies,
}

async fn on_data<S: DicomStream>(
    association: &mut Association<S>,
    context: &ScpContext,
    data: Data<'_>,
    value: PDataValue,
    expecting: &mut Option<Expecting>,
) -> Flow {
    let Data {
        contexts,
        peer,
        received,
    } = data;
    match expecting {
        Some(Expecting::Store(object, _)) => object.receive(value.data).await,
        Some(Expecting::Discard(..)) => {}
        Some(Expecting::Query {
            command,
            pc_id,
            identifier,
            ..
        }) => {
            if identifier.len() + value.data.len() > MAX_IDENTIFIER {
                let response = Response::to(command, status::OUT_OF_RESOURCES)
                    .with_comment("identifier too large");
                *expecting = Some(Expecting::Discard(response, *pc_id));
            } else {
                identifier.extend_from_slice(&value.data);
            }
        }
        None => {
            tracing::warn!("data set without a command");
            return Flow::Stop;
        }
    }
    if !value.is_last {
        return Flow::Continue;
    }
    match expecting.take() {
        Some(Expecting::Store(object, pc_id)) => {
            let (response, identity) = object.complete(context).await;
            received.add(identity.as_ref(), response.status == status::SUCCESS);
            send_response(association, pc_id, response).await
        }
        Some(Expecting::Discard(response, pc_id)) => {
            send_response(association, pc_id, response).await
        }
        Some(Expecting::Query {
            operation,
            command,
            pc_id,
            identifier,
        }) => {
            let Some(accepted) = contexts.get(&pc_id) else {
                return Flow::Stop;
            };
            let storage = storage_contexts(contexts);
            let keep_going = run_operation(
                association,
                context,
                operation,
                &command,
                pc_id,
                &accepted.transfer_syntax,
                &identifier,
                &storage,
                peer,
            )
            .await;
            if keep_going {
                Flow::Continue
            } else {
                Flow::Stop
            }
        }
        None => Flow::Continue,
    }
}

/// A-ABORT, bounded by the ARTIM time: a peer that stopped reading cannot hold the task.
async fn abort<S: DicomStream>(association: Association<S>, context: &ScpContext) {
    let _ = tokio::time::timeout(context.artim_timeout, association.abort()).await;
}

async fn send_response<S: DicomStream>(
    association: &mut Association<S>,
    pc_id: u8,
    response: Response,
) -> Flow {
    match send_message(association, pc_id, &response, None).await {
        Ok(()) => Flow::Continue,
        Err(error) => {
            tracing::info!(%error, "cannot send response");
            Flow::Stop
        }
    }
}

/// The storage contexts the requestor proposed: where a C-GET's C-STOREs go.
fn storage_contexts(contexts: &HashMap<u8, AcceptedContext>) -> Vec<PeerContext> {
    contexts
        .iter()
        .filter(|(_, c)| is_storage_sop_class(&c.abstract_syntax))
        .map(|(id, c)| PeerContext {
            id: *id,
            abstract_syntax: c.abstract_syntax.clone(),
            transfer_syntax: c.transfer_syntax.clone(),
        })
        .collect()
}
