//! Strata's DICOM network services on top of dicom-ul: association acceptance with an AE
//! policy, DIMSE message assembly, C-ECHO and C-STORE.

#![forbid(unsafe_code)]

pub mod ae_policy;
mod association;
pub mod attributes;
pub mod context;
pub mod dimse;
pub mod server;
pub mod store;
pub mod syntaxes;
pub mod synthetic;

pub use context::ScpContext;
