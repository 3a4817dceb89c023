//! Bridges the blocking tar writer to the async multipart upload: full parts go through a
//! small bounded channel, so at most a few parts are in memory however large the pack.

use std::io::{self, Write};
use tokio::sync::mpsc::Sender;

pub(crate) struct ChunkSink {
    buffer: Vec<u8>,
    part_size: usize,
    parts: Sender<Vec<u8>>,
}

impl ChunkSink {
    pub(crate) fn new(parts: Sender<Vec<u8>>, part_size: usize) -> ChunkSink {
        ChunkSink {
            buffer: Vec::with_capacity(part_size),
            part_size,
            parts,
        }
    }

    fn send(&mut self, part: Vec<u8>) -> io::Result<()> {
        self.parts
            .blocking_send(part)
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the upload stopped"))
    }

    /// Sends what is left (the last, possibly short, part).
    pub(crate) fn finish(mut self) -> io::Result<()> {
        if !self.buffer.is_empty() {
            let last = std::mem::take(&mut self.buffer);
            self.send(last)?;
        }
        Ok(())
    }
}

impl Write for ChunkSink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let room = self.part_size - self.buffer.len();
        let n = buf.len().min(room);
        self.buffer.extend_from_slice(&buf[..n]);
        if self.buffer.len() == self.part_size {
            let full = std::mem::replace(&mut self.buffer, Vec::with_capacity(self.part_size));
            self.send(full)?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
