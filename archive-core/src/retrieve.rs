//! The one way retrievals (C-MOVE, C-GET, later WADO) read stored objects: [`Retriever::open`]
//! turns an index location into the object's data set bytes, without the caller ever seeing a
//! file path. Today it reads the ONLINE copy; the NEARLINE work extends it to fetch packs.

use crate::index::InstanceLocation;
use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;

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

#[derive(Clone, Default)]
pub struct Retriever;

impl Retriever {
    pub fn new() -> Retriever {
        Retriever
    }

    /// Opens an instance for sending.
    pub async fn open(&self, location: &InstanceLocation) -> Result<OpenedInstance, RetrieveError> {
        let path = location.full_path();
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
        Ok(OpenedInstance {
            location: location.clone(),
            body,
        })
    }
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
