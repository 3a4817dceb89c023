//! C-MOVE SCP: a sub-association to the destination as SCU, one C-STORE per instance, a
//! pending response after each, C-CANCEL honoured between sub-operations.

use super::sub_store::{proposals_for, send_sub_operation, PeerContext, Sent, SubOutcome};
use super::{next_keeping_alive, resolve, studies_of, Prefetch, Progress, RetrieveContext};
use crate::dimse::{encode_c_store_rq_for_move, status, Command, Response};
use crate::messaging::{
    check_for_cancel, read_command, send_final, send_message, Association, DicomStream,
    Interruption,
};
use archive_core::index::InstanceLocation;
use archive_core::model::AePeer;
use archive_core::query::Model;
use archive_core::retrieve::{OpenedInstance, RetrieveError};
use dicom_ul::association::client::{
    AsyncClientAssociation, AsyncTlsStream as ClientTlsStream, ClientAssociationOptions,
};
use dicom_ul::pdu::PresentationContextResultReason;
use std::time::Duration;
use tokio::net::TcpStream;

/// Most presentation contexts one association may carry (odd ids 1–255).
const MAX_CONTEXTS: usize = 128;

/// Runs one C-MOVE; returns false when the association must end.
#[allow(clippy::too_many_arguments)]
pub async fn serve_move<S: DicomStream>(
    association: &mut Association<S>,
    context: &RetrieveContext<'_>,
    command: &Command,
    pc_id: u8,
    model: Model,
    transfer_syntax: &str,
    identifier: &[u8],
    calling_ae: &str,
    final_status: &mut Option<u16>,
) -> bool {
    let destination = match context.index.ae_get(&command.move_destination).await {
        Ok(Some(peer)) if peer.can_store => peer,
        Ok(_) => {
            let comment = format!(
                "Move Destination `{}` is not a known peer (strata ae add)",
                command.move_destination
            );
            tracing::info!(destination = %command.move_destination, "C-MOVE: unknown destination");
            let response =
                Response::to(command, status::MOVE_DESTINATION_UNKNOWN).with_comment(comment);
            return send_final(association, pc_id, &response, None, final_status).await;
        }
        Err(error) => {
            tracing::error!(%error, "C-MOVE: cannot read the peer table");
            let response = Response::to(command, status::UNABLE_TO_PERFORM_SUBOPERATIONS)
                .with_comment("index unavailable");
            return send_final(association, pc_id, &response, None, final_status).await;
        }
    };
    let (locations, level) =
        match resolve(context.index, command, model, transfer_syntax, identifier).await {
            Ok(resolved) => resolved,
            Err(response) => {
                return send_final(association, pc_id, &response, None, final_status).await
            }
        };
    tracing::info!(destination = %destination.ae_title, instances = locations.len(), "C-MOVE");
    if locations.is_empty() {
        let (response, data) = Progress::new(0).finish(command, false, transfer_syntax);
        return send_final(association, pc_id, &response, data.as_deref(), final_status).await;
    }
    let sub = Sub {
        context,
        destination: &destination,
        calling_ae,
        pc_id,
        command,
    };
    let moved = match open_sub_association(context, &destination, &locations).await {
        Ok(SubAssociation::Plain(client)) => {
            move_instances(association, client, &sub, &locations, level).await
        }
        Ok(SubAssociation::Tls(client)) => {
            move_instances(association, client, &sub, &locations, level).await
        }
        Err(error) => {
            tracing::warn!(destination = %destination.ae_title, %error, "C-MOVE: cannot associate with destination");
            let comment = format!(
                "cannot associate with {} at {}:{}: {error}",
                destination.ae_title, destination.host, destination.port
            );
            let response = Response::to(command, status::UNABLE_TO_PERFORM_SUBOPERATIONS)
                .with_comment(comment);
            return send_final(association, pc_id, &response, None, final_status).await;
        }
    };
    let Some((progress, cancelled)) = moved else {
        return false;
    };
    record_access(context, &locations).await;
    let (response, data) = progress.finish(command, cancelled, transfer_syntax);
    send_final(association, pc_id, &response, data.as_deref(), final_status).await
}

/// A sub-association to the destination, plain or TLS (peers marked `tls`).
// One per C-MOVE, moved once: the TLS variant's size (rustls's state) costs nothing here.
#[allow(clippy::large_enum_variant)]
enum SubAssociation {
    Plain(AsyncClientAssociation<TcpStream>),
    Tls(AsyncClientAssociation<ClientTlsStream>),
}

/// What sending over a sub-association needs to know about the C-MOVE.
struct Sub<'a, 'c> {
    context: &'a RetrieveContext<'c>,
    destination: &'a AePeer,
    calling_ae: &'a str,
    pc_id: u8,
    command: &'a Command,
}

/// Sends every instance over `client`, with pending responses and C-CANCEL on the way; the
/// counts and whether it was cancelled, or `None` when the requester's association is gone.
async fn move_instances<S: DicomStream, C: DicomStream>(
    association: &mut Association<S>,
    mut client: AsyncClientAssociation<C>,
    sub: &Sub<'_, '_>,
    locations: &[InstanceLocation],
    level: archive_core::query::Level,
) -> Option<(Progress, bool)> {
    let Sub {
        context,
        destination,
        calling_ae,
        pc_id,
        command,
    } = *sub;
    let peer_contexts: Vec<PeerContext> = client
        .presentation_contexts()
        .iter()
        .filter(|pc| pc.reason == PresentationContextResultReason::Acceptance)
        .map(|pc| PeerContext {
            id: pc.id,
            abstract_syntax: pc.abstract_syntax.clone(),
            transfer_syntax: pc.transfer_syntax.clone(),
        })
        .collect();

    let mut progress = Progress::new(locations.len());
    let mut cancelled = false;
    let mut sub_association_ok = true;
    let mut reader = Prefetch::new(context.retriever, locations, level);
    for (position, location) in locations.iter().enumerate() {
        let Ok(opened) =
            next_keeping_alive(&mut reader, association, pc_id, &progress, command).await
        else {
            end_sub_association(client, false, context.artim_timeout).await;
            return None;
        };
        match check_for_cancel(association, command.message_id).await {
            Interruption::Nothing => {}
            Interruption::Cancelled => {
                cancelled = true;
                break;
            }
            Interruption::Gone => {
                end_sub_association(client, false, context.artim_timeout).await;
                return None;
            }
        }
        let message_id = (position % 0xFFFF) as u16 + 1;
        let outcome = if sub_association_ok {
            let outcome = store_one(
                &mut client,
                opened,
                &peer_contexts,
                location,
                message_id,
                calling_ae,
                command.message_id,
            )
            .await;
            if let Err(reason) = &outcome {
                tracing::warn!(destination = %destination.ae_title, %reason, "C-MOVE: sub-association broke");
                sub_association_ok = false;
            }
            outcome.unwrap_or_else(SubOutcome::Failed)
        } else {
            SubOutcome::Failed("the sub-association broke".into())
        };
        progress.record(&location.sop_uid, outcome);
        if progress.pending_due()
            && send_message(association, pc_id, &progress.pending(command), None)
                .await
                .is_err()
        {
            end_sub_association(client, false, context.artim_timeout).await;
            return None;
        }
    }
    end_sub_association(client, sub_association_ok, context.artim_timeout).await;
    Some((progress, cancelled))
}

/// One sub-operation. `Err` means the sub-association is unusable.
async fn store_one<C: DicomStream>(
    client: &mut AsyncClientAssociation<C>,
    opened: Result<OpenedInstance, RetrieveError>,
    peer_contexts: &[PeerContext],
    location: &InstanceLocation,
    message_id: u16,
    originator: &str,
    originator_message_id: u16,
) -> Result<SubOutcome, String> {
    let request = || {
        encode_c_store_rq_for_move(
            message_id,
            &location.sop_class_uid,
            &location.sop_uid,
            originator,
            originator_message_id,
        )
    };
    if let Sent::NotSent(outcome) =
        send_sub_operation(client, opened, peer_contexts, request).await?
    {
        return Ok(outcome);
    }
    let answer = read_command(client).await.map_err(|e| e.to_string())?;
    Ok(SubOutcome::from_status(
        answer.status.unwrap_or(status::CANNOT_UNDERSTAND),
        answer.error_comment,
    ))
}

/// Associates with the destination, proposing each stored (SOP class, transfer syntax) pair.
async fn open_sub_association(
    context: &RetrieveContext<'_>,
    destination: &AePeer,
    locations: &[InstanceLocation],
) -> Result<SubAssociation, String> {
    let mut pairs: Vec<(String, String)> = locations
        .iter()
        .map(|l| (l.sop_class_uid.clone(), l.transfer_syntax.clone()))
        .collect();
    pairs.sort();
    pairs.dedup();
    pairs.truncate(MAX_CONTEXTS / 2);
    let mut options = ClientAssociationOptions::new()
        .calling_ae_title(context.ae_title.to_string())
        .called_ae_title(destination.ae_title.clone())
        .max_pdu_length(context.max_pdu)
        .connection_timeout(Duration::from_secs(10))
        .read_timeout(Duration::from_secs(120));
    for (sop_class, stored) in pairs {
        for syntaxes in proposals_for(&stored) {
            options = options.with_presentation_context(sop_class.clone(), syntaxes);
        }
    }
    let address = (destination.host.as_str(), destination.port);
    // DCMTK peers stall per message with Nagle on.
    if destination.tls {
        let tls = context.tls_client.clone().ok_or_else(|| {
            format!(
                "{} is marked tls, but dicom.tls (cert, key, peer_ca) is not configured",
                destination.ae_title
            )
        })?;
        let mut client = options
            .tls_config(tls)
            .server_name(&destination.host)
            .establish_tls_async(address)
            .await
            .map_err(|e| e.to_string())?;
        let _ = client.inner_stream().get_ref().0.set_nodelay(true);
        return Ok(SubAssociation::Tls(client));
    }
    let mut client = options
        .establish_async(address)
        .await
        .map_err(|e| e.to_string())?;
    let _ = client.inner_stream().set_nodelay(true);
    Ok(SubAssociation::Plain(client))
}

/// Releases (or aborts) the sub-association, waiting for the destination's A-RELEASE-RP at
/// most the ARTIM time: a destination that never answers must not hold the C-MOVE.
async fn end_sub_association<C: DicomStream>(
    client: AsyncClientAssociation<C>,
    release: bool,
    artim: Duration,
) {
    let ended = if release {
        tokio::time::timeout(artim, client.release()).await
    } else {
        tokio::time::timeout(artim, client.abort()).await
    };
    if ended.is_err() {
        tracing::info!(
            "C-MOVE: destination did not answer the release within the ARTIM time; closed"
        );
    }
}

async fn record_access(context: &RetrieveContext<'_>, locations: &[InstanceLocation]) {
    let studies = studies_of(locations);
    if let Err(error) = context
        .index
        .touch_studies(&studies, archive_core::index::now_millis())
        .await
    {
        tracing::warn!(%error, "cannot record study access");
    }
}
