//! The first member of every pack: what the pack holds, so it can be understood (and checked)
//! without Strata's database, e.g. by a disaster-recovery script with `tar` and `sha256sum`.

use archive_core::nearline::PackRequest;
use serde::{Deserialize, Serialize};

pub const MANIFEST_NAME: &str = "MANIFEST.json";
pub const MANIFEST_FORMAT: &str = "strata-pack/1";

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: String,
    pub study_instance_uid: String,
    /// Unix milliseconds.
    pub created_at: i64,
    pub members: Vec<ManifestMember>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestMember {
    /// Path of the member inside the tar.
    pub path: String,
    pub size: u64,
    /// Lower-case hex SHA-256 of the member (the stored Part-10 file, byte for byte).
    pub sha256: String,
    pub sop_instance_uid: String,
    pub series_instance_uid: String,
    pub sop_class_uid: String,
    pub transfer_syntax_uid: String,
}

/// A member's path inside a pack: `<Series Instance UID>/<SOP Instance UID>.dcm`. Readable
/// with any tar tool, unique within a study, and what the index records per member.
pub fn member_path(series_uid: &str, sop_uid: &str) -> String {
    format!("{series_uid}/{sop_uid}.dcm")
}

impl Manifest {
    pub fn for_request(request: &PackRequest, created_at: i64) -> Manifest {
        Manifest {
            format: MANIFEST_FORMAT.into(),
            study_instance_uid: request.study_uid.clone(),
            created_at,
            members: request
                .members
                .iter()
                .map(|m| ManifestMember {
                    path: member_path(&m.series_uid, &m.sop_uid),
                    size: m.size,
                    sha256: m.sha256.clone(),
                    sop_instance_uid: m.sop_uid.clone(),
                    series_instance_uid: m.series_uid.clone(),
                    sop_class_uid: m.sop_class_uid.clone(),
                    transfer_syntax_uid: m.transfer_syntax.clone(),
                })
                .collect(),
        }
    }
}
