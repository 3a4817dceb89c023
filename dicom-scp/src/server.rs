//! The DICOM listener: accept, negotiate, hand each association to its own task.

use crate::ae_policy::PeerAccess;
use crate::association;
use crate::association_request::{self, RequestStart};
use crate::context::ScpContext;
use crate::syntaxes::accepted_transfer_syntaxes;
use crate::syntaxes::is_storage_sop_class;
use archive_core::admission::{Admission, AdmissionLimits, AdmissionPermit};
use archive_core::audit::{AuditAction, AuditOutcome, NewAuditEvent};
use archive_core::tls::rustls::ServerConfig;
use dicom_dictionary_std::uids;
use dicom_ul::association::server::{AccessControl, Negotiation, ServerAssociationOptions};
use dicom_ul::association::Association as _;
use dicom_ul::pdu::{AssociationRJServiceUserReason, RequestorRoles, UserIdentity};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Serves associations until `shutdown` completes. Associations in progress keep running on
/// their own tasks; the caller decides how long to wait for them.
///
/// A connection first takes a *pending* place (capped per host and in total, see
/// [`Admission`]) for as long as it negotiates, bounded by the ARTIM timer; only an accepted
/// A-ASSOCIATE-RQ takes one of the `max_associations` slots. Sockets that never finish a
/// request therefore cannot lock modalities out.
pub async fn run(
    listener: TcpListener,
    tls_listener: Option<TcpListener>,
    context: Arc<ScpContext>,
    shutdown: impl Future<Output = ()>,
) {
    let slots = Arc::new(Semaphore::new(context.max_associations));
    let pending = Admission::new(
        "dicom",
        AdmissionLimits {
            max_total: context.max_pending,
            max_per_host: context.max_pending_per_host,
            // A listed modality may open as many at once as the whole shared pool.
            max_per_trusted_host: context.max_pending,
        },
        context.ae_policy.listed_hosts(),
        true,
    );
    // Both ports share the association slots and the pending places.
    let tls = tls_listener.zip(context.tls_server.clone());
    tokio::pin!(shutdown);
    loop {
        let (accepted, tls_config) = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => (accepted, None),
            accepted = accept_tls(&tls) => accepted,
        };
        let (socket, peer) = match accepted {
            Ok(connection) => connection,
            Err(error) => {
                // Usually EMFILE: back off instead of spinning.
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        // Over the cap: closed before anything is read or allocated (Admission logs it).
        let Ok(pending_place) = pending.try_admit(peer.ip()) else {
            association_request::close(socket);
            continue;
        };
        // DCMTK peers stall ~40 ms per message with Nagle on; every socket gets NODELAY.
        if let Err(error) = socket.set_nodelay(true) {
            tracing::debug!(%error, "cannot set TCP_NODELAY");
        }
        let context = context.clone();
        let slots = slots.clone();
        let connection = Connection {
            socket,
            peer,
            slots,
            pending_place,
        };
        match tls_config {
            None => tokio::spawn(async move { handle_connection(connection, context).await }),
            Some(config) => {
                tokio::spawn(
                    async move { handle_tls_connection(connection, context, config).await },
                )
            }
        };
    }
}

/// The next connection on the TLS port, with its settings; never, when TLS is off.
async fn accept_tls(
    tls: &Option<(TcpListener, Arc<ServerConfig>)>,
) -> (
    std::io::Result<(TcpStream, SocketAddr)>,
    Option<Arc<ServerConfig>>,
) {
    match tls {
        Some((listener, config)) => (listener.accept().await, Some(config.clone())),
        None => std::future::pending().await,
    }
}

/// A connection and what it holds while it negotiates.
struct Connection {
    socket: TcpStream,
    peer: SocketAddr,
    slots: Arc<Semaphore>,
    pending_place: AdmissionPermit,
}

/// What every association is offered, on either port.
fn association_options(
    context: &ScpContext,
    access: Access,
) -> ServerAssociationOptions<'_, Access, StorageRoles> {
    let mut options = ServerAssociationOptions::new()
        .ae_access_control(access)
        .with_negotiation(StorageRoles)
        .ae_title(context.ae_title.as_str())
        .with_abstract_syntax(uids::VERIFICATION)
        .promiscuous(true)
        .max_pdu_length(context.max_pdu)
        .read_timeout(context.idle_timeout);
    for transfer_syntax in accepted_transfer_syntaxes() {
        options = options.with_transfer_syntax(transfer_syntax);
    }
    options
}

/// TLS port: the handshake and the A-ASSOCIATE-RQ together within the ARTIM time. The
/// request cannot be inspected in the receive buffer (it is encrypted), so the AE policy and
/// the association slots are applied by dicom-ul's access control as the request is read;
/// under mutual TLS a client without a certificate signed by `client_ca` fails the handshake.
async fn handle_tls_connection(
    connection: Connection,
    context: Arc<ScpContext>,
    tls_config: Arc<ServerConfig>,
) {
    let Connection {
        socket,
        peer,
        slots,
        pending_place,
    } = connection;
    let slot = Arc::new(Mutex::new(None));
    let access = Access {
        peer: context.ae_policy.for_peer(peer.ip()),
        slots,
        slot: slot.clone(),
    };
    let options = association_options(&context, access).tls_config(tls_config);
    let deadline = tokio::time::Instant::now() + context.artim_timeout;
    match tokio::time::timeout_at(deadline, options.establish_tls_async(socket)).await {
        Ok(Ok(established)) => {
            let calling_ae = established.peer_ae_title().trim().to_string();
            audit_accepted(&context, &calling_ae, peer, "association accepted over TLS").await;
            drop(pending_place);
            let slot = take_slot(&slot);
            association::serve(established, &context, peer).await;
            drop(slot);
        }
        Ok(Err(error)) => {
            tracing::info!(%peer, %error, "TLS association not established");
            audit_refused(&context, "", peer, format!("TLS: {error}"));
        }
        Err(_) => {
            tracing::debug!(%peer, "ARTIM timer expired during TLS negotiation");
        }
    }
}

async fn handle_connection(connection: Connection, context: Arc<ScpContext>) {
    let Connection {
        mut socket,
        peer,
        slots,
        pending_place,
    } = connection;
    let artim = context.artim_timeout;
    let deadline = tokio::time::Instant::now() + artim;
    let start = tokio::time::timeout_at(
        deadline,
        association_request::inspect(&socket, context.max_pdu),
    )
    .await;
    let (called_ae, calling_ae) = match start {
        Ok(Ok(RequestStart::Request {
            called_ae,
            calling_ae,
        })) => (called_ae, calling_ae),
        Ok(Ok(RequestStart::Invalid(reason))) => {
            tracing::info!(%peer, reason, "connection aborted before association");
            // Not a DICOM peer worth waiting for (a scanner, an HTTP client, garbage): no
            // ARTIM wait for its close; the A-ABORT is followed by our FIN at once.
            let _ = tokio::time::timeout(artim, association_request::abort(&mut socket)).await;
            association_request::close(socket);
            return;
        }
        Ok(Ok(RequestStart::Closed)) | Ok(Err(_)) => return,
        Err(_) => {
            tracing::debug!(%peer, "ARTIM timer expired before a complete A-ASSOCIATE-RQ; connection closed");
            association_request::close(socket);
            return;
        }
    };
    // The allow-list check, as soon as the request's fixed part names the AE titles.
    let peer_access = context.ae_policy.for_peer(peer.ip());
    if let Err(reason) = peer_access.check_access(&context.ae_title, &calling_ae, &called_ae, None)
    {
        audit_refused(
            &context,
            &calling_ae,
            peer,
            format!("called {called_ae}: {reason:?}"),
        );
        let _ = tokio::time::timeout(artim, async {
            association_request::reject(&mut socket, reason).await;
            association_request::drain_until_closed(&mut socket).await;
        })
        .await;
        return;
    }
    let slot = Arc::new(Mutex::new(None));
    let access = Access {
        peer: peer_access,
        slots,
        slot: slot.clone(),
    };
    let options = association_options(&context, access);
    // dicom-ul closes the socket as soon as it has written an A-ASSOCIATE-RJ; a second handle
    // keeps the connection open until the peer has read it and closed (the ARTIM wait).
    let (socket, mut keeper) = match duplicate(socket) {
        Ok(pair) => pair,
        Err(error) => {
            tracing::warn!(%peer, %error, "cannot duplicate socket");
            return;
        }
    };
    match tokio::time::timeout_at(deadline, options.establish_async(socket)).await {
        Ok(Ok(established)) => {
            let detail = format!("association accepted as {called_ae}");
            audit_accepted(&context, &calling_ae, peer, &detail).await;
            drop(keeper);
            drop(pending_place);
            let slot = take_slot(&slot);
            association::serve(established, &context, peer).await;
            drop(slot);
        }
        Ok(Err(error)) => {
            tracing::info!(%peer, %error, "association not established");
            audit_refused(
                &context,
                &calling_ae,
                peer,
                format!("called {called_ae}: {error}"),
            );
            let _ =
                tokio::time::timeout(artim, association_request::drain_until_closed(&mut keeper))
                    .await;
        }
        Err(_) => {
            tracing::debug!(%peer, "ARTIM timer expired during association negotiation");
            association_request::close(keeper);
        }
    }
}

async fn audit_accepted(context: &ScpContext, calling_ae: &str, peer: SocketAddr, detail: &str) {
    let event = NewAuditEvent::new(AuditAction::Association, AuditOutcome::Success, calling_ae)
        .peer(peer.ip())
        .detail(detail);
    context.auditor.record(event).await;
}

/// A refused association request. Anyone who can reach the port can cause these in bulk, so
/// they are dropped rather than waited for when the audit writer is behind.
fn audit_refused(context: &ScpContext, calling_ae: &str, peer: SocketAddr, detail: String) {
    let event = NewAuditEvent::new(AuditAction::Association, AuditOutcome::Failure, calling_ae)
        .peer(peer.ip())
        .detail(detail);
    context.auditor.record_unless_busy(event);
}

fn take_slot(slot: &Mutex<Option<OwnedSemaphorePermit>>) -> Option<OwnedSemaphorePermit> {
    slot.lock().unwrap_or_else(PoisonError::into_inner).take()
}

fn duplicate(socket: TcpStream) -> std::io::Result<(TcpStream, TcpStream)> {
    let std_socket = socket.into_std()?;
    let copy = std_socket.try_clone()?;
    Ok((TcpStream::from_std(std_socket)?, TcpStream::from_std(copy)?))
}

/// The AE policy, then an association slot: taken only for a request that passed the policy,
/// so slots count associations, not sockets.
struct Access {
    peer: PeerAccess,
    slots: Arc<Semaphore>,
    /// Where the slot is kept for the association's lifetime (dicom-ul owns `self`).
    slot: Arc<Mutex<Option<OwnedSemaphorePermit>>>,
}

impl AccessControl for Access {
    fn check_access(
        &self,
        this_ae_title: &str,
        calling_ae_title: &str,
        called_ae_title: &str,
        user_identity: Option<&UserIdentity>,
    ) -> Result<(), AssociationRJServiceUserReason> {
        self.peer.check_access(
            this_ae_title,
            calling_ae_title,
            called_ae_title,
            user_identity,
        )?;
        let Ok(permit) = self.slots.clone().try_acquire_owned() else {
            tracing::warn!(
                calling_ae = calling_ae_title.trim(),
                "association rejected: dicom.max_associations reached"
            );
            return Err(AssociationRJServiceUserReason::NoReasonGiven);
        };
        *self.slot.lock().unwrap_or_else(PoisonError::into_inner) = Some(permit);
        Ok(())
    }
}

/// SCP/SCU role selection: a C-GET requestor asks to be SCP for the storage classes it wants
/// to receive; granting it is what lets C-GET send C-STOREs back on the same association.
struct StorageRoles;

impl Negotiation for StorageRoles {
    fn negotiate_roles(
        &self,
        sop_class_uid: &str,
        scu_role: bool,
        scp_role: bool,
    ) -> Option<RequestorRoles> {
        is_storage_sop_class(sop_class_uid.trim_end_matches('\0')).then_some(RequestorRoles {
            scu: scu_role,
            scp: scp_role,
        })
    }
}
