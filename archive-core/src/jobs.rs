//! The jobs table: every lifecycle action is a row that any node can see and one node runs.

use serde::Serialize;

pub mod job_type {
    pub const COPY: &str = "COPY";
    pub const VERIFY: &str = "VERIFY";
    /// Deletes a study's ONLINE copies (those with an ARCHIVED NEARLINE copy).
    pub const DELETE: &str = "DELETE";
    /// Copies a NEARLINE study back to ONLINE storage.
    pub const RESTORE: &str = "RESTORE";
}

pub mod job_state {
    pub const QUEUED: &str = "QUEUED";
    pub const RUNNING: &str = "RUNNING";
    pub const DONE: &str = "DONE";
    pub const FAILED: &str = "FAILED";
    pub const CANCELLED: &str = "CANCELLED";

    pub fn is_final(state: &str) -> bool {
        matches!(state, DONE | FAILED | CANCELLED)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct Job {
    pub id: i64,
    pub job_type: String,
    pub study_uid: String,
    pub target_name: String,
    pub state: String,
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
    pub job_type: String,
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
    pub state: Option<String>,
    pub job_type: Option<String>,
    pub study_uid: Option<String>,
    pub limit: i64,
}
