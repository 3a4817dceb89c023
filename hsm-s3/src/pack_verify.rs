//! Reads a pack back and checks it against what the index recorded: the manifest, every
//! member's path, offset, size and SHA-256, and the whole tar's size and SHA-256.

use crate::dcm4chee_tar::{parse_md5sum, MD5SUM_NAME};
use crate::manifest::{is_safe_member_path, Manifest, MANIFEST_FORMAT, MANIFEST_NAME};
use archive_core::nearline::{
    ExpectedPack, NearlineError, NearlineResult, PackMemberRow, TransferProgress, VerifyOutcome,
};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::path::Path;

/// Hashes and counts what is read, and remembers whether the *source* failed (the target
/// went away: retry later) as opposed to the content being wrong (the pack is damaged).
struct Watched<'a, R> {
    inner: R,
    read: u64,
    /// `None` when unpacking for retrieval: every member is checked against the index on its
    /// own, and a second SHA-256 pass over the whole pack would only slow the retrieval down.
    sha: Option<Sha256>,
    source_error: Option<String>,
    progress: &'a TransferProgress,
}

impl<R: Read> Read for Watched<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.inner.read(buf) {
            Ok(n) => {
                self.read += n as u64;
                if let Some(sha) = self.sha.as_mut() {
                    sha.update(&buf[..n]);
                }
                self.progress.add_bytes(n as u64);
                Ok(n)
            }
            Err(error) => {
                self.source_error = Some(error.to_string());
                Err(error)
            }
        }
    }
}

/// Verifies a pack read from `reader`. `Err` only when the source itself failed.
pub fn verify_pack_stream<R: Read>(
    reader: R,
    expected: &ExpectedPack,
    progress: &TransferProgress,
) -> NearlineResult<VerifyOutcome> {
    check_pack_stream(reader, expected, progress, None)
}

/// Where unpacked members go, and who hears of each one in place.
#[derive(Clone, Copy)]
struct UnpackTo<'a> {
    dir: &'a Path,
    ready: &'a (dyn Fn(&str) + Send + Sync),
}

/// Verifies a pack and writes its members under `dir` on the way (for the retrieve cache),
/// calling `ready(member path)` for each one in place with its checksum matched. A damaged
/// pack is an error: nothing from it may be served.
pub fn unpack_pack_stream<R: Read>(
    reader: R,
    expected: &ExpectedPack,
    progress: &TransferProgress,
    dir: &Path,
    ready: &(dyn Fn(&str) + Send + Sync),
) -> NearlineResult<()> {
    match check_pack_stream(reader, expected, progress, Some(UnpackTo { dir, ready }))? {
        VerifyOutcome::Intact => Ok(()),
        VerifyOutcome::Damaged(problems) => Err(NearlineError::invalid(format!(
            "pack {} is damaged: {}",
            expected.key,
            problems.join("; ")
        ))),
    }
}

fn check_pack_stream<R: Read>(
    reader: R,
    expected: &ExpectedPack,
    progress: &TransferProgress,
    unpack_to: Option<UnpackTo<'_>>,
) -> NearlineResult<VerifyOutcome> {
    let mut watched = Watched {
        inner: reader,
        read: 0,
        sha: unpack_to.is_none().then(Sha256::new),
        source_error: None,
        progress,
    };
    let mut problems = Vec::new();
    let walked = walk_members(&mut watched, expected, progress, &mut problems, unpack_to);
    if let Some(error) = &watched.source_error {
        return Err(NearlineError::unavailable(format!(
            "reading {} failed: {error}",
            expected.key
        )));
    }
    if let Err(error) = walked {
        problems.push(format!("not a readable tar: {error}"));
    } else if let Err(error) = io::copy(&mut watched, &mut io::sink()) {
        if let Some(source) = &watched.source_error {
            return Err(NearlineError::unavailable(format!(
                "reading {} failed: {source}",
                expected.key
            )));
        }
        problems.push(format!("cannot read the end of the pack: {error}"));
    }
    if problems.is_empty() {
        if watched.read != expected.size {
            problems.push(format!(
                "pack is {} bytes, the index records {}",
                watched.read, expected.size
            ));
        }
        if let Some(sha) = watched.sha.map(|sha| hex::encode(sha.finalize())) {
            // An empty checksum is not known (a pack found by rebuild-index): the size and
            // every member's checksum above still have to match.
            if !expected.sha256.is_empty() && sha != expected.sha256 {
                problems.push(format!(
                    "pack SHA-256 is {sha}, the index records {}",
                    expected.sha256
                ));
            }
        }
    }
    Ok(if problems.is_empty() {
        VerifyOutcome::Intact
    } else {
        VerifyOutcome::Damaged(problems)
    })
}

fn walk_members<R: Read>(
    reader: R,
    expected: &ExpectedPack,
    progress: &TransferProgress,
    problems: &mut Vec<String>,
    unpack_to: Option<UnpackTo<'_>>,
) -> io::Result<()> {
    let mut wanted: HashMap<&str, &PackMemberRow> = expected
        .members
        .iter()
        .map(|m| (m.member_path.as_str(), m))
        .collect();
    let mut archive = tar::Archive::new(reader);
    let mut manifest: Option<Manifest> = None;
    // A dcm4chee 2.x HSM tar: its MD5SUM listing instead of a manifest. Its index rows hold
    // only the members whose MD5 matched when it was imported (with the SHA-256 of those
    // bytes); members left out then are passed over here, not reported again.
    let mut md5sum: Option<HashMap<String, String>> = None;
    for (position, entry) in archive.entries()?.enumerate() {
        let mut entry = entry?;
        let path = entry.path()?.to_string_lossy().into_owned();
        if position == 0 && path == MD5SUM_NAME {
            let mut text = Vec::new();
            entry.read_to_end(&mut text)?;
            match parse_md5sum(&text) {
                Ok(listed) => md5sum = Some(listed),
                Err(error) => problems.push(error),
            }
            continue;
        }
        if let Some(listed) = &md5sum {
            if !wanted.contains_key(path.as_str()) {
                continue;
            }
            if !listed.contains_key(&path) {
                problems.push(format!("`{path}` is not listed in the MD5SUM entry"));
            }
        }
        if position == 0 {
            if path != MANIFEST_NAME {
                problems.push(format!("first member is `{path}`, not {MANIFEST_NAME}"));
            }
            let mut text = Vec::new();
            entry.read_to_end(&mut text)?;
            match serde_json::from_slice::<Manifest>(&text) {
                Ok(parsed) if parsed.format == MANIFEST_FORMAT => manifest = Some(parsed),
                Ok(parsed) => problems.push(format!("unknown manifest format `{}`", parsed.format)),
                Err(error) => problems.push(format!("manifest is not valid: {error}")),
            }
            continue;
        }
        let offset = entry.raw_file_position();
        let size = entry.header().size()?;
        // Only members the index knows are written, under the path the index gave them: first
        // as `<path>.part`, renamed once its SHA-256 matched, so a reader waiting for one
        // member can take it while the rest of the pack is still arriving.
        let unpack_path = unpack_to
            .filter(|_| wanted.contains_key(path.as_str()) && is_safe_member_path(&path))
            .map(|to| to.dir.join(&path));
        if unpack_to.is_some() && !is_safe_member_path(&path) {
            problems.push(format!(
                "`{path}` is not a plain relative path: not unpacked"
            ));
        }
        let mut out = match &unpack_path {
            Some(target) => {
                if let Some(parent) = target.parent() {
                    std::fs::create_dir_all(parent)?;
                }
                Some(io::BufWriter::with_capacity(
                    1 << 20,
                    std::fs::File::create(part_path(target))?,
                ))
            }
            None => None,
        };
        // Unpacking for retrieval checks with BLAKE3 where the index has it (the CPU is what
        // limits a retrieval); verify-sync and older packs use SHA-256.
        let mut digest = match wanted.get(path.as_str()) {
            Some(row) if unpack_to.is_some() && !row.blake3.is_empty() => {
                MemberDigest::Blake3(Box::new(blake3::Hasher::new()))
            }
            _ => MemberDigest::Sha256(Sha256::new()),
        };
        let mut buffer = vec![0u8; 64 * 1024];
        let mut read = 0u64;
        loop {
            let n = entry.read(&mut buffer)?;
            if n == 0 {
                break;
            }
            digest.update(&buffer[..n]);
            if let Some(out) = out.as_mut() {
                out.write_all(&buffer[..n])?;
            }
            read += n as u64;
        }
        if let Some(out) = out {
            out.into_inner().map_err(|e| e.into_error())?;
        }
        let digest = digest.finish();
        progress.add_item();
        let Some(row) = wanted.remove(path.as_str()) else {
            problems.push(format!("`{path}` is in the pack but not in the index"));
            continue;
        };
        if read != size || size != row.size_bytes as u64 {
            problems.push(format!(
                "`{path}` is {read} bytes, the index records {}",
                row.size_bytes
            ));
        }
        if offset != row.data_offset as u64 {
            problems.push(format!(
                "`{path}` starts at byte {offset}, the index records {}",
                row.data_offset
            ));
        }
        let recorded = digest.recorded(row);
        if let Some(target) = &unpack_path {
            if digest.value() == recorded && read == row.size_bytes as u64 {
                std::fs::rename(part_path(target), target)?;
                if let Some(to) = unpack_to {
                    (to.ready)(&path);
                }
            }
        }
        if digest.value() != recorded {
            problems.push(format!(
                "`{path}` (SOP Instance {}) has {} {}, the index records {recorded}",
                row.sop_uid,
                digest.name(),
                digest.value()
            ));
        }
        if let Some(listed) = manifest
            .as_ref()
            .and_then(|m| m.members.iter().find(|m| m.path == path))
        {
            // The manifest lists SHA-256: the member's own when it was hashed with it, else
            // the index's (which the BLAKE3 check above vouches for).
            let sha = match &digest {
                Digest256::Sha256(sha) => sha.as_str(),
                Digest256::Blake3(_) => row.sha256.as_str(),
            };
            if listed.sha256 != sha || listed.sop_instance_uid != row.sop_uid {
                problems.push(format!("`{path}` does not match its manifest entry"));
            }
        } else if manifest.is_some() {
            problems.push(format!("`{path}` is not listed in the manifest"));
        }
    }
    let mut missing: Vec<&str> = wanted.keys().copied().collect();
    missing.sort_unstable();
    for path in missing {
        problems.push(format!("`{path}` is missing from the pack"));
    }
    if manifest.is_none() && md5sum.is_none() && problems.is_empty() {
        problems.push("the pack has no manifest".into());
    }
    Ok(())
}

/// The running checksum of one member.
enum MemberDigest {
    Sha256(Sha256),
    Blake3(Box<blake3::Hasher>),
}

impl MemberDigest {
    fn update(&mut self, bytes: &[u8]) {
        match self {
            MemberDigest::Sha256(sha) => sha.update(bytes),
            MemberDigest::Blake3(hasher) => {
                hasher.update(bytes);
            }
        }
    }

    fn finish(self) -> Digest256 {
        match self {
            MemberDigest::Sha256(sha) => Digest256::Sha256(hex::encode(sha.finalize())),
            MemberDigest::Blake3(hasher) => {
                Digest256::Blake3(hasher.finalize().to_hex().to_string())
            }
        }
    }
}

/// A member's checksum, lower-case hex, with the algorithm that made it.
enum Digest256 {
    Sha256(String),
    Blake3(String),
}

impl Digest256 {
    fn value(&self) -> &str {
        match self {
            Digest256::Sha256(hex) | Digest256::Blake3(hex) => hex,
        }
    }
    fn name(&self) -> &'static str {
        match self {
            Digest256::Sha256(_) => "SHA-256",
            Digest256::Blake3(_) => "BLAKE3",
        }
    }
    /// What the index recorded for the same algorithm.
    fn recorded<'r>(&self, row: &'r PackMemberRow) -> &'r str {
        match self {
            Digest256::Sha256(_) => &row.sha256,
            Digest256::Blake3(_) => &row.blake3,
        }
    }
}

/// Where a member is written until its checksum matched.
fn part_path(path: &Path) -> std::path::PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".part");
    std::path::PathBuf::from(name)
}
