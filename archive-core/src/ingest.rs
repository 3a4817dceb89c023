//! Group commit for the index: every association hands its received instance to one writer
//! task, which indexes whatever has queued up in a single transaction. With N associations
//! storing at once this is one commit (one fsync) per batch instead of one per instance, and
//! SQLite never sees two writers.

use crate::index::{Index, IndexError, NewInstance};
use crate::model::StoreOutcome;
use tokio::sync::{mpsc, oneshot};

/// Most instances indexed in one transaction.
const MAX_BATCH: usize = 128;

type Reply = oneshot::Sender<Result<StoreOutcome, IndexError>>;

#[derive(Clone)]
pub struct IngestQueue {
    sender: mpsc::Sender<(NewInstance, Reply)>,
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
        tokio::spawn(write_batches(index, receiver));
        IngestQueue { sender }
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

async fn write_batches(index: Index, mut receiver: mpsc::Receiver<(NewInstance, Reply)>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while receiver.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let (instances, replies): (Vec<NewInstance>, Vec<Reply>) = batch.drain(..).unzip();
        let results = index.store_batch(&instances).await;
        for (reply, result) in replies.into_iter().zip(results) {
            // A closed reply means the association went away; the row is committed anyway.
            let _ = reply.send(result);
        }
    }
}
