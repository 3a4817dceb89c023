//! ONLINE storage: file-system groups of directories, each read-write or read-only, each with a
//! minimum-free-space watermark. New objects go to the first read-write filesystem of the store
//! group that is above its watermark.

mod free_space;
mod layout;
mod object_writer;
pub mod sweep;

pub use layout::{is_object_path, relative_path_for};
pub(crate) use object_writer::ChunksReader;
pub use object_writer::{ObjectWriter, ParseSource};

use crate::model::{Filesystem, StoredFile};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

/// Temporary files live here inside each filesystem, so the final rename never crosses devices.
pub const INCOMING_DIR: &str = ".incoming";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("no read-write filesystem in group {group} is above its free-space watermark")]
    Full { group: String },
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
}

impl StoreError {
    pub(crate) fn io(action: &'static str, path: &Path, source: std::io::Error) -> StoreError {
        StoreError::Io {
            action,
            path: path.to_path_buf(),
            source,
        }
    }

    /// True when retrying elsewhere or later could help: the disk is full.
    pub fn is_out_of_space(&self) -> bool {
        match self {
            StoreError::Full { .. } => true,
            StoreError::Io { source, .. } => matches!(
                source.kind(),
                std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
            ),
        }
    }
}

/// Makes a directory ready to be an ONLINE filesystem: a read-write one gets its spool
/// directory (so a wrong path fails when the filesystem is added, not at the next C-STORE);
/// a read-only one must exist.
pub fn prepare_directory(path: &Path, writable: bool) -> std::io::Result<()> {
    if writable {
        std::fs::create_dir_all(path.join(INCOMING_DIR))
    } else if path.is_dir() {
        Ok(())
    } else {
        Err(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("{} is not a directory", path.display()),
        ))
    }
}

#[derive(Clone)]
pub struct OnlineStore {
    store_group: String,
    /// The index's rows. Replaced as a whole when an admin changes filesystems (this node at
    /// once, other nodes at their next refresh); readers take a snapshot and never block.
    filesystems: Arc<RwLock<Arc<[Filesystem]>>>,
    free_space: Arc<free_space::FreeSpace>,
}

impl OnlineStore {
    /// `filesystems` are the index's rows; only those of `store_group` receive new objects,
    /// but files on every filesystem can be read.
    pub fn new(store_group: &str, filesystems: Vec<Filesystem>) -> OnlineStore {
        OnlineStore {
            store_group: store_group.to_string(),
            filesystems: Arc::new(RwLock::new(filesystems.into())),
            free_space: Arc::default(),
        }
    }

    /// The filesystems as they are now.
    pub fn filesystems(&self) -> Arc<[Filesystem]> {
        match self.filesystems.read() {
            Ok(guard) => guard.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// The group new objects go to.
    pub fn store_group(&self) -> &str {
        &self.store_group
    }

    /// Takes the index's current rows: added filesystems receive objects from now on, changed
    /// modes and watermarks apply to the next object. An object being received keeps the
    /// filesystem it started on.
    pub fn replace(&self, filesystems: Vec<Filesystem>) {
        for fs in filesystems.iter().filter(|fs| fs.is_writable()) {
            let incoming = Path::new(&fs.path).join(INCOMING_DIR);
            if let Err(error) = std::fs::create_dir_all(&incoming) {
                tracing::warn!(path = %fs.path, %error, "cannot prepare a filesystem; objects will not go there");
            }
        }
        let fresh: Arc<[Filesystem]> = filesystems.into();
        match self.filesystems.write() {
            Ok(mut guard) => *guard = fresh,
            Err(poisoned) => *poisoned.into_inner() = fresh,
        }
    }

    /// Reads the filesystems from the index again (changes made on other nodes).
    pub async fn refresh(&self, index: &crate::index::Index) -> crate::index::IndexResult<()> {
        let rows = index.filesystems().await?;
        self.replace(rows);
        Ok(())
    }

    /// Creates the directories and removes temporary files a crash left behind. Returns how
    /// many such files were removed. Those objects were never acknowledged, so nothing is lost.
    pub fn prepare(&self) -> Result<usize, StoreError> {
        let mut removed = 0;
        for fs in self.filesystems().iter() {
            let incoming = Path::new(&fs.path).join(INCOMING_DIR);
            if !fs.is_writable() {
                continue;
            }
            std::fs::create_dir_all(&incoming)
                .map_err(|e| StoreError::io("cannot create", &incoming, e))?;
            let entries = std::fs::read_dir(&incoming)
                .map_err(|e| StoreError::io("cannot list", &incoming, e))?;
            for entry in entries.flatten() {
                if entry.file_name().to_string_lossy().ends_with(".part")
                    && std::fs::remove_file(entry.path()).is_ok()
                {
                    removed += 1;
                }
            }
        }
        Ok(removed)
    }

    /// The filesystem a new object goes to, or `Full` when every candidate is below its watermark.
    pub fn choose_target(&self) -> Result<Filesystem, StoreError> {
        for fs in self.filesystems().iter() {
            if fs.group != self.store_group || !fs.is_writable() {
                continue;
            }
            match self.free_space.available(&fs.path) {
                Ok(available) if available > fs.min_free_bytes => return Ok(fs.clone()),
                Ok(_) => continue,
                Err(error) => {
                    tracing::warn!(path = %fs.path, %error, "cannot read free space; skipping filesystem");
                    continue;
                }
            }
        }
        Err(StoreError::Full {
            group: self.store_group.clone(),
        })
    }

    /// Starts receiving one object onto the chosen filesystem.
    pub fn begin(&self) -> Result<ObjectWriter, StoreError> {
        let target = self.choose_target()?;
        Ok(ObjectWriter::new(target))
    }

    pub fn filesystem(&self, id: i64) -> Option<Filesystem> {
        self.filesystems().iter().find(|fs| fs.id == id).cloned()
    }

    pub fn full_path(&self, file: &StoredFile) -> Option<PathBuf> {
        self.filesystem(file.filesystem_id)
            .map(|fs| Path::new(&fs.path).join(&file.rel_path))
    }

    /// Deletes a file that the index no longer points at (a discarded duplicate, a replaced copy).
    pub async fn remove_unreferenced(&self, file: &StoredFile) {
        let Some(path) = self.full_path(file) else {
            return;
        };
        let result =
            tokio::task::spawn_blocking(move || std::fs::remove_file(&path).map(|_| path)).await;
        match result {
            Ok(Ok(_)) => {}
            Ok(Err(error)) => {
                tracing::warn!(rel_path = %file.rel_path, %error, "cannot remove unreferenced file")
            }
            Err(error) => tracing::warn!(%error, "remove task failed"),
        }
    }
}

/// Free and total bytes of an ONLINE group's filesystems.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct GroupUsage {
    pub free: u64,
    pub total: u64,
}

impl GroupUsage {
    pub fn free_percent(&self) -> f64 {
        if self.total == 0 {
            100.0
        } else {
            self.free as f64 * 100.0 / self.total as f64
        }
    }
}

/// Free and total space of a file-system group's filesystems, for watermark retention rules.
/// `None` when none of them can be measured.
pub fn group_usage(filesystems: &[Filesystem], group: &str) -> Option<GroupUsage> {
    let mut usage = GroupUsage { free: 0, total: 0 };
    let mut measured = false;
    // Two directories on one disk share its space: count each device once.
    let mut devices = std::collections::HashSet::new();
    for fs in filesystems.iter().filter(|fs| fs.group == group) {
        use std::os::unix::fs::MetadataExt;
        if let Ok(meta) = std::fs::metadata(&fs.path) {
            if !devices.insert(meta.dev()) {
                continue;
            }
        }
        if let (Ok(free), Ok(total)) = (fs4::available_space(&fs.path), fs4::total_space(&fs.path))
        {
            usage.free += free;
            usage.total += total;
            measured = true;
        }
    }
    measured.then_some(usage)
}
