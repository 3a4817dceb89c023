//! Writes a pack: the manifest, then every stored file byte-exact, as one ustar stream into any
//! `Write` (a file, or the chunks of a multipart upload). Runs on a blocking thread.

use crate::manifest::{Manifest, MANIFEST_NAME};
use archive_core::nearline::{
    MemberPlacement, NearlineError, NearlineResult, PackReceipt, PackRequest, PackSource,
    TransferProgress,
};
use sha2::{Digest, Sha256};
use std::fs::File;
use std::io::{self, Read, Write};

/// Counts and hashes everything written through it: the pack's size, checksum and each
/// member's offset come from what was actually written.
pub(crate) struct CountingWriter<W> {
    inner: W,
    written: u64,
    sha: Sha256,
}

impl<W: Write> Write for CountingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.written += n as u64;
        self.sha.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Reads one ONLINE file, failing if it is not exactly the bytes the index recorded.
struct CheckedSource<'a> {
    file: File,
    remaining: u64,
    sha: Sha256,
    blake3: blake3::Hasher,
    source: &'a PackSource,
    progress: &'a TransferProgress,
    mismatch: Option<String>,
}

impl Read for CheckedSource<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.remaining == 0 {
            return Ok(0);
        }
        let want = buf
            .len()
            .min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
        let n = self.file.read(&mut buf[..want])?;
        if n == 0 {
            return Err(self.fail(format!(
                "{} is shorter than the {} bytes the index records",
                self.source.file_path.display(),
                self.source.size
            )));
        }
        self.remaining -= n as u64;
        self.sha.update(&buf[..n]);
        self.blake3.update(&buf[..n]);
        self.progress.add_bytes(n as u64);
        if self.remaining == 0 {
            let actual = hex::encode(self.sha.clone().finalize());
            if actual != self.source.sha256 {
                return Err(self.fail(format!(
                    "{} has SHA-256 {actual}, the index records {}: the ONLINE copy is damaged",
                    self.source.file_path.display(),
                    self.source.sha256
                )));
            }
        }
        Ok(n)
    }
}

impl CheckedSource<'_> {
    fn fail(&mut self, message: String) -> io::Error {
        self.mismatch = Some(message.clone());
        io::Error::new(io::ErrorKind::InvalidData, message)
    }
}

fn io_error(context: &str, error: io::Error) -> NearlineError {
    NearlineError::unavailable(format!("{context}: {error}"))
}

/// Writes the pack for `request` into `out`.
pub fn write_pack<W: Write>(
    request: &PackRequest,
    out: W,
    progress: &TransferProgress,
    created_at: i64,
) -> NearlineResult<PackReceipt> {
    let counter = CountingWriter {
        inner: out,
        written: 0,
        sha: Sha256::new(),
    };
    let mut builder = tar::Builder::new(counter);
    let mtime = u64::try_from(created_at / 1000).unwrap_or(0);

    let manifest = serde_json::to_vec_pretty(&Manifest::for_request(request, created_at))
        .map_err(|e| NearlineError::invalid(format!("cannot encode the manifest: {e}")))?;
    let mut header = member_header(manifest.len() as u64, mtime);
    builder
        .append_data(&mut header, MANIFEST_NAME, manifest.as_slice())
        .map_err(|e| io_error("cannot write the manifest", e))?;

    let mut placements = Vec::with_capacity(request.members.len());
    for source in &request.members {
        let file = File::open(&source.file_path).map_err(|e| {
            NearlineError::source_mismatch(format!(
                "cannot open {}: {e}",
                source.file_path.display()
            ))
        })?;
        let actual_size = file
            .metadata()
            .map_err(|e| io_error("cannot read file metadata", e))?
            .len();
        if actual_size != source.size {
            return Err(NearlineError::source_mismatch(format!(
                "{} is {actual_size} bytes, the index records {}",
                source.file_path.display(),
                source.size
            )));
        }
        let mut reader = CheckedSource {
            file,
            remaining: source.size,
            sha: Sha256::new(),
            blake3: blake3::Hasher::new(),
            source,
            progress,
            mismatch: None,
        };
        let mut header = member_header(source.size, mtime);
        let path = crate::manifest::member_path(&source.series_uid, &source.sop_uid);
        if let Err(error) = builder.append_data(&mut header, &path, &mut reader) {
            return Err(match reader.mismatch {
                Some(message) => NearlineError::source_mismatch(message),
                None => io_error("cannot write the pack", error),
            });
        }
        let end = builder.get_ref().written;
        placements.push(MemberPlacement {
            member_path: path,
            data_offset: end - padded(source.size),
            size: source.size,
            blake3: reader.blake3.finalize().to_hex().to_string(),
        });
        progress.add_item();
    }
    let mut counter = builder
        .into_inner()
        .map_err(|e| io_error("cannot finish the pack", e))?;
    counter
        .flush()
        .map_err(|e| io_error("cannot finish the pack", e))?;
    Ok(PackReceipt {
        size: counter.written,
        sha256: hex::encode(counter.sha.finalize()),
        placements,
    })
}

fn member_header(size: u64, mtime: u64) -> tar::Header {
    let mut header = tar::Header::new_ustar();
    header.set_size(size);
    header.set_mode(0o444);
    header.set_mtime(mtime);
    header.set_entry_type(tar::EntryType::Regular);
    header
}

/// A tar header, and the unit every member's data is padded to.
pub(crate) const TAR_BLOCK: u64 = 512;
/// The two zero blocks that end a tar.
pub(crate) const TAR_END: u64 = 2 * TAR_BLOCK;

/// A member's data occupies whole 512-byte blocks.
pub(crate) fn padded(size: u64) -> u64 {
    size.div_ceil(TAR_BLOCK) * TAR_BLOCK
}
