//! What the DICOM services need from the rest of the archive, built once by the binary.

use crate::ae_policy::AePolicy;
use archive_core::accept::Acceptor;
use archive_core::audit::Auditor;
use archive_core::config::Config;
use archive_core::index::Index;
use archive_core::retrieve::Retriever;
use archive_core::tls::rustls::{ClientConfig, ServerConfig};
use std::sync::Arc;
use std::time::Duration;

pub struct ScpContext {
    pub ae_title: String,
    pub index: Index,
    pub retriever: Retriever,
    /// The one accept path every C-STORE goes through.
    pub acceptor: Acceptor,
    /// Associations, stores, queries and retrievals are recorded here.
    pub auditor: Auditor,
    pub ae_policy: AePolicy,
    pub max_pdu: u32,
    pub max_associations: usize,
    pub idle_timeout: Duration,
    /// PS3.8's ARTIM timer: bounds the wait for a complete A-ASSOCIATE-RQ and for the peer
    /// after we release or abort.
    pub artim_timeout: Duration,
    /// Connections still negotiating from unlisted hosts, in total and per host.
    pub max_pending: usize,
    pub max_pending_per_host: usize,
    pub max_find_results: usize,
    /// The TLS listener's settings (`dicom.tls`), when it is on.
    pub tls_server: Option<Arc<ServerConfig>>,
    /// TLS for associations we open to peers marked `tls` (C-MOVE), when configured.
    pub tls_client: Option<Arc<ClientConfig>>,
}

impl ScpContext {
    pub fn new(config: &Config, index: Index, acceptor: Acceptor, auditor: Auditor) -> ScpContext {
        ScpContext {
            ae_title: config.dicom.ae_title.clone(),
            index,
            retriever: Retriever::new(),
            acceptor,
            auditor,
            ae_policy: AePolicy {
                peers: Arc::new(config.dicom.peers.clone()),
                accept_unknown_from_local: config.dicom.accept_unknown_from_loopback,
            },
            max_pdu: config.dicom.max_pdu,
            max_associations: config.dicom.max_associations as usize,
            idle_timeout: Duration::from_secs(config.dicom.idle_timeout_secs),
            artim_timeout: Duration::from_secs(config.dicom.artim_timeout_secs),
            max_pending: config.dicom.max_pending as usize,
            max_pending_per_host: config.dicom.max_pending_per_host as usize,
            max_find_results: config.dicom.max_find_results as usize,
            tls_server: None,
            tls_client: None,
        }
    }
}
