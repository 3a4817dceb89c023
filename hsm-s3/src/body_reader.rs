//! Feeds an S3 response body to the blocking tar reader. The network side runs ahead in its
//! own task and hands over whole chunks through a bounded channel, so downloading, hashing and
//! unpacking overlap instead of taking turns (as they do through `SyncIoBridge`, which blocks
//! on the runtime for every read).

use aws_sdk_s3::primitives::ByteStream;
use std::io::{self, Read};
use tokio::sync::mpsc;

/// Chunks buffered between the download and the reader (hyper's are 8–16 KiB): a few MiB.
const CHUNKS_AHEAD: usize = 256;

pub(crate) struct BodyReader {
    chunks: mpsc::Receiver<io::Result<bytes::Bytes>>,
    current: bytes::Bytes,
}

impl BodyReader {
    /// Starts downloading `body` on the runtime; must be called from within it.
    pub(crate) fn start(mut body: ByteStream) -> BodyReader {
        let (sender, chunks) = mpsc::channel(CHUNKS_AHEAD);
        tokio::spawn(async move {
            loop {
                let next = match body.try_next().await {
                    Ok(Some(chunk)) => Ok(chunk),
                    Ok(None) => break,
                    Err(error) => Err(io::Error::other(error.to_string())),
                };
                let failed = next.is_err();
                if sender.send(next).await.is_err() || failed {
                    break;
                }
            }
        });
        BodyReader {
            chunks,
            current: bytes::Bytes::new(),
        }
    }
}

impl Read for BodyReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.current.is_empty() {
            match self.chunks.blocking_recv() {
                Some(Ok(chunk)) => self.current = chunk,
                Some(Err(error)) => return Err(error),
                None => return Ok(0), // the download ended
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current.split_to(n));
        Ok(n)
    }
}
