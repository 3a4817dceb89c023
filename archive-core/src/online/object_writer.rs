//! Receiving one object onto an ONLINE filesystem without holding it in memory.
//!
//! Received chunks are kept as they arrived (no copy into one growing buffer: that copy and its
//! reallocations were 5 % of STOW-RS's CPU); past [`SPILL_THRESHOLD`] bytes, or
//! [`MAX_IO_SLICES`] chunks, they go to a temporary file under `.incoming/` in one `writev`.
//! Small objects (most of a CT series) therefore reach the disk in one blocking call at
//! `finish`, large ones stream with bounded memory. `finish` makes the file durable (fsync of
//! the file, link into place without replacing anything, fsync of the directory)
//! before anyone may index it.
//!
//! The temp file is renamed into place with `RENAME_NOREPLACE` (rustix: the safe way to reach
//! renameat2), falling back to link + unlink where a filesystem lacks it.

use super::{StoreError, INCOMING_DIR};
use crate::model::{Filesystem, StoredFile};
use bytes::Bytes;
use sha2::{Digest, Sha256};
use std::collections::HashSet;
use std::fs::File;
use std::io::{IoSlice, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// Bytes kept in memory before spilling to the temporary file.
pub const SPILL_THRESHOLD: usize = 1 << 20;

static NEXT_TEMP_ID: AtomicU64 = AtomicU64::new(0);

/// Where the attribute parser can read the complete object from.
pub enum ParseSource<'a> {
    Memory(&'a [u8]),
    /// An object still in memory, in the chunks it arrived in.
    Chunks(&'a [Bytes]),
    File(&'a Path),
}

/// Reads chunks one after the other, as if they were one buffer.
pub(crate) struct ChunksReader<'a> {
    chunks: &'a [Bytes],
    /// Bytes of `chunks[0]` already read.
    offset: usize,
}

impl<'a> ChunksReader<'a> {
    pub(crate) fn new(chunks: &'a [Bytes]) -> ChunksReader<'a> {
        ChunksReader { chunks, offset: 0 }
    }
}

impl Read for ChunksReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while let Some((first, rest)) = self.chunks.split_first() {
            let unread = first.get(self.offset..).unwrap_or_default();
            if unread.is_empty() {
                self.chunks = rest;
                self.offset = 0;
                continue;
            }
            let n = unread.len().min(buf.len());
            buf[..n].copy_from_slice(&unread[..n]);
            self.offset += n;
            return Ok(n);
        }
        Ok(0)
    }
}

pub struct ObjectWriter {
    target: Filesystem,
    temp_path: PathBuf,
    file: Option<File>,
    /// The temporary file may exist: set before a spill creates it (`file` is away in the
    /// blocking task meanwhile, and gone if its write failed), cleared when `finish` takes it.
    temp_created: bool,
    /// Received chunks not yet written, and their total length.
    pending: Vec<Bytes>,
    pending_len: usize,
    hasher: Sha256,
    size: u64,
}

impl ObjectWriter {
    pub(super) fn new(target: Filesystem) -> ObjectWriter {
        let id = NEXT_TEMP_ID.fetch_add(1, Ordering::Relaxed);
        let temp_path = Path::new(&target.path).join(INCOMING_DIR).join(format!(
            "{}-{}.part",
            std::process::id(),
            id
        ));
        ObjectWriter {
            target,
            temp_path,
            file: None,
            temp_created: false,
            pending: Vec::new(),
            pending_len: 0,
            hasher: Sha256::new(),
            size: 0,
        }
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    pub fn filesystem(&self) -> &Filesystem {
        &self.target
    }

    /// Appends a copy of `bytes` (for callers whose buffer is reused).
    pub async fn write(&mut self, bytes: &[u8]) -> Result<(), StoreError> {
        self.write_bytes(Bytes::copy_from_slice(bytes)).await
    }

    /// Appends a received chunk, kept as it is until written.
    pub async fn write_bytes(&mut self, bytes: Bytes) -> Result<(), StoreError> {
        if bytes.is_empty() {
            return Ok(());
        }
        self.hasher.update(&bytes);
        self.size += bytes.len() as u64;
        self.pending_len += bytes.len();
        self.pending.push(bytes);
        // The chunk count is bounded too: a peer sending tiny PDVs (or a body in tiny pieces)
        // would otherwise have a megabyte of them, each with its own allocation, held here.
        if self.pending_len >= SPILL_THRESHOLD || self.pending.len() >= MAX_IO_SLICES {
            self.spill().await?;
        }
        Ok(())
    }

    /// Moves buffered bytes to the temporary file (created on first use).
    async fn spill(&mut self) -> Result<(), StoreError> {
        let file = self.file.take();
        let pending = std::mem::take(&mut self.pending);
        self.pending_len = 0;
        self.temp_created = true;
        let temp_path = self.temp_path.clone();
        let file = run_blocking(move || {
            let mut file = match file {
                Some(file) => file,
                None => create_temp(&temp_path)?,
            };
            write_chunks(&mut file, &pending)
                .map_err(|e| StoreError::io("cannot write", &temp_path, e))?;
            Ok(file)
        })
        .await?;
        self.file = Some(file);
        Ok(())
    }

    /// The whole object so far, for parsing its attributes.
    pub async fn parse_source(&mut self) -> Result<ParseSource<'_>, StoreError> {
        if self.file.is_none() {
            return Ok(ParseSource::Chunks(&self.pending));
        }
        if !self.pending.is_empty() {
            self.spill().await?;
        }
        Ok(ParseSource::File(&self.temp_path))
    }

    /// Makes the object durable at `rel_path` (or a free variant of it, should a different
    /// object already be there) and returns the file record for the index.
    pub async fn finish(mut self, rel_path: &str) -> Result<StoredFile, StoreError> {
        let file = self.file.take();
        // From here the blocking task owns the temporary file and removes it on failure.
        self.temp_created = false;
        let pending = std::mem::take(&mut self.pending);
        let temp_path = self.temp_path.clone();
        let root = PathBuf::from(&self.target.path);
        let rel_path = rel_path.to_string();
        let sha256 = hex::encode(std::mem::take(&mut self.hasher).finalize());
        let size = self.size;
        let filesystem_id = self.target.id;
        let final_rel = run_blocking(move || {
            let mut file = match file {
                Some(file) => file,
                None => create_temp(&temp_path)?,
            };
            let result = write_durably(&mut file, &pending, &temp_path)
                .and_then(|_| move_into_place(&root, &temp_path, &rel_path));
            if result.is_err() {
                let _ = std::fs::remove_file(&temp_path);
            }
            result
        })
        .await?;
        Ok(StoredFile {
            filesystem_id,
            rel_path: final_rel,
            size,
            sha256,
        })
    }
}

impl Drop for ObjectWriter {
    /// An unfinished object (failed or abandoned transfer) leaves nothing behind.
    fn drop(&mut self) {
        if self.temp_created {
            let _ = std::fs::remove_file(&self.temp_path);
        }
    }
}

fn create_temp(path: &Path) -> Result<File, StoreError> {
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(|e| StoreError::io("cannot create", path, e))
}

/// Most buffers one `writev` takes (Linux's IOV_MAX).
const MAX_IO_SLICES: usize = 1024;

/// Writes every chunk, one `writev` per up to [`MAX_IO_SLICES`] chunks.
fn write_chunks(file: &mut File, chunks: &[Bytes]) -> std::io::Result<()> {
    for group in chunks.chunks(MAX_IO_SLICES) {
        let mut slices: Vec<IoSlice<'_>> = group.iter().map(|c| IoSlice::new(c)).collect();
        let mut unwritten: &mut [IoSlice<'_>] = &mut slices;
        while !unwritten.is_empty() {
            match file.write_vectored(unwritten) {
                Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
                Ok(n) => IoSlice::advance_slices(&mut unwritten, n),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(())
}

fn write_durably(file: &mut File, pending: &[Bytes], path: &Path) -> Result<(), StoreError> {
    write_chunks(file, pending).map_err(|e| StoreError::io("cannot write", path, e))?;
    // fdatasync: the size and blocks are flushed with the data; the name is made durable by
    // the directory fsync after the rename.
    file.sync_data()
        .map_err(|e| StoreError::io("cannot fsync", path, e))
}

/// Renames `from` to `to` unless `to` exists.
fn rename_no_replace(from: &Path, to: &Path) -> std::io::Result<()> {
    use rustix::fs::{renameat_with, RenameFlags, CWD};
    match renameat_with(CWD, from, CWD, to, RenameFlags::NOREPLACE) {
        Ok(()) => Ok(()),
        Err(errno) if errno == rustix::io::Errno::INVAL || errno == rustix::io::Errno::NOSYS => {
            std::fs::hard_link(from, to)?;
            std::fs::remove_file(from)
        }
        Err(errno) => Err(errno.into()),
    }
}

/// Moves the temp file to `rel_path`, never replacing an existing file (a hash collision or a
/// duplicate must not destroy a stored object), and fsyncs the directories involved.
fn move_into_place(root: &Path, temp: &Path, rel_path: &str) -> Result<String, StoreError> {
    let wanted = Path::new(rel_path);
    let dir_rel = wanted.parent().unwrap_or(Path::new(""));
    create_dirs_durably(root, dir_rel)?;
    let stem = rel_path.trim_end_matches(".dcm");
    for attempt in 0..1000u32 {
        let candidate = if attempt == 0 {
            rel_path.to_string()
        } else {
            format!("{stem}-{attempt}.dcm")
        };
        let target = root.join(&candidate);
        match rename_no_replace(temp, &target) {
            Ok(()) => {
                let dir = root.join(dir_rel);
                sync_dir(&dir)?;
                return Ok(candidate);
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(StoreError::io("cannot move into place", &target, e)),
        }
    }
    Err(StoreError::io(
        "no free file name for",
        &root.join(rel_path),
        std::io::Error::other("1000 names taken"),
    ))
}

/// Directories known to exist durably: consecutive objects of a series share one, so most
/// stores skip the per-component checks. Cleared when large.
static KNOWN_DIRS: Mutex<Option<HashSet<PathBuf>>> = Mutex::new(None);

fn known_dir(dir: &Path) -> bool {
    KNOWN_DIRS
        .lock()
        .map(|set| set.as_ref().is_some_and(|s| s.contains(dir)))
        .unwrap_or(false)
}

fn remember_dir(dir: PathBuf) {
    if let Ok(mut guard) = KNOWN_DIRS.lock() {
        let set = guard.get_or_insert_with(HashSet::new);
        if set.len() > 10_000 {
            set.clear();
        }
        set.insert(dir);
    }
}

/// Creates missing directories one level at a time and fsyncs each new one's parent, so the
/// directory entries survive a power loss too.
fn create_dirs_durably(root: &Path, rel_dir: &Path) -> Result<(), StoreError> {
    let full = root.join(rel_dir);
    if known_dir(&full) {
        return Ok(());
    }
    let mut current = root.to_path_buf();
    for component in rel_dir.components() {
        let parent = current.clone();
        current.push(component);
        if current.is_dir() {
            continue;
        }
        match std::fs::create_dir(&current) {
            Ok(()) => sync_dir(&parent)?,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(StoreError::io("cannot create", &current, e)),
        }
    }
    remember_dir(full);
    Ok(())
}

fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| StoreError::io("cannot fsync directory", dir, e))
}

async fn run_blocking<T, F>(work: F) -> Result<T, StoreError>
where
    F: FnOnce() -> Result<T, StoreError> + Send + 'static,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|join_error| {
            StoreError::io(
                "storage task failed for",
                Path::new(""),
                std::io::Error::other(join_error.to_string()),
            )
        })?
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filesystem(dir: &Path) -> Filesystem {
        std::fs::create_dir_all(dir.join(INCOMING_DIR)).expect("mkdir");
        Filesystem {
            id: 1,
            group: "G".into(),
            path: dir.display().to_string(),
            mode: "rw".into(),
            min_free_bytes: 0,
        }
    }

    #[tokio::test]
    async fn small_object_is_written_once_with_its_checksum() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut writer = ObjectWriter::new(filesystem(dir.path()));
        writer.write(b"hello ").await.expect("write");
        writer.write(b"world").await.expect("write");
        match writer.parse_source().await {
            Ok(ParseSource::Chunks(chunks)) => {
                let mut read = Vec::new();
                ChunksReader::new(chunks)
                    .read_to_end(&mut read)
                    .expect("read");
                assert_eq!(read, b"hello world");
            }
            _ => panic!("a small object is parsed from memory"),
        }
        let stored = writer.finish("a/b/c.dcm").await.expect("finish");
        assert_eq!(stored.rel_path, "a/b/c.dcm");
        assert_eq!(stored.size, 11);
        assert_eq!(stored.sha256, hex::encode(Sha256::digest(b"hello world")));
        assert_eq!(
            std::fs::read(dir.path().join("a/b/c.dcm")).expect("read"),
            b"hello world"
        );
        let leftovers = std::fs::read_dir(dir.path().join(INCOMING_DIR))
            .expect("ls")
            .count();
        assert_eq!(leftovers, 0);
    }

    #[tokio::test]
    async fn large_object_spills_and_never_replaces_an_existing_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let fs = filesystem(dir.path());
        let chunk = vec![7u8; SPILL_THRESHOLD / 2 + 1];
        let mut writer = ObjectWriter::new(fs.clone());
        for _ in 0..5 {
            writer.write(&chunk).await.expect("write");
        }
        assert!(matches!(
            writer.parse_source().await,
            Ok(ParseSource::File(_))
        ));
        let first = writer.finish("x/y.dcm").await.expect("finish");

        let mut second = ObjectWriter::new(fs);
        second.write(b"other").await.expect("write");
        let second = second.finish("x/y.dcm").await.expect("finish");
        assert_eq!(first.rel_path, "x/y.dcm");
        assert_eq!(second.rel_path, "x/y-1.dcm", "must not overwrite");
        let first_len = std::fs::metadata(dir.path().join("x/y.dcm"))
            .expect("stat")
            .len();
        assert_eq!(first_len, chunk.len() as u64 * 5);
    }

    #[test]
    fn chunks_read_as_one_buffer_whatever_the_read_size() {
        let chunks = [
            Bytes::from_static(b"abc"),
            Bytes::new(),
            Bytes::from_static(b"d"),
            Bytes::from_static(b"efgh"),
        ];
        for read_size in [1, 2, 3, 5, 64] {
            let mut reader = ChunksReader::new(&chunks);
            let mut all = Vec::new();
            let mut buf = vec![0u8; read_size];
            loop {
                let n = reader.read(&mut buf).expect("read");
                if n == 0 {
                    break;
                }
                all.extend_from_slice(&buf[..n]);
            }
            assert_eq!(all, b"abcdefgh", "read size {read_size}");
        }
    }

    /// More chunks than one `writev` takes, spilled and finished: the file holds them all, in
    /// order.
    #[tokio::test]
    async fn many_small_chunks_are_written_in_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut writer = ObjectWriter::new(filesystem(dir.path()));
        let mut expected = Vec::new();
        for i in 0..(SPILL_THRESHOLD / 400 + MAX_IO_SLICES) {
            let chunk: Vec<u8> = (0..500).map(|j| ((i * 7 + j) % 251) as u8).collect();
            expected.extend_from_slice(&chunk);
            if i % 2 == 0 {
                writer.write_bytes(Bytes::from(chunk)).await.expect("write");
            } else {
                writer.write(&chunk).await.expect("write");
            }
        }
        let stored = writer.finish("m/n.dcm").await.expect("finish");
        assert_eq!(stored.size, expected.len() as u64);
        assert_eq!(stored.sha256, hex::encode(Sha256::digest(&expected)));
        assert_eq!(
            std::fs::read(dir.path().join("m/n.dcm")).expect("read"),
            expected
        );
    }

    /// Tiny chunks cannot pile up in memory: at MAX_IO_SLICES of them they go to disk.
    #[tokio::test]
    async fn tiny_chunks_spill_by_count() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut writer = ObjectWriter::new(filesystem(dir.path()));
        for i in 0..MAX_IO_SLICES {
            writer.write(&[i as u8]).await.expect("write");
        }
        assert!(
            writer.pending.is_empty(),
            "spilled after {MAX_IO_SLICES} chunks"
        );
        assert!(matches!(
            writer.parse_source().await,
            Ok(ParseSource::File(_))
        ));
        let stored = writer.finish("t/u.dcm").await.expect("finish");
        assert_eq!(stored.size, MAX_IO_SLICES as u64);
    }

    #[tokio::test]
    async fn dropped_writer_leaves_no_temp_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut writer = ObjectWriter::new(filesystem(dir.path()));
        writer
            .write(&vec![1u8; SPILL_THRESHOLD + 10])
            .await
            .expect("write");
        drop(writer);
        let leftovers = std::fs::read_dir(dir.path().join(INCOMING_DIR))
            .expect("ls")
            .count();
        assert_eq!(leftovers, 0);
    }
}
