//! What the DICOM services need from the rest of the archive, built once by the binary.

use crate::ae_policy::AePolicy;
use archive_core::config::{Config, DuplicatePolicy};
use archive_core::index::Index;
use archive_core::ingest::IngestQueue;
use archive_core::online::OnlineStore;
use archive_core::retrieve::Retriever;
use std::sync::Arc;
use std::time::Duration;

pub struct ScpContext {
    pub ae_title: String,
    pub index: Index,
    pub retriever: Retriever,
    pub online: OnlineStore,
    pub ingest: IngestQueue,
    pub duplicate_policy: DuplicatePolicy,
    pub ae_policy: AePolicy,
    pub max_pdu: u32,
    pub max_associations: usize,
    pub idle_timeout: Duration,
    pub max_find_results: usize,
}

impl ScpContext {
    pub fn new(
        config: &Config,
        index: Index,
        online: OnlineStore,
        ingest: IngestQueue,
    ) -> ScpContext {
        ScpContext {
            ae_title: config.dicom.ae_title.clone(),
            index,
            retriever: Retriever::new(),
            online,
            ingest,
            duplicate_policy: config.dicom.duplicate_policy,
            ae_policy: AePolicy {
                peers: Arc::new(config.dicom.peers.clone()),
                accept_unknown_from_local: config.dicom.accept_unknown_from_loopback,
            },
            max_pdu: config.dicom.max_pdu,
            max_associations: config.dicom.max_associations as usize,
            idle_timeout: Duration::from_secs(config.dicom.idle_timeout_secs),
            max_find_results: config.dicom.max_find_results as usize,
        }
    }
}
