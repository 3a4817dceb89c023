//! Strata's domain: configuration, the index, ONLINE storage and the ingest path.
//! Every other crate depends on this one; it depends on none of them.

pub mod accept;
pub mod actions;
pub mod admission;
pub mod audit;
pub mod audit_syslog;
pub mod config;
pub mod dicom_header;
pub mod index;
pub mod ingest;
pub mod jobs;
pub mod metadata;
pub mod metrics;
pub mod model;
pub mod nearline;
pub mod online;
pub mod query;
pub mod retention;
pub mod retrieve;
pub mod retrieve_cache;
#[cfg(any(test, feature = "test-support"))]
pub mod testing;
pub mod text_enum;
pub mod tls;
pub mod transcode;
