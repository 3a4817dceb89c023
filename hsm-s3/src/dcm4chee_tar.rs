//! dcm4chee 2.x HSM tars, so an old archive's NEARLINE copies can be registered where they
//! are instead of uploaded again.
//!
//! dcm4chee 2.x's FileCopy service wrote each series it copied to an HSM file system as one
//! tar, `<series directory>-<milliseconds mod 1 h>.tar` (e.g. `2012/3/4/5/1A2B3C4D/5E6F7A8B-
//! 1234567.tar`), with:
//! - a first entry `MD5SUM`: a line per member, `<32 hex digits MD5>  <entry name>\n`
//!   (dcm4chee's VerifyTar reads the name from column 34);
//! - then the members, each the stored Part-10 file byte for byte, named
//!   `<series hash>/<file pk>` (8 upper-case hex digits each, no extension).
//!
//! Nothing else describes the members: their UIDs are in their headers. Reading such a tar
//! (here) therefore reads every member by range and checks it against its MD5 line; a member
//! that fails is rejected, the others are returned for indexing.

use crate::pack_writer::{padded, TAR_BLOCK};
use archive_core::nearline::{
    NearlineError, NearlineResult, NearlineTarget, PackContents, PackFormat, PackedMember,
};
use md5::{Digest, Md5};
use sha2::Sha256;
use std::collections::HashMap;
use std::io::Write;
use std::path::Path;

pub const MD5SUM_NAME: &str = "MD5SUM";

/// How much of the tar one range read takes: small members come several to a read, larger
/// ones are read in pieces of this size (never a whole member in memory).
const WINDOW: u64 = 8 << 20;
/// An MD5SUM larger than this is not a dcm4chee 2.x listing (52 bytes a member).
const LARGEST_MD5SUM: u64 = 16 << 20;

/// The `MD5SUM` entry: entry name -> lower-case hex MD5. Blank lines are skipped; a line that
/// is not `<32 hex>  <name>` makes the whole listing invalid.
pub fn parse_md5sum(text: &[u8]) -> Result<HashMap<String, String>, String> {
    let text = std::str::from_utf8(text).map_err(|_| "MD5SUM is not text".to_string())?;
    let mut listed = HashMap::new();
    for (number, line) in text.lines().enumerate() {
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() {
            continue;
        }
        let (md5, name) = line
            .split_once(char::is_whitespace)
            .map(|(md5, rest)| (md5, rest.trim_start_matches([' ', '*'])))
            .ok_or_else(|| format!("MD5SUM line {}: no entry name", number + 1))?;
        if md5.len() != 32 || !md5.bytes().all(|b| b.is_ascii_hexdigit()) || name.is_empty() {
            return Err(format!(
                "MD5SUM line {}: expected `<32 hex digits>  <name>`",
                number + 1
            ));
        }
        listed.insert(name.to_string(), md5.to_ascii_lowercase());
    }
    Ok(listed)
}

/// Reads the dcm4chee 2.x tar of `size` bytes under `key` (whose first `head` bytes are read
/// already): every member by range, each checked against the MD5SUM entry.
pub async fn read_contents<T: NearlineTarget + ?Sized>(
    target: &T,
    key: &str,
    size: u64,
    head: Vec<u8>,
) -> NearlineResult<PackContents> {
    let invalid = |what: String| NearlineError::invalid(format!("dcm4chee 2.x tar {key}: {what}"));
    let mut window = Window {
        target,
        key,
        size,
        start: 0,
        bytes: head,
    };
    let first = Entry::parse(window.read(0, TAR_BLOCK).await?).map_err(&invalid)?;
    if first.size > LARGEST_MD5SUM {
        return Err(invalid(format!("an MD5SUM of {} bytes", first.size)));
    }
    if TAR_BLOCK + first.size > size {
        return Err(invalid("the MD5SUM entry runs past the end".into()));
    }
    let mut listed = parse_md5sum(window.read(TAR_BLOCK, first.size).await?).map_err(&invalid)?;
    let mut cursor = TAR_BLOCK + padded(first.size);
    let mut members = Vec::new();
    let mut rejected = Vec::new();
    loop {
        if cursor.saturating_add(TAR_BLOCK) > size {
            return Err(invalid(
                "it ends without the zero block that ends a tar".into(),
            ));
        }
        let block = window.read(cursor, TAR_BLOCK).await?;
        if block.iter().all(|b| *b == 0) {
            break;
        }
        let entry = Entry::parse(block).map_err(&invalid)?;
        let data_offset = cursor + TAR_BLOCK;
        let next = entry
            .size
            .checked_next_multiple_of(TAR_BLOCK)
            .and_then(|padded| data_offset.checked_add(padded))
            .filter(|end| *end <= size)
            .ok_or_else(|| invalid(format!("`{}` runs past the end of the tar", entry.name)))?;
        cursor = next;
        if entry.is_directory {
            continue;
        }
        let (md5, sha256) = window.hash(data_offset, entry.size).await?;
        let Some(expected) = listed.remove(&entry.name) else {
            rejected.push(format!(
                "`{}` is in the tar but not in its MD5SUM",
                entry.name
            ));
            continue;
        };
        if md5 != expected {
            rejected.push(format!(
                "`{}` has MD5 {md5}, its MD5SUM line says {expected}: damaged",
                entry.name
            ));
            continue;
        }
        members.push(PackedMember {
            member_path: entry.name,
            data_offset,
            size: entry.size,
            sha256,
            sop_uid: String::new(),
            series_uid: String::new(),
            sop_class_uid: String::new(),
            transfer_syntax: String::new(),
            received_at: Some(entry.mtime_millis),
        });
    }
    let mut missing: Vec<String> = listed.into_keys().collect();
    missing.sort();
    for name in missing {
        rejected.push(format!("`{name}` is in the MD5SUM but not in the tar"));
    }
    Ok(PackContents {
        format: PackFormat::Dcm4chee2,
        study_uid: String::new(),
        created_at: first.mtime_millis,
        members,
        rejected,
    })
}

/// One tar header, as far as these tars use it.
struct Entry {
    name: String,
    size: u64,
    mtime_millis: i64,
    is_directory: bool,
}

impl Entry {
    fn parse(block: &[u8]) -> Result<Entry, String> {
        let header = tar::Header::from_byte_slice(block);
        let stored = header
            .cksum()
            .map_err(|e| format!("an unreadable header: {e}"))?;
        // The checksum counts the checksum field itself as eight spaces.
        let computed: u32 = block
            .iter()
            .enumerate()
            .map(|(i, b)| {
                if (148..156).contains(&i) {
                    32
                } else {
                    u32::from(*b)
                }
            })
            .sum();
        if stored != computed {
            return Err("a header whose checksum does not match (not a tar, or damaged)".into());
        }
        let name = header
            .path()
            .map_err(|e| format!("an unreadable entry name: {e}"))?
            .to_string_lossy()
            .into_owned();
        if !crate::manifest::is_safe_member_path(name.trim_end_matches('/')) {
            return Err(format!(
                "an entry named `{name}`, not a plain relative path"
            ));
        }
        let size = header
            .size()
            .map_err(|e| format!("`{name}`: an unreadable size: {e}"))?;
        // Sizes up to 8 GiB fit the classic octal field; a base-256 size beyond any disk
        // is a damaged header (and would overflow the offsets computed from it).
        if size > 1 << 48 {
            return Err(format!("`{name}`: a size of {size} bytes"));
        }
        let kind = header.entry_type();
        if !(kind.is_file() || kind.is_dir()) {
            return Err(format!(
                "`{name}` is a {kind:?} entry; dcm4chee 2.x tars hold only files"
            ));
        }
        let mtime = header.mtime().unwrap_or(0);
        Ok(Entry {
            name,
            size: if kind.is_dir() { 0 } else { size },
            mtime_millis: i64::try_from(mtime).unwrap_or(0).saturating_mul(1000),
            is_directory: kind.is_dir(),
        })
    }
}

/// Sequential reads of one object by range, a window at a time.
struct Window<'t, T: ?Sized> {
    target: &'t T,
    key: &'t str,
    size: u64,
    start: u64,
    bytes: Vec<u8>,
}

impl<T: NearlineTarget + ?Sized> Window<'_, T> {
    /// `len` (at most [`WINDOW`]) bytes at `pos`; callers have checked they are in the object.
    async fn read(&mut self, pos: u64, len: u64) -> NearlineResult<&[u8]> {
        let held_end = self.start + self.bytes.len() as u64;
        if pos < self.start || pos + len > held_end {
            let want = len.max(WINDOW).min(self.size.saturating_sub(pos));
            self.bytes = self.target.read_range(self.key, pos, want).await?;
            self.start = pos;
            if (self.bytes.len() as u64) < len {
                return Err(NearlineError::invalid(format!(
                    "{}: {} bytes at {pos} asked, {} read",
                    self.key,
                    len,
                    self.bytes.len()
                )));
            }
        }
        let from = (pos - self.start) as usize;
        Ok(&self.bytes[from..from + len as usize])
    }

    /// MD5 and SHA-256 (lower-case hex) of `len` bytes at `pos`.
    async fn hash(&mut self, pos: u64, len: u64) -> NearlineResult<(String, String)> {
        let mut md5 = Md5::new();
        let mut sha = Sha256::new();
        let mut done = 0;
        while done < len {
            let piece = (len - done).min(WINDOW);
            let bytes = self.read(pos + done, piece).await?;
            md5.update(bytes);
            sha.update(bytes);
            done += piece;
        }
        Ok((hex::encode(md5.finalize()), hex::encode(sha.finalize())))
    }
}

/// Writes `files` (entry name, file) as one dcm4chee 2.x HSM tar at `out`: the MD5SUM entry,
/// then each file, with modification time `mtime` (Unix seconds). For generated test
/// archives (`strata generate --layout dcm4chee2 --hsm-tars DIR`).
pub fn write_series_tar(
    out: &Path,
    files: &[(String, std::path::PathBuf)],
    mtime: u64,
) -> std::io::Result<()> {
    let mut listing = Vec::new();
    for (name, path) in files {
        let mut md5 = Md5::new();
        std::io::copy(&mut std::fs::File::open(path)?, &mut md5)?;
        writeln!(listing, "{}  {name}", hex::encode(md5.finalize()))?;
    }
    if let Some(parent) = out.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let mut builder = tar::Builder::new(std::io::BufWriter::new(std::fs::File::create(out)?));
    let header = |name: &str, size: u64| -> std::io::Result<tar::Header> {
        let mut header = tar::Header::new_ustar();
        header.set_path(name)?;
        header.set_size(size);
        header.set_mode(0o644);
        header.set_mtime(mtime);
        header.set_entry_type(tar::EntryType::Regular);
        header.set_cksum();
        Ok(header)
    };
    builder.append(&header(MD5SUM_NAME, listing.len() as u64)?, &listing[..])?;
    for (name, path) in files {
        let file = std::fs::File::open(path)?;
        let size = file.metadata()?.len();
        builder.append(&header(name, size)?, file)?;
    }
    builder.into_inner()?.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn md5sum_lines_as_dcm4chee_writes_them() {
        let text = b"0123456789abcdef0123456789ABCDEF  1A2B3C4D/0000001F\n\
                     ffffffffffffffffffffffffffffffff  1A2B3C4D/00000020\n";
        let listed = parse_md5sum(text).expect("valid");
        assert_eq!(listed.len(), 2);
        assert_eq!(
            listed["1A2B3C4D/0000001F"],
            "0123456789abcdef0123456789abcdef"
        );
        assert!(parse_md5sum(b"not-an-md5  name\n").is_err());
        assert!(parse_md5sum(b"0123456789abcdef0123456789abcdef\n").is_err());
    }
}
