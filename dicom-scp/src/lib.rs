//! Strata's DICOM network services on top of dicom-ul: association acceptance with an AE
//! policy, DIMSE message assembly, C-ECHO, C-STORE, C-FIND, C-MOVE and C-GET.

#![forbid(unsafe_code)]

pub mod ae_policy;
mod association;
mod association_request;
mod command_pdvs;
pub mod context;
pub mod dimse;
pub mod find;
mod identifier;
pub mod messaging;
pub mod operation;
mod received;
pub mod retrieve;
pub mod server;
pub mod store;
pub mod syntaxes;
pub mod synthetic;
pub mod synthetic_legacy;

pub use context::ScpContext;
