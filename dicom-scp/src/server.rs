//! The DICOM listener: accept, negotiate, hand each association to its own task.

use crate::ae_policy::PeerAccess;
use crate::association;
use crate::context::ScpContext;
use crate::syntaxes::accepted_transfer_syntaxes;
use crate::syntaxes::is_storage_sop_class;
use dicom_dictionary_std::uids;
use dicom_ul::association::server::{AccessControl, Negotiation, ServerAssociationOptions};
use dicom_ul::pdu::{AssociationRJServiceUserReason, RequestorRoles, UserIdentity};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Serves associations until `shutdown` completes. Associations in progress keep running on
/// their own tasks; the caller decides how long to wait for them.
pub async fn run(
    listener: TcpListener,
    context: Arc<ScpContext>,
    shutdown: impl Future<Output = ()>,
) {
    let slots = Arc::new(Semaphore::new(context.max_associations));
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => accepted,
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
        // DCMTK peers stall ~40 ms per message with Nagle on; every socket gets NODELAY.
        if let Err(error) = socket.set_nodelay(true) {
            tracing::debug!(%error, "cannot set TCP_NODELAY");
        }
        let slot = slots.clone().try_acquire_owned().ok();
        let context = context.clone();
        tokio::spawn(async move { handle_connection(socket, peer, context, slot).await });
    }
}

async fn handle_connection(
    socket: TcpStream,
    peer: SocketAddr,
    context: Arc<ScpContext>,
    slot: Option<OwnedSemaphorePermit>,
) {
    let access = Access {
        peer: context.ae_policy.for_peer(peer.ip()),
        over_limit: slot.is_none(),
    };
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
    // dicom-ul closes the socket as soon as it has written an A-ASSOCIATE-RJ; a second handle
    // keeps the connection open until the peer has read it and closed (the ARTIM wait).
    let (socket, keeper) = match duplicate(socket) {
        Ok(pair) => pair,
        Err(error) => {
            tracing::warn!(%peer, %error, "cannot duplicate socket");
            return;
        }
    };
    match options.establish_async(socket).await {
        Ok(established) => {
            drop(keeper);
            association::serve(established, &context, peer).await
        }
        Err(error) => {
            tracing::info!(%peer, %error, "association not established");
            wait_for_peer_close(keeper).await;
        }
    }
    drop(slot);
}

fn duplicate(socket: TcpStream) -> std::io::Result<(TcpStream, TcpStream)> {
    let std_socket = socket.into_std()?;
    let copy = std_socket.try_clone()?;
    Ok((TcpStream::from_std(std_socket)?, TcpStream::from_std(copy)?))
}

/// Reads and discards until the peer closes, for at most ARTIM_TIMEOUT.
async fn wait_for_peer_close(mut socket: TcpStream) {
    use tokio::io::AsyncReadExt;
    const ARTIM_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);
    let mut buffer = [0u8; 1024];
    let _ = tokio::time::timeout(ARTIM_TIMEOUT, async {
        while matches!(socket.read(&mut buffer).await, Ok(n) if n > 0) {}
    })
    .await;
}

/// The AE policy, plus refusal when every association slot is taken.
struct Access {
    peer: PeerAccess,
    over_limit: bool,
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
        if self.over_limit {
            tracing::warn!(
                calling_ae = calling_ae_title.trim(),
                "association rejected: dicom.max_associations reached"
            );
            return Err(AssociationRJServiceUserReason::NoReasonGiven);
        }
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
