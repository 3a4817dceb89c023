//! Receiving one object onto an ONLINE filesystem without holding it in memory.
//!
//! Bytes collect in a buffer; past [`SPILL_THRESHOLD`] they go to a temporary file under
//! `.incoming/`. Small objects (most of a CT series) therefore reach the disk in one blocking
//! call at `finish`, large ones stream with bounded memory. `finish` makes the file durable
//! (fsync of the file, link into place without replacing anything, fsync of the directory)
//! before anyone may index it.
//!
//! The temp file is renamed into place with `RENAME_NOREPLACE` (rustix: the safe way to reach
//! renameat2), falling back to link + unlink where a filesystem lacks it.

use super::{StoreError, INCOMING_DIR};
use crate::model::{Filesystem, StoredFile};
use sha2::{Digest, Sha256};
use std::collections::HashSet;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// Bytes kept in memory before spilling to the temporary file.
pub const SPILL_THRESHOLD: usize = 1 << 20;

static NEXT_TEMP_ID: AtomicU64 = AtomicU64::new(0);

/// Where the attribute parser can read the complete object from.
pub enum ParseSource<'a> {
    Memory(&'a [u8]),
    File(&'a Path),
}

pub struct ObjectWriter {
    target: Filesystem,
    temp_path: PathBuf,
    file: Option<File>,
    pending: Vec<u8>,
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
            pending: Vec::new(),
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

    pub async fn write(&mut self, bytes: &[u8]) -> Result<(), StoreError> {
        self.hasher.update(bytes);
        self.pending.extend_from_slice(bytes);
        self.size += bytes.len() as u64;
        if self.pending.len() >= SPILL_THRESHOLD {
            self.spill().await?;
        }
        Ok(())
    }

    /// Moves buffered bytes to the temporary file (created on first use).
    async fn spill(&mut self) -> Result<(), StoreError> {
        let file = self.file.take();
        let mut pending = std::mem::take(&mut self.pending);
        let temp_path = self.temp_path.clone();
        let (file, mut pending) = run_blocking(move || {
            let mut file = match file {
                Some(file) => file,
                None => create_temp(&temp_path)?,
            };
            file.write_all(&pending)
                .map_err(|e| StoreError::io("cannot write", &temp_path, e))?;
            pending.clear();
            Ok((file, pending))
        })
        .await?;
        self.file = Some(file);
        pending.clear();
        self.pending = pending;
        Ok(())
    }

    /// The whole object so far, for parsing its attributes.
    pub async fn parse_source(&mut self) -> Result<ParseSource<'_>, StoreError> {
        if self.file.is_none() {
            return Ok(ParseSource::Memory(&self.pending));
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
        if self.file.take().is_some() {
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

fn write_durably(file: &mut File, pending: &[u8], path: &Path) -> Result<(), StoreError> {
    file.write_all(pending)
        .map_err(|e| StoreError::io("cannot write", path, e))?;
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
        assert!(matches!(
            writer.parse_source().await,
            Ok(ParseSource::Memory(b"hello world"))
        ));
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
