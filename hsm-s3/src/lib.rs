//! NEARLINE targets: S3-compatible buckets and filesystem directories, and the pack format
//! (a tar whose first member is a manifest) they store studies in.
//!
//! Everything else sees these only through `archive_core::nearline`; the binary passes
//! [`Targets`] wherever targets are opened.

mod body_reader;
mod chunk_sink;
pub mod dcm4chee_tar;
mod filesystem;
pub mod manifest;
mod pack_verify;
mod pack_writer;
mod s3;

pub use filesystem::FilesystemTarget;
pub use pack_verify::verify_pack_stream;
pub use pack_writer::write_pack;
pub use s3::S3Target;

use archive_core::config::{TargetKind, TargetSpec};
use archive_core::nearline::{NearlineError, NearlineResult, NearlineTarget, TargetFactory};
use async_trait::async_trait;
use std::sync::Arc;

/// Opens targets from their settings.
#[derive(Clone, Copy, Debug, Default)]
pub struct Targets;

#[async_trait]
impl TargetFactory for Targets {
    async fn open(&self, spec: &TargetSpec) -> NearlineResult<Arc<dyn NearlineTarget>> {
        match spec.kind {
            TargetKind::Filesystem => {
                let path = spec.path.clone().ok_or_else(|| {
                    NearlineError::invalid(format!("target `{}` has no path", spec.name))
                })?;
                Ok(Arc::new(FilesystemTarget::new(path)))
            }
            TargetKind::S3 => Ok(Arc::new(S3Target::open(spec).await?)),
        }
    }
}
