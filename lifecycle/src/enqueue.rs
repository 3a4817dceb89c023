//! Job creation lives in archive-core (the REST API queues jobs too); re-exported here for
//! the services and the CLI.

pub use archive_core::jobs::{request_copy, request_delete, request_restore, request_verify};
