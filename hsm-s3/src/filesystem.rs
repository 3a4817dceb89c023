//! A directory as a NEARLINE target (local disk, NFS, or a bucket mounted by the OS).
//! A pack is written to `<key>.partial`, fsynced, then renamed: a reader never sees half a pack.

use crate::pack_verify::{unpack_pack_stream, verify_pack_stream};
use crate::pack_writer::write_pack;
use archive_core::index::now_millis;
use archive_core::nearline::{
    ExpectedPack, ListedPack, NearlineError, NearlineResult, NearlineTarget, PackContents,
    PackReceipt, PackRequest, TransferProgress, VerifyOutcome,
};
use archive_core::retrieve_cache::MemberReady;
use async_trait::async_trait;
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub struct FilesystemTarget {
    root: PathBuf,
}

impl FilesystemTarget {
    pub fn new(root: PathBuf) -> FilesystemTarget {
        FilesystemTarget { root }
    }

    /// The file for `key`; keys are made by Strata (UIDs, digits), but a key that could climb
    /// out of the root is refused anyway.
    fn path_of(&self, key: &str) -> NearlineResult<PathBuf> {
        if key.is_empty()
            || key.starts_with('/')
            || key.split('/').any(|part| part.is_empty() || part == "..")
        {
            return Err(NearlineError::invalid(format!("invalid pack key `{key}`")));
        }
        Ok(self.root.join(key))
    }
}

/// `a/b.tar` for `<root>/a/b.tar`; `None` for names that are not UTF-8 (Strata never
/// writes such keys).
fn key_of(root: &Path, path: &Path) -> Option<String> {
    let parts: Option<Vec<&str>> = path
        .strip_prefix(root)
        .ok()?
        .components()
        .map(|c| c.as_os_str().to_str())
        .collect();
    Some(parts?.join("/"))
}

fn partial_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".partial");
    PathBuf::from(name)
}

fn unavailable(context: String, error: std::io::Error) -> NearlineError {
    NearlineError::unavailable(format!("{context}: {error}"))
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> NearlineResult<T> + Send + 'static,
) -> NearlineResult<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| NearlineError::unavailable(format!("worker thread failed: {e}")))?
}

#[async_trait]
impl NearlineTarget for FilesystemTarget {
    fn location(&self) -> String {
        self.root.display().to_string()
    }

    async fn upload_pack(
        &self,
        request: PackRequest,
        progress: Arc<TransferProgress>,
    ) -> NearlineResult<PackReceipt> {
        let path = self.path_of(&request.key)?;
        blocking(move || {
            let parent = path.parent().unwrap_or(Path::new("."));
            std::fs::create_dir_all(parent)
                .map_err(|e| unavailable(format!("cannot create {}", parent.display()), e))?;
            let partial = partial_path(&path);
            let file = File::create(&partial)
                .map_err(|e| unavailable(format!("cannot create {}", partial.display()), e))?;
            let mut out = BufWriter::with_capacity(1 << 20, file);
            let result = write_pack(&request, &mut out, &progress, now_millis());
            let finished = result.and_then(|receipt| {
                let file = out.into_inner().map_err(|e| {
                    unavailable(
                        format!("cannot write {}", partial.display()),
                        e.into_error(),
                    )
                })?;
                file.sync_all()
                    .map_err(|e| unavailable(format!("cannot sync {}", partial.display()), e))?;
                std::fs::rename(&partial, &path)
                    .map_err(|e| unavailable(format!("cannot rename {}", partial.display()), e))?;
                File::open(parent)
                    .and_then(|dir| dir.sync_all())
                    .map_err(|e| unavailable(format!("cannot sync {}", parent.display()), e))?;
                Ok(receipt)
            });
            if finished.is_err() {
                let _ = std::fs::remove_file(&partial);
            }
            finished
        })
        .await
    }

    async fn verify_pack(
        &self,
        expected: &ExpectedPack,
        progress: Arc<TransferProgress>,
    ) -> NearlineResult<VerifyOutcome> {
        let path = self.path_of(&expected.key)?;
        let expected = expected.clone();
        blocking(move || {
            let file = match File::open(&path) {
                Ok(file) => file,
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                    return Ok(VerifyOutcome::Damaged(vec![format!(
                        "{} does not exist",
                        path.display()
                    )]))
                }
                Err(error) => {
                    return Err(unavailable(
                        format!("cannot open {}", path.display()),
                        error,
                    ))
                }
            };
            verify_pack_stream(
                BufReader::with_capacity(1 << 20, file),
                &expected,
                &progress,
            )
        })
        .await
    }

    async fn unpack_pack(
        &self,
        expected: &ExpectedPack,
        dir: &Path,
        progress: Arc<TransferProgress>,
        ready: MemberReady,
    ) -> NearlineResult<()> {
        let path = self.path_of(&expected.key)?;
        let expected = expected.clone();
        let dir = dir.to_path_buf();
        blocking(move || {
            let file = File::open(&path)
                .map_err(|e| unavailable(format!("cannot open {}", path.display()), e))?;
            archive_core::metrics::PACK_FETCHES.add(1);
            let counted = CountedRead(BufReader::with_capacity(1 << 20, file));
            unpack_pack_stream(counted, &expected, &progress, &dir, &*ready)
        })
        .await
    }

    async fn read_range(&self, key: &str, offset: u64, length: u64) -> NearlineResult<Vec<u8>> {
        let path = self.path_of(key)?;
        blocking(move || {
            let mut file = File::open(&path)
                .map_err(|e| unavailable(format!("cannot open {}", path.display()), e))?;
            file.seek(SeekFrom::Start(offset))
                .map_err(|e| unavailable(format!("cannot seek in {}", path.display()), e))?;
            let mut data = Vec::with_capacity(usize::try_from(length).unwrap_or(0));
            file.take(length)
                .read_to_end(&mut data)
                .map_err(|e| unavailable(format!("cannot read {}", path.display()), e))?;
            archive_core::metrics::MEMBER_RANGE_READS.add(1);
            archive_core::metrics::NEARLINE_BYTES_READ.add(data.len() as u64);
            if data.len() as u64 != length {
                return Err(NearlineError::invalid(format!(
                    "{} ends before byte {}",
                    path.display(),
                    offset + length
                )));
            }
            Ok(data)
        })
        .await
    }

    async fn list_packs(&self) -> NearlineResult<Vec<ListedPack>> {
        let root = self.root.clone();
        blocking(move || {
            let mut found = Vec::new();
            let mut pending = vec![root.clone()];
            while let Some(dir) = pending.pop() {
                let entries = match std::fs::read_dir(&dir) {
                    Ok(entries) => entries,
                    Err(error) if error.kind() == std::io::ErrorKind::NotFound && dir == root => {
                        break
                    }
                    Err(error) => {
                        return Err(unavailable(format!("cannot list {}", dir.display()), error))
                    }
                };
                for entry in entries.flatten() {
                    let path = entry.path();
                    let Ok(kind) = entry.file_type() else {
                        continue;
                    };
                    if kind.is_dir() {
                        pending.push(path);
                        continue;
                    }
                    // `.partial` files are uploads that never finished.
                    if !kind.is_file() || path.extension().is_none_or(|e| e != "tar") {
                        continue;
                    }
                    let Some(key) = key_of(&root, &path) else {
                        continue;
                    };
                    let size = entry
                        .metadata()
                        .map_err(|e| unavailable(format!("cannot stat {}", path.display()), e))?
                        .len();
                    found.push(ListedPack { key, size });
                }
            }
            found.sort_by(|a, b| a.key.cmp(&b.key));
            Ok(found)
        })
        .await
    }

    async fn read_contents(&self, key: &str, size: u64) -> NearlineResult<PackContents> {
        crate::manifest::read_contents(self, key, size).await
    }

    async fn discard(&self, key: &str) -> NearlineResult<()> {
        let path = self.path_of(key)?;
        blocking(move || {
            for candidate in [partial_path(&path), path] {
                match std::fs::remove_file(&candidate) {
                    Ok(()) => {}
                    Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
                    Err(error) => {
                        return Err(unavailable(
                            format!("cannot remove {}", candidate.display()),
                            error,
                        ))
                    }
                }
            }
            Ok(())
        })
        .await
    }
}

/// Counts bytes read from a target for retrieval (the `/metrics` figure).
pub(crate) struct CountedRead<R>(pub R);

impl<R: Read> Read for CountedRead<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.0.read(buf)?;
        archive_core::metrics::NEARLINE_BYTES_READ.add(n as u64);
        Ok(n)
    }
}
