//! The first member of every pack: what the pack holds, so it can be understood (and checked)
//! without Strata's database, e.g. by a disaster-recovery script with `tar` and `sha256sum`.

use crate::pack_writer::{padded, TAR_BLOCK, TAR_END};
use archive_core::nearline::{
    NearlineError, NearlineResult, NearlineTarget, PackContents, PackFormat, PackRequest,
    PackedMember,
};
use serde::{Deserialize, Serialize};

/// How much of a pack's head the first range read takes: the manifest of a study of a few
/// hundred instances fits, larger ones take a second read.
const HEAD_READ: u64 = 64 * 1024;

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
    /// When the instance was received (Unix milliseconds). Added after the first packs were
    /// written (those lack it; the format name is unchanged since readers ignore it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub received_at: Option<i64>,
}

/// A member's path inside a pack: `<Series Instance UID>/<SOP Instance UID>.dcm`. Readable
/// with any tar tool, unique within a study, and what the index records per member.
pub fn member_path(series_uid: &str, sop_uid: &str) -> String {
    format!("{series_uid}/{sop_uid}.dcm")
}

/// Whether `path` is safe to unpack under a directory: relative, `/`-separated, with no
/// empty, `.` or `..` part (a pack from elsewhere must not write outside the retrieve cache).
pub fn is_safe_member_path(path: &str) -> bool {
    !path.is_empty()
        && !path.contains(['\\', '\0'])
        && path
            .split('/')
            .all(|part| !part.is_empty() && part != "." && part != "..")
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
                    received_at: Some(m.received_at),
                })
                .collect(),
        }
    }
}

/// What the pack of `size` bytes under `key` holds, from its manifest (read by range: the
/// head, and the rest of the manifest if it is longer). Members follow the manifest in its
/// order, each a 512-byte ustar header and its data padded to whole blocks (what
/// [`crate::write_pack`] writes); the layout must end exactly where the pack does, so a pack
/// written any other way is refused rather than indexed with wrong offsets. A dcm4chee 2.x
/// HSM tar (an `MD5SUM` entry first) is read by [`crate::dcm4chee_tar::read_contents`].
pub async fn read_contents<T: NearlineTarget + ?Sized>(
    target: &T,
    key: &str,
    size: u64,
) -> NearlineResult<PackContents> {
    let invalid = |what: String| NearlineError::invalid(format!("pack {key}: {what}"));
    if size < TAR_BLOCK + TAR_END {
        return Err(invalid(format!("{size} bytes is too short for a pack")));
    }
    let mut head = target.read_range(key, 0, size.min(HEAD_READ)).await?;
    let manifest_len = {
        let header = tar::Header::from_byte_slice(&head[..TAR_BLOCK as usize]);
        let path = header
            .path()
            .map_err(|e| invalid(format!("unreadable first header: {e}")))?;
        if path.to_string_lossy() == crate::dcm4chee_tar::MD5SUM_NAME {
            return crate::dcm4chee_tar::read_contents(target, key, size, head).await;
        }
        if path.to_string_lossy() != MANIFEST_NAME {
            return Err(invalid(format!(
                "the first member is `{}`, not {MANIFEST_NAME}",
                path.display()
            )));
        }
        header
            .size()
            .map_err(|e| invalid(format!("unreadable first header: {e}")))?
    };
    let manifest_end = TAR_BLOCK.saturating_add(manifest_len);
    if manifest_end > size {
        return Err(invalid("the manifest runs past the end of the pack".into()));
    }
    if manifest_end > head.len() as u64 {
        let rest = target
            .read_range(key, head.len() as u64, manifest_end - head.len() as u64)
            .await?;
        head.extend_from_slice(&rest);
    }
    let manifest: Manifest =
        serde_json::from_slice(&head[TAR_BLOCK as usize..manifest_end as usize])
            .map_err(|e| invalid(format!("the manifest is not valid: {e}")))?;
    if manifest.format != MANIFEST_FORMAT {
        return Err(invalid(format!(
            "unknown manifest format `{}`",
            manifest.format
        )));
    }
    let mut cursor = TAR_BLOCK + padded(manifest_len);
    let mut members = Vec::with_capacity(manifest.members.len());
    let past_end = || invalid("the manifest lists members past the end of the pack".into());
    for member in manifest.members {
        if !is_safe_member_path(&member.path) {
            return Err(invalid(format!(
                "the manifest names a member `{}` that is not a plain relative path",
                member.path
            )));
        }
        let data_offset = cursor.checked_add(TAR_BLOCK).ok_or_else(past_end)?;
        cursor = member
            .size
            .checked_add(TAR_BLOCK - 1)
            .map(|s| s / TAR_BLOCK * TAR_BLOCK)
            .and_then(|padded| data_offset.checked_add(padded))
            .filter(|end| *end <= size)
            .ok_or_else(past_end)?;
        members.push(PackedMember {
            member_path: member.path,
            data_offset,
            size: member.size,
            sha256: member.sha256,
            sop_uid: member.sop_instance_uid,
            series_uid: member.series_instance_uid,
            sop_class_uid: member.sop_class_uid,
            transfer_syntax: member.transfer_syntax_uid,
            received_at: member.received_at,
        });
    }
    if cursor.saturating_add(TAR_END) != size {
        return Err(invalid(format!(
            "the manifest's members end at byte {}, the pack has {size}: not laid out as Strata writes packs",
            cursor + TAR_END
        )));
    }
    Ok(PackContents {
        format: PackFormat::Strata,
        study_uid: manifest.study_instance_uid,
        created_at: manifest.created_at,
        members,
        rejected: Vec::new(),
    })
}
