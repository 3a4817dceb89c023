//! C-GET SCP: the same as C-MOVE, but the C-STOREs go back on the requesting association, on
//! the storage contexts it proposed (with SCP role selection).

use super::sub_store::{send_sub_operation, PeerContext, Sent, SubOutcome};
use super::{next_keeping_alive, resolve, studies_of, Prefetch, Progress, RetrieveContext};
use crate::dimse::{command_field, encode_c_store_rq, status, Command};
use crate::messaging::{
    check_for_cancel, read_command, send_final, send_message, Association, DicomStream,
    Interruption,
};
use archive_core::index::InstanceLocation;
use archive_core::query::Model;
use archive_core::retrieve::{OpenedInstance, RetrieveError};

/// Runs one C-GET; returns false when the association must end.
#[allow(clippy::too_many_arguments)]
pub async fn serve_get<S: DicomStream>(
    association: &mut Association<S>,
    context: &RetrieveContext<'_>,
    command: &Command,
    pc_id: u8,
    model: Model,
    transfer_syntax: &str,
    identifier: &[u8],
    storage_contexts: &[PeerContext],
    final_status: &mut Option<u16>,
) -> bool {
    let (locations, level) =
        match resolve(context.index, command, model, transfer_syntax, identifier).await {
            Ok(resolved) => resolved,
            Err(response) => {
                return send_final(association, pc_id, &response, None, final_status).await
            }
        };
    tracing::info!(instances = locations.len(), "C-GET");
    let mut progress = Progress::new(locations.len());
    let mut cancelled = false;
    let mut reader = Prefetch::new(context.retriever, &locations, level);
    for (position, location) in locations.iter().enumerate() {
        let Ok(opened) =
            next_keeping_alive(&mut reader, association, pc_id, &progress, command).await
        else {
            return false;
        };
        if !cancelled {
            match check_for_cancel(association, command.message_id).await {
                Interruption::Nothing => {}
                Interruption::Cancelled => cancelled = true,
                Interruption::Gone => return false,
            }
        }
        if cancelled {
            break;
        }
        let message_id = (position % 0xFFFF) as u16 + 1;
        let outcome = match store_one(
            association,
            opened,
            storage_contexts,
            location,
            message_id,
            command.message_id,
            &mut cancelled,
        )
        .await
        {
            Ok(outcome) => outcome,
            Err(reason) => {
                tracing::info!(%reason, "C-GET: association unusable");
                return false;
            }
        };
        progress.record(&location.sop_uid, outcome);
        if progress.pending_due()
            && send_message(association, pc_id, &progress.pending(command), None)
                .await
                .is_err()
        {
            return false;
        }
    }
    let studies = studies_of(&locations);
    if let Err(error) = context
        .index
        .touch_studies(&studies, archive_core::index::now_millis())
        .await
    {
        tracing::warn!(%error, "cannot record study access");
    }
    let (response, data) = progress.finish(command, cancelled, transfer_syntax);
    send_final(association, pc_id, &response, data.as_deref(), final_status).await
}

/// One sub-operation on the requesting association. A C-CANCEL for the C-GET may arrive
/// while we wait for the C-STORE response: it is noted in `cancelled`.
async fn store_one<S: DicomStream>(
    association: &mut Association<S>,
    opened: Result<OpenedInstance, RetrieveError>,
    storage_contexts: &[PeerContext],
    location: &InstanceLocation,
    message_id: u16,
    get_message_id: u16,
    cancelled: &mut bool,
) -> Result<SubOutcome, String> {
    let request = || encode_c_store_rq(message_id, &location.sop_class_uid, &location.sop_uid);
    if let Sent::NotSent(outcome) =
        send_sub_operation(association, opened, storage_contexts, request).await?
    {
        return Ok(outcome);
    }
    loop {
        let answer = read_command(association).await.map_err(|e| e.to_string())?;
        if answer.command_field == command_field::C_CANCEL_RQ && answer.message_id == get_message_id
        {
            *cancelled = true;
            continue;
        }
        if answer.command_field == command_field::C_STORE_RQ | command_field::RESPONSE_BIT {
            return Ok(SubOutcome::from_status(
                answer.status.unwrap_or(status::CANNOT_UNDERSTAND),
                answer.error_comment,
            ));
        }
        return Err(format!(
            "unexpected command {:#06X} during C-GET",
            answer.command_field
        ));
    }
}
