//! The jobs table's rows: every lifecycle action is a row that any node can see and one node
//! runs. Creating them is [`crate::actions`]'s; storing and claiming them, the index's.

use crate::text_enum::text_enum;
use serde::Serialize;

text_enum! {
    /// What a job does.
    pub enum JobType("job type") {
        /// Packs a study's not yet copied ONLINE files onto a NEARLINE target.
        Copy = "COPY",
        /// Reads a study's packs back and marks them ARCHIVED (or VERIFY_FAILED).
        Verify = "VERIFY",
        /// Deletes a study's ONLINE copies (those with an ARCHIVED NEARLINE copy).
        Delete = "DELETE",
        /// Copies a NEARLINE study back to ONLINE storage.
        Restore = "RESTORE",
        /// Cleans up after crashes on one node: retrieve-cache leftovers, stale spool files,
        /// and ONLINE files the index does not know (reported, removed when configured).
        /// Its target name is the node that runs it.
        Scavenge = "SCAVENGE",
        /// Re-reads ARCHIVED packs and re-hashes ONLINE files due for a fixity check, under
        /// the daily byte budget; queues the repair of what no longer matches.
        Fixity = "FIXITY",
    }
}

text_enum! {
    pub enum JobState("job state") {
        Queued = "QUEUED", Running = "RUNNING", Done = "DONE", Failed = "FAILED",
        Cancelled = "CANCELLED",
    }
}

impl JobState {
    /// DONE, FAILED and CANCELLED: the job will not run again unless retried.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            JobState::Done | JobState::Failed | JobState::Cancelled
        )
    }
}

/// Why a node hands its RUNNING jobs back to the queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HandBack {
    /// At start: the node died while running them. The run counts as an attempt, so a job
    /// that kills its node every time ends FAILED after `max_attempts` instead of looping.
    AfterCrash,
    /// At a clean shutdown: the node stopped them itself; the interrupted run does not count.
    Shutdown,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct Job {
    pub id: i64,
    #[sqlx(try_from = "String")]
    pub job_type: JobType,
    pub study_uid: String,
    pub target_name: String,
    #[sqlx(try_from = "String")]
    pub state: JobState,
    pub attempts: i64,
    pub max_attempts: i64,
    pub next_run_at: i64,
    pub owner_node: String,
    pub lease_expires_at: i64,
    pub done_items: i64,
    pub total_items: i64,
    pub done_bytes: i64,
    pub total_bytes: i64,
    pub last_error: String,
    pub created_by: String,
    pub created_at: i64,
    pub updated_at: i64,
    pub finished_at: Option<i64>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewJob {
    pub job_type: JobType,
    pub study_uid: String,
    pub target_name: String,
    /// `cli`, `rule:<name>`, `verify-sync`, `verify-failed`, …
    pub created_by: String,
    pub max_attempts: u32,
}

/// What enqueueing did: a new row, or the live job that already does this work.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Enqueued {
    pub job_id: i64,
    pub created: bool,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct JobProgress {
    pub done_items: i64,
    pub total_items: i64,
    pub done_bytes: i64,
    pub total_bytes: i64,
}

/// How a run of a job ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JobOutcome {
    Done,
    /// Try again at `at` (Unix ms).
    Retry {
        at: i64,
        error: String,
    },
    Failed {
        error: String,
    },
}

#[derive(Clone, Debug, Default)]
pub struct JobFilter {
    pub state: Option<JobState>,
    pub job_type: Option<JobType>,
    pub study_uid: Option<String>,
    pub limit: i64,
}
