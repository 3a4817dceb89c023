//! The one way retrievals (C-MOVE, C-GET, later WADO) read stored objects: [`Retriever::open`]
//! turns an index location into the object's data set bytes, without the caller ever seeing a
//! file path. An ONLINE copy is read from its file; a NEARLINE-only instance from its pack,
//! fetched once into the retrieve cache ([`crate::retrieve_cache`]) — or, when a single
//! instance is asked for, read alone with a ranged GET at the offset the index recorded.

use crate::index::{Index, IndexError, InstanceLocation, NearlineMember};
use crate::nearline::{ExpectedPack, NearlineError, TargetCache, TransferProgress};
use crate::retrieve_cache::{CachePin, MemberReady, RetrieveCache};
use sha2::{Digest, Sha256};
use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::sync::Arc;

/// Single instances larger than this are served from the whole pack instead of a range.
const RANGE_READ_LIMIT: i64 = 64 << 20;

/// Objects up to this size are read in one go; larger ones are streamed in chunks.
const READ_WHOLE_LIMIT: u64 = 8 << 20;
/// Chunk size when streaming a large object.
const CHUNK: usize = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum RetrieveError {
    #[error("SOP Instance {sop_uid}: cannot read its stored file: {source}")]
    Read {
        sop_uid: String,
        source: std::io::Error,
    },
    #[error("SOP Instance {sop_uid}: stored file is not a DICOM Part-10 file")]
    NotPart10 { sop_uid: String },
    #[error("SOP Instance {sop_uid}: cannot read its NEARLINE copy: {message}")]
    Nearline { sop_uid: String, message: String },
}

/// Why a pack could not be fetched into the retrieve cache.
#[derive(Debug, thiserror::Error)]
pub enum PackFetchError {
    #[error("cannot read the pack's members from the index: {0}")]
    Index(#[from] IndexError),
    #[error("target `{0}` no longer exists")]
    TargetGone(String),
    #[error(transparent)]
    Target(#[from] NearlineError),
}

/// Where the received data set starts in a Part-10 file written by Strata (or anyone who puts
/// the group length first, as PS3.10 requires): after preamble, `DICM`, and the meta group.
pub fn part10_data_set_offset(head: &[u8]) -> Option<usize> {
    if head.len() < 144
        || &head[128..132] != b"DICM"
        || head[132..134] != [2, 0]
        || head[134..136] != [0, 0]
    {
        return None;
    }
    let group_length = u32::from_le_bytes(head.get(140..144)?.try_into().ok()?);
    144usize.checked_add(group_length as usize)
}

/// What reading NEARLINE copies needs: the index (pack members), the targets, the cache.
pub struct NearlineAccess {
    pub index: Index,
    pub targets: Arc<TargetCache>,
    pub cache: Arc<RetrieveCache>,
}

#[derive(Clone, Default)]
pub struct Retriever {
    nearline: Option<Arc<NearlineAccess>>,
}

impl Retriever {
    /// Reads ONLINE copies only.
    pub fn new() -> Retriever {
        Retriever { nearline: None }
    }

    /// Reads ONLINE copies, and NEARLINE ones through `access`.
    pub fn with_nearline(access: NearlineAccess) -> Retriever {
        Retriever {
            nearline: Some(Arc::new(access)),
        }
    }

    /// The retrieve cache, when this process reads NEARLINE copies.
    pub fn cache(&self) -> Option<&Arc<RetrieveCache>> {
        self.nearline.as_ref().map(|access| &access.cache)
    }

    /// Opens an instance for sending, as part of retrieving many: a NEARLINE-only instance
    /// comes from its whole pack, fetched once into the retrieve cache.
    pub async fn open(&self, location: &InstanceLocation) -> Result<OpenedInstance, RetrieveError> {
        match &location.nearline {
            None => Self::open_file(location, location.full_path(), None).await,
            Some(member) => {
                let mut result = self.open_from_pack(location, member).await;
                let mut tried = member;
                for next in &location.nearline_fallbacks {
                    let Err(RetrieveError::Nearline { message, .. }) = &result else {
                        break;
                    };
                    fall_back(location, tried, next, message);
                    result = self.open_from_pack(location, next).await;
                    tried = next;
                }
                result
            }
        }
    }

    /// Opens one instance asked for on its own (IMAGE level): a NEARLINE-only instance is
    /// read alone with a ranged GET, not with its whole pack (unless the pack is already in
    /// the cache, or the instance is very large).
    pub async fn open_single(
        &self,
        location: &InstanceLocation,
    ) -> Result<OpenedInstance, RetrieveError> {
        match &location.nearline {
            Some(member) if location.size_bytes <= RANGE_READ_LIMIT => {
                let mut result = self.open_range(location, member).await;
                let mut tried = member;
                for next in &location.nearline_fallbacks {
                    let Err(RetrieveError::Nearline { message, .. }) = &result else {
                        break;
                    };
                    fall_back(location, tried, next, message);
                    result = self.open_range(location, next).await;
                    tried = next;
                }
                result
            }
            _ => self.open(location).await,
        }
    }

    async fn open_file(
        location: &InstanceLocation,
        path: PathBuf,
        pin: Option<CachePin>,
    ) -> Result<OpenedInstance, RetrieveError> {
        let sop_uid = location.sop_uid.clone();
        let result = tokio::task::spawn_blocking(move || open_blocking(path, &sop_uid)).await;
        let body = match result {
            Ok(body) => body?,
            Err(join) => {
                return Err(RetrieveError::Read {
                    sop_uid: location.sop_uid.clone(),
                    source: std::io::Error::other(join.to_string()),
                })
            }
        };
        // Once open, the instance no longer needs its pack in the cache: a small one is in
        // memory, a large one is read through a descriptor that survives eviction's unlink.
        // Keeping the pin while the caller sends would let instances opened ahead (WADO-RS
        // opens four) hold their pack while another pack waits for room behind them.
        drop(pin);
        Ok(OpenedInstance {
            location: location.clone(),
            body,
        })
    }

    fn access(&self, location: &InstanceLocation) -> Result<&Arc<NearlineAccess>, RetrieveError> {
        self.nearline
            .as_ref()
            .ok_or_else(|| RetrieveError::Nearline {
                sop_uid: location.sop_uid.clone(),
                message: "this process does not read NEARLINE copies".into(),
            })
    }

    async fn open_from_pack(
        &self,
        location: &InstanceLocation,
        member: &NearlineMember,
    ) -> Result<OpenedInstance, RetrieveError> {
        let access = self.access(location)?.clone();
        // Twice at most: a member read early (pack still arriving) can move when the pack is
        // put in place between finding and opening it.
        for _ in 0..2 {
            let fetcher = access.clone();
            let wanted = member.clone();
            let (pin, path) =
                access
                    .cache
                    .get_member(
                        member.pack_id,
                        member.pack_size.max(0) as u64,
                        &member.member_path,
                        move |dir, ready| async move {
                            fetch_pack(&fetcher, &wanted, &dir, ready).await
                        },
                    )
                    .await
                    .map_err(|e| RetrieveError::Nearline {
                        sop_uid: location.sop_uid.clone(),
                        message: e.to_string(),
                    })?;
            match Self::open_file(location, path, Some(pin)).await {
                Err(RetrieveError::Read { source, .. })
                    if source.kind() == std::io::ErrorKind::NotFound => {}
                other => return other,
            }
        }
        Err(RetrieveError::Nearline {
            sop_uid: location.sop_uid.clone(),
            message: format!("{} is missing from its unpacked pack", member.member_path),
        })
    }

    /// The instance's pack, unpacked in the retrieve cache and kept there while the pin
    /// lives (restore copies members out of it).
    pub async fn pin_pack(
        &self,
        location: &InstanceLocation,
        member: &NearlineMember,
    ) -> Result<CachePin, RetrieveError> {
        let access = self.access(location)?.clone();
        let fetcher = access.clone();
        let wanted = member.clone();
        let pin = access
            .cache
            .get(
                member.pack_id,
                member.pack_size.max(0) as u64,
                move |dir, ready| async move { fetch_pack(&fetcher, &wanted, &dir, ready).await },
            )
            .await
            .map_err(|e| RetrieveError::Nearline {
                sop_uid: location.sop_uid.clone(),
                message: e.to_string(),
            })?;
        Ok(pin)
    }

    async fn open_range(
        &self,
        location: &InstanceLocation,
        member: &NearlineMember,
    ) -> Result<OpenedInstance, RetrieveError> {
        let access = self.access(location)?;
        let failed = |message: String| RetrieveError::Nearline {
            sop_uid: location.sop_uid.clone(),
            message,
        };
        let row = access
            .index
            .target(&member.target_name)
            .await
            .map_err(|e| failed(e.to_string()))?
            .ok_or_else(|| failed(format!("target `{}` no longer exists", member.target_name)))?;
        let target = access
            .targets
            .get(&row)
            .await
            .map_err(|e| failed(e.message))?;
        let bytes = target
            .read_range(
                &member.object_key,
                member.data_offset.max(0) as u64,
                location.size_bytes.max(0) as u64,
            )
            .await
            .map_err(|e| failed(e.message))?;
        let sha = hex::encode(Sha256::digest(&bytes));
        if sha != location.sha256 {
            return Err(failed(format!(
                "the bytes read from {} have SHA-256 {sha}, the index records {}",
                member.object_key, location.sha256
            )));
        }
        let offset = part10_data_set_offset(&bytes)
            .filter(|offset| *offset <= bytes.len())
            .ok_or_else(|| RetrieveError::NotPart10 {
                sop_uid: location.sop_uid.clone(),
            })?;
        Ok(OpenedInstance {
            location: location.clone(),
            body: Body::Memory(bytes[offset..].to_vec()),
        })
    }
}

/// Says (and counts) that a copy could not be read and the next target's is tried.
fn fall_back(
    location: &InstanceLocation,
    failed: &NearlineMember,
    next: &NearlineMember,
    error: &str,
) {
    crate::metrics::NEARLINE_FALLBACKS.add(1);
    tracing::warn!(
        sop_instance_uid = %location.sop_uid,
        failed_target = %failed.target_name,
        next_target = %next.target_name,
        %error,
        "cannot read the NEARLINE copy; trying the next target's"
    );
}

/// Fetches and unpacks a pack into `dir` (the cache calls this once per pack).
async fn fetch_pack(
    access: &NearlineAccess,
    member: &NearlineMember,
    dir: &std::path::Path,
    ready: MemberReady,
) -> Result<(), PackFetchError> {
    let row = access
        .index
        .target(&member.target_name)
        .await?
        .ok_or_else(|| PackFetchError::TargetGone(member.target_name.clone()))?;
    let target = access.targets.get(&row).await?;
    let members = access.index.pack_members(member.pack_id).await?;
    let expected = ExpectedPack {
        key: member.object_key.clone(),
        size: member.pack_size.max(0) as u64,
        sha256: member.pack_sha256.clone(),
        members,
    };
    let started = std::time::Instant::now();
    target
        .unpack_pack(&expected, dir, Arc::new(TransferProgress::default()), ready)
        .await?;
    tracing::info!(
        pack_id = member.pack_id,
        key = %member.object_key,
        target = %member.target_name,
        bytes = expected.size,
        ms = started.elapsed().as_millis() as u64,
        "fetched a pack into the retrieve cache"
    );
    Ok(())
}

enum Body {
    Memory(Vec<u8>),
    File { file: std::fs::File, remaining: u64 },
}

fn open_blocking(path: PathBuf, sop_uid: &str) -> Result<Body, RetrieveError> {
    let read_error = |source| RetrieveError::Read {
        sop_uid: sop_uid.to_string(),
        source,
    };
    let mut file = std::fs::File::open(&path).map_err(read_error)?;
    let length = file.metadata().map_err(read_error)?.len();
    let mut head = vec![0u8; 4096.min(length as usize)];
    file.read_exact(&mut head).map_err(read_error)?;
    let offset = part10_data_set_offset(&head).ok_or_else(|| RetrieveError::NotPart10 {
        sop_uid: sop_uid.to_string(),
    })?;
    if offset as u64 > length {
        return Err(RetrieveError::NotPart10 {
            sop_uid: sop_uid.to_string(),
        });
    }
    let remaining = length - offset as u64;
    file.seek(SeekFrom::Start(offset as u64))
        .map_err(read_error)?;
    if remaining <= READ_WHOLE_LIMIT {
        let mut data = Vec::with_capacity(remaining as usize);
        file.read_to_end(&mut data).map_err(read_error)?;
        Ok(Body::Memory(data))
    } else {
        Ok(Body::File { file, remaining })
    }
}

/// A stored object being read: its data set exactly as received, in its stored transfer syntax.
pub struct OpenedInstance {
    pub location: InstanceLocation,
    body: Body,
}

impl OpenedInstance {
    pub fn data_set_len(&self) -> u64 {
        match &self.body {
            Body::Memory(data) => data.len() as u64,
            Body::File { remaining, .. } => *remaining,
        }
    }

    /// The next piece of the data set (at most 1 MiB), or `None` at the end.
    pub async fn next_chunk(&mut self) -> Result<Option<Vec<u8>>, RetrieveError> {
        match &mut self.body {
            Body::Memory(data) => Ok((!data.is_empty()).then(|| std::mem::take(data))),
            Body::File { remaining, .. } if *remaining == 0 => Ok(None),
            Body::File { file, remaining } => {
                let want = (*remaining).min(CHUNK as u64) as usize;
                let mut reader = file.try_clone().map_err(|e| self.read_error(e))?;
                let chunk = tokio::task::spawn_blocking(move || {
                    let mut buffer = vec![0u8; want];
                    reader.read_exact(&mut buffer).map(|_| buffer)
                })
                .await
                .map_err(|e| std::io::Error::other(e.to_string()))
                .and_then(|r| r)
                .map_err(|e| self.read_error(e))?;
                if let Body::File { remaining, .. } = &mut self.body {
                    *remaining -= chunk.len() as u64;
                }
                Ok(Some(chunk))
            }
        }
    }

    /// The whole data set in memory (for conversion to another transfer syntax).
    pub async fn read_all(mut self) -> Result<Vec<u8>, RetrieveError> {
        let mut all = Vec::with_capacity(self.data_set_len() as usize);
        while let Some(chunk) = self.next_chunk().await? {
            all.extend_from_slice(&chunk);
        }
        Ok(all)
    }

    fn read_error(&self, source: std::io::Error) -> RetrieveError {
        RetrieveError::Read {
            sop_uid: self.location.sop_uid.clone(),
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::part10_data_set_offset;

    #[test]
    fn offset_requires_a_part10_header() {
        let mut head = vec![0u8; 200];
        head[128..132].copy_from_slice(b"DICM");
        head[132..136].copy_from_slice(&[2, 0, 0, 0]);
        head[136..140].copy_from_slice(b"UL\x04\x00");
        head[140..144].copy_from_slice(&20u32.to_le_bytes());
        assert_eq!(part10_data_set_offset(&head), Some(164));
        head[128] = b'X';
        assert_eq!(part10_data_set_offset(&head), None);
        assert_eq!(part10_data_set_offset(&[0u8; 10]), None);
    }
}
