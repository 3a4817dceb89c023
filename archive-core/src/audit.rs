//! The audit trail: who did what to which study, when, and with what outcome.
//!
//! Every service records its events through an [`Auditor`]: a cloneable handle whose events a
//! background task writes to the index's append-only `audit_event` table in batches (and,
//! when `audit.syslog` is set, sends as IHE ATNA messages, see [`crate::audit_syslog`]). The
//! hot paths never wait for a database commit of their own: an event costs a channel send.
//! C-STOREs are recorded once per association and study (how many instances arrived), as
//! ATNA's "DICOM Instances Transferred" does, not once per instance.
//!
//! Events are written within about a second; the ones still queued when a node is killed
//! are lost (a clean shutdown flushes them). Patient IDs belong in audit events; they still
//! never appear in the application log above debug level.

use crate::index::{now_millis, Index};
use crate::text_enum::text_enum;
use serde::Serialize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

text_enum! {
    /// What happened.
    pub enum AuditAction("audit action") {
        /// A DICOM association accepted or refused.
        Association = "ASSOCIATION",
        /// Instances received (C-STORE per association and study, STOW-RS per request).
        Store = "STORE",
        /// A C-FIND or QIDO-RS query.
        Query = "QUERY",
        /// Instances sent to another AE (C-MOVE) or to the requestor (C-GET).
        Retrieve = "RETRIEVE",
        /// A DICOMweb read (WADO-RS, WADO-URI) or write.
        DicomWeb = "DICOMWEB",
        /// A REST API request that changes something (a job requested, cancelled, retried).
        Api = "API",
        /// A login to the admin UI.
        Login = "LOGIN",
        /// A study's ONLINE copies deleted.
        Delete = "DELETE",
        /// A study copied back from NEARLINE to ONLINE.
        Restore = "RESTORE",
        /// A setting changed (peers, rules, targets, filesystems).
        Config = "CONFIG",
        /// A fixity check found a stored copy damaged or missing.
        Fixity = "FIXITY",
    }
}

text_enum! {
    pub enum AuditOutcome("audit outcome") {
        Success = "SUCCESS", Failure = "FAILURE",
    }
}

impl AuditOutcome {
    pub fn of(success: bool) -> AuditOutcome {
        if success {
            AuditOutcome::Success
        } else {
            AuditOutcome::Failure
        }
    }
}

/// An event as it is stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct AuditEvent {
    pub id: i64,
    /// Milliseconds since the epoch.
    pub at: i64,
    pub node: String,
    #[sqlx(try_from = "String")]
    pub action: AuditAction,
    #[sqlx(try_from = "String")]
    pub outcome: AuditOutcome,
    /// Who: a calling AE title, `admin` (the admin token or UI), `viewer:<token file>`.
    pub actor: String,
    /// From where: the peer's address, or empty for the archive's own services.
    pub peer: String,
    pub study_uid: String,
    pub patient_id: String,
    /// What exactly, in words: counts, status, the request.
    pub detail: String,
}

/// An event to record; `at` and `node` are added when it is recorded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewAuditEvent {
    pub action: AuditAction,
    pub outcome: AuditOutcome,
    pub actor: String,
    pub peer: String,
    pub study_uid: String,
    pub patient_id: String,
    pub detail: String,
}

impl NewAuditEvent {
    pub fn new(action: AuditAction, outcome: AuditOutcome, actor: impl Into<String>) -> Self {
        NewAuditEvent {
            action,
            outcome,
            actor: actor.into(),
            peer: String::new(),
            study_uid: String::new(),
            patient_id: String::new(),
            detail: String::new(),
        }
    }

    pub fn peer(mut self, peer: impl ToString) -> Self {
        self.peer = peer.to_string();
        self
    }

    pub fn study(mut self, study_uid: impl Into<String>) -> Self {
        self.study_uid = study_uid.into();
        self
    }

    pub fn patient(mut self, patient_id: impl Into<String>) -> Self {
        self.patient_id = patient_id.into();
        self
    }

    pub fn detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = detail.into();
        self
    }
}

/// Filters for listing events; every field is optional.
#[derive(Clone, Debug, Default)]
pub struct AuditFilter {
    pub action: Option<AuditAction>,
    pub outcome: Option<AuditOutcome>,
    pub actor: Option<String>,
    pub study_uid: Option<String>,
    pub patient_id: Option<String>,
    /// Events at or after this time (ms).
    pub since: Option<i64>,
    /// Events before this time (ms).
    pub until: Option<i64>,
    /// Events with a smaller id (paging backwards).
    pub before_id: Option<i64>,
    /// At most this many, newest first (0: 100; capped at 1,000).
    pub limit: u32,
}

/// Where events go besides the index: an ATNA receiver.
pub trait AuditSink: Send + Sync {
    fn send(&self, node: &str, at: i64, event: &NewAuditEvent);
}

/// Queued events beyond which events of unlisted callers are dropped (counted) rather than
/// waited for: a flood of refused associations must not slow the archive down.
const QUEUE: usize = 10_000;
/// Events written per INSERT.
const BATCH: usize = 500;
/// How long the writer gathers events after the first before writing them.
const LINGER: Duration = Duration::from_millis(250);

enum Message {
    Event(i64, NewAuditEvent),
    Flush(oneshot::Sender<()>),
}

/// Records audit events. Cloning is cheap; all clones feed one writer.
#[derive(Clone)]
pub struct Auditor {
    sender: mpsc::Sender<Message>,
    dropped: Arc<AtomicU64>,
}

impl Auditor {
    /// Starts the writer for `node`'s events (a tokio task; needs a runtime).
    pub fn start(index: Index, node: String, sink: Option<Arc<dyn AuditSink>>) -> Auditor {
        let (sender, receiver) = mpsc::channel(QUEUE);
        tokio::spawn(write_events(index, node, sink, receiver));
        Auditor {
            sender,
            dropped: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Queues an event; waits only when the writer is 10,000 events behind.
    pub async fn record(&self, event: NewAuditEvent) {
        if self
            .sender
            .send(Message::Event(now_millis(), event))
            .await
            .is_err()
        {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Queues an event without waiting: dropped (and counted) when the queue is full. For
    /// events an outsider can cause in bulk, such as refused associations.
    pub fn record_unless_busy(&self, event: NewAuditEvent) {
        if self
            .sender
            .try_send(Message::Event(now_millis(), event))
            .is_err()
        {
            let dropped = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            if dropped.is_power_of_two() {
                tracing::warn!(dropped, "audit queue full: events dropped");
            }
        }
    }

    /// Waits until every event queued before this call is written.
    pub async fn flush(&self) {
        let (done, written) = oneshot::channel();
        if self.sender.send(Message::Flush(done)).await.is_ok() {
            let _ = written.await;
        }
    }

    /// Events lost because the queue was full or the writer gone.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

impl std::fmt::Debug for Auditor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Auditor")
    }
}

async fn write_events(
    index: Index,
    node: String,
    sink: Option<Arc<dyn AuditSink>>,
    mut receiver: mpsc::Receiver<Message>,
) {
    let mut batch: Vec<(i64, NewAuditEvent)> = Vec::new();
    let mut flushed: Vec<oneshot::Sender<()>> = Vec::new();
    loop {
        let Some(first) = receiver.recv().await else {
            return;
        };
        // Gather for up to LINGER after the first event: a client making one request after
        // another (a viewer's QIDO-RS and WADO-RS) would otherwise cost one INSERT and one
        // commit (an fsync) per request. A flush (shutdown, tests) writes at once.
        let deadline = tokio::time::Instant::now() + LINGER;
        let mut next = Some(first);
        while let Some(message) = next.take() {
            match message {
                Message::Event(at, event) => batch.push((at, event)),
                Message::Flush(done) => flushed.push(done),
            }
            if batch.len() >= BATCH {
                break;
            }
            next = if !flushed.is_empty() {
                receiver.try_recv().ok()
            } else {
                tokio::time::timeout_at(deadline, receiver.recv())
                    .await
                    .ok()
                    .flatten()
            };
        }
        if let Some(sink) = &sink {
            for (at, event) in &batch {
                sink.send(&node, *at, event);
            }
        }
        // The index may be briefly unreachable (a PostgreSQL restart): retry rather than
        // lose the batch, while new events wait in the channel.
        let mut delay = Duration::from_millis(100);
        while !batch.is_empty() {
            match index.insert_audit_events(&node, &batch).await {
                Ok(()) => batch.clear(),
                Err(error) => {
                    tracing::warn!(%error, events = batch.len(), "cannot write audit events; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(10));
                }
            }
        }
        for done in flushed.drain(..) {
            let _ = done.send(());
        }
    }
}
