//! C-MOVE and C-GET SCP: resolve the identifier to instances through the index, read each
//! through archive-core's `Retriever` (never a file path), send it as a C-STORE sub-operation,
//! and report progress with pending responses.

mod get_scp;
mod move_scp;
mod sub_store;

pub use get_scp::serve_get;
pub use move_scp::serve_move;
pub use sub_store::PeerContext;

use crate::dimse::{status, text_element, Command, Response};
use crate::identifier::Identifier;
use archive_core::index::{Index, InstanceLocation};
use archive_core::query::tag_of;
use archive_core::query::{Attr, Model};
use archive_core::retrieve::Retriever;
use dicom_dictionary_std::{tags, uids};
use dicom_encoding::TransferSyntaxIndex;
use dicom_object::InMemDicomObject;
use dicom_transfer_syntax_registry::TransferSyntaxRegistry;

/// What the retrieve services need from the archive.
pub struct RetrieveContext<'a> {
    pub index: &'a Index,
    pub retriever: &'a Retriever,
    pub ae_title: &'a str,
    pub max_pdu: u32,
    /// ARTIM: how long a sub-association's release or abort may wait for the destination.
    pub artim_timeout: std::time::Duration,
    /// TLS for sub-associations to peers marked `tls` (`dicom.tls`), if configured.
    pub tls_client: Option<std::sync::Arc<archive_core::tls::rustls::ClientConfig>>,
}

pub fn move_model_of(abstract_syntax: &str) -> Option<Model> {
    match abstract_syntax {
        uids::PATIENT_ROOT_QUERY_RETRIEVE_INFORMATION_MODEL_MOVE => Some(Model::PatientRoot),
        uids::STUDY_ROOT_QUERY_RETRIEVE_INFORMATION_MODEL_MOVE => Some(Model::StudyRoot),
        _ => None,
    }
}

pub fn get_model_of(abstract_syntax: &str) -> Option<Model> {
    match abstract_syntax {
        uids::PATIENT_ROOT_QUERY_RETRIEVE_INFORMATION_MODEL_GET => Some(Model::PatientRoot),
        uids::STUDY_ROOT_QUERY_RETRIEVE_INFORMATION_MODEL_GET => Some(Model::StudyRoot),
        _ => None,
    }
}

/// Resolves a retrieve identifier (level + that level's unique key, possibly a UID list) to
/// the instances to send, or the failure response to give.
pub(crate) async fn resolve(
    index: &Index,
    command: &Command,
    model: Model,
    transfer_syntax: &str,
    identifier: &[u8],
) -> Result<(Vec<InstanceLocation>, archive_core::query::Level), Response> {
    let refuse = |code: u16, comment: String| Response::to(command, code).with_comment(comment);
    let identifier = Identifier::read(identifier, transfer_syntax, model)
        .map_err(|(code, comment)| refuse(code, comment))?;
    let level = identifier.level;
    let key = tag_of(Attr::unique_key(level));
    let uids: Vec<String> = identifier
        .text(key)
        .split('\\')
        .map(|u| u.trim().trim_end_matches('\0').to_string())
        .filter(|u| !u.is_empty())
        .collect();
    if uids.is_empty() {
        return Err(refuse(
            status::IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS,
            format!("a {} retrieve needs its unique key {key}", level.as_str()),
        ));
    }
    index
        .retrieve_locations(level, &uids)
        .await
        .map(|locations| (locations, level))
        .map_err(|error| {
            tracing::error!(%error, "retrieve: index query failed");
            refuse(
                status::UNABLE_TO_PERFORM_SUBOPERATIONS,
                "index unavailable".into(),
            )
        })
}

/// Pending responses are sent at most this often (PS3.4 leaves their number to the SCP):
/// enough to show progress and keep requestors from timing out, without putting one more
/// message between every two C-STOREs.
const PENDING_INTERVAL: std::time::Duration = std::time::Duration::from_millis(250);

/// Sub-operation counts, and the instances that failed.
#[derive(Default)]
pub(crate) struct Progress {
    pub total: usize,
    pub completed: u16,
    pub failed: u16,
    pub warning: u16,
    pub failed_uids: Vec<String>,
    last_pending: Option<std::time::Instant>,
}

impl Progress {
    pub fn new(total: usize) -> Progress {
        Progress {
            total,
            ..Progress::default()
        }
    }

    /// Whether a pending response is due now (the first one always is).
    pub fn pending_due(&mut self) -> bool {
        let due = self
            .last_pending
            .is_none_or(|at| at.elapsed() >= PENDING_INTERVAL);
        if due {
            self.last_pending = Some(std::time::Instant::now());
        }
        due
    }

    fn remaining(&self) -> u16 {
        let done = self.completed as usize + self.failed as usize + self.warning as usize;
        self.total.saturating_sub(done).min(u16::MAX as usize) as u16
    }

    pub fn record(&mut self, sop_uid: &str, outcome: sub_store::SubOutcome) {
        match outcome {
            sub_store::SubOutcome::Completed => self.completed = self.completed.saturating_add(1),
            sub_store::SubOutcome::Warning => self.warning = self.warning.saturating_add(1),
            sub_store::SubOutcome::Failed(reason) => {
                tracing::info!(sop_instance_uid = sop_uid, %reason, "retrieve sub-operation failed");
                self.failed = self.failed.saturating_add(1);
                self.failed_uids.push(sop_uid.to_string());
            }
        }
    }

    pub fn pending(&self, command: &Command) -> Response {
        self.with_counts(Response::to(command, status::PENDING), true)
    }

    fn with_counts(&self, response: Response, include_remaining: bool) -> Response {
        let response = if include_remaining {
            response.with_counter(tags::NUMBER_OF_REMAINING_SUBOPERATIONS, self.remaining())
        } else {
            response
        };
        response
            .with_counter(tags::NUMBER_OF_COMPLETED_SUBOPERATIONS, self.completed)
            .with_counter(tags::NUMBER_OF_FAILED_SUBOPERATIONS, self.failed)
            .with_counter(tags::NUMBER_OF_WARNING_SUBOPERATIONS, self.warning)
    }

    /// The final response and its data set (the Failed SOP Instance UID List, if any).
    pub fn finish(
        &self,
        command: &Command,
        cancelled: bool,
        transfer_syntax: &str,
    ) -> (Response, Option<Vec<u8>>) {
        let code = if cancelled {
            status::CANCEL
        } else if self.failed > 0 || self.warning > 0 {
            status::SUBOPERATIONS_COMPLETE_WITH_FAILURES
        } else {
            status::SUCCESS
        };
        let response = self.with_counts(Response::to(command, code), cancelled);
        if self.failed_uids.is_empty() {
            return (response, None);
        }
        let mut list = InMemDicomObject::new_empty();
        list.put(text_element(
            tags::FAILED_SOP_INSTANCE_UID_LIST,
            dicom_core::VR::UI,
            self.failed_uids.join("\\"),
        ));
        let mut bytes = Vec::new();
        let encoded = TransferSyntaxRegistry
            .get(transfer_syntax)
            .map(|ts| list.write_dataset_with_ts(&mut bytes, ts).is_ok())
            .unwrap_or(false);
        if encoded {
            (
                response
                    .with_comment(format!("{} sub-operations failed", self.failed))
                    .with_data_set(),
                Some(bytes),
            )
        } else {
            (response, None)
        }
    }
}

/// Distinct studies of the instances, to record the access in one statement.
pub(crate) fn studies_of(locations: &[InstanceLocation]) -> Vec<String> {
    let mut studies: Vec<String> = locations.iter().map(|l| l.study_uid.clone()).collect();
    studies.sort();
    studies.dedup();
    studies
}

/// Opens instance n+1 while instance n is on the wire: reading the file is then off the
/// critical path of the sub-operation chain (send, wait for the peer, report, next).
pub(crate) struct Prefetch<'a> {
    retriever: &'a Retriever,
    locations: &'a [InstanceLocation],
    /// IMAGE-level retrieve: NEARLINE instances are read alone (ranged GET), not by pack.
    single_instances: bool,
    next: usize,
    pending: Option<
        tokio::task::JoinHandle<
            Result<archive_core::retrieve::OpenedInstance, archive_core::retrieve::RetrieveError>,
        >,
    >,
}

impl<'a> Prefetch<'a> {
    pub fn new(
        retriever: &'a Retriever,
        locations: &'a [InstanceLocation],
        level: archive_core::query::Level,
    ) -> Prefetch<'a> {
        let mut prefetch = Prefetch {
            retriever,
            locations,
            single_instances: level == archive_core::query::Level::Image,
            next: 0,
            pending: None,
        };
        prefetch.start_next();
        prefetch
    }

    fn start_next(&mut self) {
        self.pending = self.locations.get(self.next).map(|location| {
            let retriever = self.retriever.clone();
            let location = location.clone();
            let single = self.single_instances;
            tokio::spawn(async move {
                if single {
                    retriever.open_single(&location).await
                } else {
                    retriever.open(&location).await
                }
            })
        });
        self.next += 1;
    }

    /// The next instance, in order; starts opening the one after it.
    pub async fn next(
        &mut self,
    ) -> Result<archive_core::retrieve::OpenedInstance, archive_core::retrieve::RetrieveError> {
        let pending = self.pending.take();
        self.start_next();
        let position = self.next.saturating_sub(2);
        let sop_uid = self
            .locations
            .get(position)
            .map(|l| l.sop_uid.clone())
            .unwrap_or_default();
        match pending {
            Some(task) => task.await.unwrap_or_else(|join| {
                Err(archive_core::retrieve::RetrieveError::Read {
                    sop_uid,
                    source: std::io::Error::other(join.to_string()),
                })
            }),
            None => Err(archive_core::retrieve::RetrieveError::Read {
                sop_uid,
                source: std::io::Error::other("no more instances"),
            }),
        }
    }
}

/// Awaits the next instance. Opening one can take long (fetching its pack from NEARLINE):
/// meanwhile the requester gets a pending response every 250 ms, so it does not time out.
/// `Err` when the requester's association is gone.
pub(crate) async fn next_keeping_alive<S: crate::messaging::DicomStream>(
    reader: &mut Prefetch<'_>,
    association: &mut crate::messaging::Association<S>,
    pc_id: u8,
    progress: &Progress,
    command: &Command,
) -> Result<Result<archive_core::retrieve::OpenedInstance, archive_core::retrieve::RetrieveError>, ()>
{
    let next = reader.next();
    tokio::pin!(next);
    loop {
        tokio::select! {
            opened = &mut next => return Ok(opened),
            () = tokio::time::sleep(PENDING_INTERVAL) => {
                crate::messaging::send_message(association, pc_id, &progress.pending(command), None)
                    .await
                    .map_err(|_| ())?;
            }
        }
    }
}

impl Drop for Prefetch<'_> {
    fn drop(&mut self) {
        if let Some(task) = self.pending.take() {
            task.abort();
        }
    }
}
