//! `multipart/related` (RFC 2387) as PS3.18 uses it: writing retrieval answers part by part
//! into a streamed body, and the boundary of STOW-RS requests.

use axum::body::Body;
use bytes::Bytes;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::sync::mpsc;

static NEXT: AtomicU64 = AtomicU64::new(0);

/// A boundary no DICOM object is likely to contain; unique per answer.
pub fn new_boundary() -> String {
    let count = NEXT.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!("strata-{nanos:x}-{count:x}")
}

/// The answer's `Content-Type`.
pub fn content_type(part_type: &str, boundary: &str) -> String {
    format!("multipart/related; type=\"{part_type}\"; boundary={boundary}")
}

/// Writes parts into a body that streams while they are made; memory stays bounded by the
/// channel (a few chunks), whatever the answer's size.
pub struct PartWriter {
    sender: mpsc::Sender<Result<Bytes, std::io::Error>>,
    boundary: String,
    parts: usize,
}

/// Chunks in flight between the producer and the connection.
const IN_FLIGHT: usize = 4;

impl PartWriter {
    pub fn new(boundary: String) -> (PartWriter, Body) {
        let (sender, receiver) = mpsc::channel(IN_FLIGHT);
        let stream = futures_util::stream::unfold(receiver, |mut receiver| async move {
            receiver.recv().await.map(|item| (item, receiver))
        });
        (
            PartWriter {
                sender,
                boundary,
                parts: 0,
            },
            Body::from_stream(stream),
        )
    }

    /// Starts a part; `false` when the client has gone.
    pub async fn begin_part(&mut self, content_type: &str) -> bool {
        self.begin_part_with(content_type, &[]).await
    }

    /// Starts a part with its first bytes, sent together with the part header (one chunk
    /// instead of two on the way to the socket).
    pub async fn begin_part_with(&mut self, content_type: &str, first: &[u8]) -> bool {
        let lead = if self.parts == 0 { "" } else { "\r\n" };
        self.parts += 1;
        let header = format!(
            "{lead}--{}\r\nContent-Type: {content_type}\r\n\r\n",
            self.boundary
        );
        let mut chunk = Vec::with_capacity(header.len() + first.len());
        chunk.extend_from_slice(header.as_bytes());
        chunk.extend_from_slice(first);
        self.send(Bytes::from(chunk)).await
    }

    /// Part content; `false` when the client has gone.
    pub async fn send(&mut self, bytes: Bytes) -> bool {
        self.sender.send(Ok(bytes)).await.is_ok()
    }

    /// Ends the answer properly.
    pub async fn finish(mut self) {
        let end = format!("\r\n--{}--\r\n", self.boundary);
        self.send(Bytes::from(end)).await;
    }

    /// Ends the answer broken off: the client sees a truncated body, never a complete-looking
    /// one that lacks objects.
    pub async fn fail(self, error: String) {
        let _ = self.sender.send(Err(std::io::Error::other(error))).await;
    }
}
