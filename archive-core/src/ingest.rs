//! Group commit for the index: every association hands its received instance to one writer
//! task, which indexes whatever has queued up in a single transaction. With N associations
//! storing at once this is one commit (one fsync) per batch instead of one per instance, and
//! SQLite never sees two writers.

use crate::index::counts::FOLD_EVERY;
use crate::index::{Index, IndexError, NewInstance};
use crate::model::StoreOutcome;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// Most instances indexed in one transaction.
const MAX_BATCH: usize = 128;
/// How long the writer waits for objects already being received (past `begin`, not yet
/// queued) to join the batch: one commit for several associations instead of one each.
/// Only when such objects exist, so a single sender never waits.
const GATHER: Duration = Duration::from_millis(2);

type Reply = oneshot::Sender<Result<StoreOutcome, IndexError>>;

#[derive(Clone)]
pub struct IngestQueue {
    sender: mpsc::Sender<(NewInstance, Reply)>,
    /// Objects being received (spooled) that will be queued when complete.
    arriving: Arc<AtomicUsize>,
}

/// Counts one object as arriving until it is queued (or given up).
pub struct Arriving(Arc<AtomicUsize>);

impl Drop for Arriving {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error(transparent)]
    Index(#[from] IndexError),
    #[error("the index writer has stopped")]
    WriterStopped,
}

impl IngestQueue {
    /// Starts the writer task on the current runtime.
    pub fn start(index: Index) -> IngestQueue {
        let (sender, receiver) = mpsc::channel(MAX_BATCH * 4);
        let arriving = Arc::new(AtomicUsize::new(0));
        tokio::spawn(write_batches(index, receiver, arriving.clone()));
        IngestQueue { sender, arriving }
    }

    /// Marks an object as being received; the writer may wait a moment for it.
    pub fn arriving(&self) -> Arriving {
        self.arriving.fetch_add(1, Ordering::AcqRel);
        Arriving(self.arriving.clone())
    }

    /// Returns once the instance is committed (or refused); the caller may then acknowledge it.
    pub async fn store(&self, new: NewInstance) -> Result<StoreOutcome, IngestError> {
        let (reply, answer) = oneshot::channel();
        self.sender
            .send((new, reply))
            .await
            .map_err(|_| IngestError::WriterStopped)?;
        Ok(answer.await.map_err(|_| IngestError::WriterStopped)??)
    }
}

async fn write_batches(
    index: Index,
    mut receiver: mpsc::Receiver<(NewInstance, Reply)>,
    arriving: Arc<AtomicUsize>,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    loop {
        // Idle for a fold's interval: fold what the last batches indexed into the series and
        // study counters (while batches keep coming, it folds after answering them).
        match tokio::time::timeout(FOLD_EVERY, receiver.recv_many(&mut batch, MAX_BATCH)).await {
            Ok(0) => break,
            Ok(_) => {}
            Err(_) => {
                index.fold_counts_if_due().await;
                continue;
            }
        }
        let deadline = tokio::time::Instant::now() + GATHER;
        while batch.len() < MAX_BATCH && arriving.load(Ordering::Acquire) > 0 {
            let room = MAX_BATCH - batch.len();
            match tokio::time::timeout_at(deadline, receiver.recv_many(&mut batch, room)).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
        let (instances, replies): (Vec<NewInstance>, Vec<Reply>) = batch.drain(..).unzip();
        let results = index.store_batch(&instances).await;
        for (reply, result) in replies.into_iter().zip(results) {
            // A closed reply means the association went away; the row is committed anyway.
            let _ = reply.send(result);
        }
        // After the answers: no sender waits for the fold's commit.
        index.fold_counts_if_due().await;
    }
}
