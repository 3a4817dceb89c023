//! The retrieve cache: packs fetched from NEARLINE are unpacked into `<dir>/<pack id>/` and
//! served from there.
//!
//! - **Single flight**: however many requests want a pack at once, one fetch runs; the others
//!   wait for it. The fetch runs in its own task, so a requester that goes away (an aborted
//!   association) does not strand the others.
//! - **Bounded**: the unpacked bytes stay under the cap. Before a fetch, least recently used
//!   packs nobody is reading are evicted; a pack being read (pinned) is never evicted, so a
//!   fetch that finds no room waits for readers to finish.

use crate::metrics;
use std::collections::HashMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// How long a fetch waits for room before giving up (every pack in the cache being read).
const ROOM_TIMEOUT: Duration = Duration::from_secs(300);

#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum CacheError {
    #[error("pack of {size} bytes does not fit in the retrieve cache ({cap} bytes, nearline.cache_size)")]
    TooLarge { size: u64, cap: u64 },
    #[error("the retrieve cache stayed full (every pack in it being read) for {0:?}")]
    NoRoom(Duration),
    #[error("fetching the pack failed: {0}")]
    Fetch(String),
}

enum Slot {
    Ready {
        size: u64,
        last_used: Instant,
        readers: usize,
    },
    /// Being fetched; the sender's value turns to `Some(result)` when done.
    Fetching(watch::Receiver<Option<Result<(), String>>>),
}

struct State {
    slots: HashMap<i64, Slot>,
    /// Bytes of Ready packs plus bytes reserved for fetches.
    used: u64,
}

pub struct RetrieveCache {
    dir: PathBuf,
    cap: u64,
    state: Mutex<State>,
}

/// A pack held in the cache while its files are read; dropping it lets the pack be evicted.
pub struct CachePin {
    cache: Arc<RetrieveCache>,
    pack_id: i64,
    dir: PathBuf,
}

impl CachePin {
    /// The directory the pack's members were unpacked into (by member path).
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for CachePin {
    fn drop(&mut self) {
        let mut state = self.cache.lock();
        if let Some(Slot::Ready {
            readers, last_used, ..
        }) = state.slots.get_mut(&self.pack_id)
        {
            *readers = readers.saturating_sub(1);
            *last_used = Instant::now();
        }
    }
}

impl RetrieveCache {
    /// A cache in `dir` (emptied: its content from an earlier run is not trusted).
    pub fn open(dir: PathBuf, cap: u64) -> std::io::Result<Arc<RetrieveCache>> {
        if dir.exists() {
            std::fs::remove_dir_all(&dir)?;
        }
        std::fs::create_dir_all(&dir)?;
        metrics::CACHE_BYTES.sub(metrics::CACHE_BYTES.get());
        Ok(Arc::new(RetrieveCache {
            dir,
            cap,
            state: Mutex::new(State {
                slots: HashMap::new(),
                used: 0,
            }),
        }))
    }

    pub fn cap(&self) -> u64 {
        self.cap
    }

    pub fn used(&self) -> u64 {
        self.lock().used
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain data behind; keep serving.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn pack_dir(&self, pack_id: i64) -> PathBuf {
        self.dir.join(pack_id.to_string())
    }

    /// The pack unpacked in the cache, fetched by `fetch(dir)` if it is not there yet.
    pub async fn get<F, Fut>(
        self: &Arc<Self>,
        pack_id: i64,
        size: u64,
        fetch: F,
    ) -> Result<CachePin, CacheError>
    where
        F: FnOnce(PathBuf) -> Fut + Send + 'static,
        Fut: Future<Output = Result<(), String>> + Send + 'static,
    {
        if size > self.cap {
            return Err(CacheError::TooLarge {
                size,
                cap: self.cap,
            });
        }
        let deadline = Instant::now() + ROOM_TIMEOUT;
        let mut fetch = Some(fetch);
        loop {
            let waiting = {
                let mut state = self.lock();
                match state.slots.get_mut(&pack_id) {
                    Some(Slot::Ready {
                        readers, last_used, ..
                    }) => {
                        *readers += 1;
                        *last_used = Instant::now();
                        metrics::CACHE_HITS.add(1);
                        return Ok(self.pin(pack_id));
                    }
                    Some(Slot::Fetching(done)) => Some(done.clone()),
                    None => {
                        let evicted = make_room(&mut state, self.cap, size);
                        if state.used + size <= self.cap {
                            let (sender, receiver) = watch::channel(None);
                            state
                                .slots
                                .insert(pack_id, Slot::Fetching(receiver.clone()));
                            state.used += size;
                            drop(state);
                            self.remove_dirs(evicted);
                            let Some(fetch) = fetch.take() else {
                                return Err(CacheError::Fetch("fetch already started".into()));
                            };
                            self.start_fetch(pack_id, size, fetch, sender);
                            Some(receiver)
                        } else {
                            drop(state);
                            self.remove_dirs(evicted);
                            None
                        }
                    }
                }
            };
            match waiting {
                Some(mut done) => {
                    // Wait for the fetch (ours or another request's), then look again.
                    let outcome = done
                        .wait_for(|value| value.is_some())
                        .await
                        .map(|value| value.clone())
                        .ok()
                        .flatten();
                    if let Some(Err(message)) = outcome {
                        return Err(CacheError::Fetch(message));
                    }
                }
                None => {
                    if Instant::now() > deadline {
                        return Err(CacheError::NoRoom(ROOM_TIMEOUT));
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }

    fn pin(self: &Arc<Self>, pack_id: i64) -> CachePin {
        CachePin {
            cache: self.clone(),
            pack_id,
            dir: self.pack_dir(pack_id),
        }
    }

    fn start_fetch<F, Fut>(
        self: &Arc<Self>,
        pack_id: i64,
        size: u64,
        fetch: F,
        done: watch::Sender<Option<Result<(), String>>>,
    ) where
        F: FnOnce(PathBuf) -> Fut + Send + 'static,
        Fut: Future<Output = Result<(), String>> + Send + 'static,
    {
        let cache = self.clone();
        let dir = self.pack_dir(pack_id);
        tokio::spawn(async move {
            let partial = dir.with_extension("partial");
            let _ = tokio::fs::remove_dir_all(&partial).await;
            let mut result = fetch(partial.clone()).await;
            if result.is_ok() {
                if let Err(error) = tokio::fs::rename(&partial, &dir).await {
                    result = Err(format!("cannot move the unpacked pack into place: {error}"));
                }
            }
            {
                let mut state = cache.lock();
                match &result {
                    Ok(()) => {
                        state.slots.insert(
                            pack_id,
                            Slot::Ready {
                                size,
                                last_used: Instant::now(),
                                readers: 0,
                            },
                        );
                        metrics::CACHE_BYTES.add(size);
                    }
                    Err(_) => {
                        state.slots.remove(&pack_id);
                        state.used = state.used.saturating_sub(size);
                    }
                }
            }
            if result.is_err() {
                let _ = tokio::fs::remove_dir_all(&partial).await;
            }
            let _ = done.send(Some(result));
        });
    }

    fn remove_dirs(&self, packs: Vec<i64>) {
        for pack_id in packs {
            if let Err(error) = std::fs::remove_dir_all(self.pack_dir(pack_id)) {
                tracing::warn!(pack_id, %error, "cannot remove an evicted pack from the retrieve cache");
            }
        }
    }
}

/// Evicts least recently used packs nobody reads until `size` more bytes fit (or nothing more
/// can go); returns the evicted pack ids, whose directories the caller removes.
fn make_room(state: &mut State, cap: u64, size: u64) -> Vec<i64> {
    let mut evicted = Vec::new();
    while state.used + size > cap {
        let victim = state
            .slots
            .iter()
            .filter_map(|(id, slot)| match slot {
                Slot::Ready {
                    readers: 0,
                    last_used,
                    size,
                } => Some((*last_used, *id, *size)),
                _ => None,
            })
            .min();
        let Some((_, id, victim_size)) = victim else {
            break;
        };
        state.slots.remove(&id);
        state.used = state.used.saturating_sub(victim_size);
        metrics::CACHE_BYTES.sub(victim_size);
        metrics::CACHE_EVICTIONS.add(1);
        evicted.push(id);
    }
    evicted
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    async fn write_pack(dir: PathBuf, bytes: usize) -> Result<(), String> {
        tokio::time::sleep(Duration::from_millis(50)).await;
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        std::fs::write(dir.join("m.dcm"), vec![7u8; bytes]).map_err(|e| e.to_string())
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn one_fetch_for_many_requests_and_lru_eviction_under_the_cap() {
        let root = tempfile::tempdir().expect("tempdir");
        let cache = RetrieveCache::open(root.path().join("cache"), 250).expect("cache");
        let fetches = Arc::new(AtomicUsize::new(0));
        let mut waiters = Vec::new();
        for _ in 0..10 {
            let cache = cache.clone();
            let fetches = fetches.clone();
            waiters.push(tokio::spawn(async move {
                cache
                    .get(1, 100, move |dir| {
                        fetches.fetch_add(1, Ordering::SeqCst);
                        write_pack(dir, 100)
                    })
                    .await
                    .map(|pin| pin.dir().join("m.dcm").exists())
            }));
        }
        for waiter in waiters {
            assert_eq!(waiter.await.expect("join"), Ok(true));
        }
        assert_eq!(fetches.load(Ordering::SeqCst), 1, "single flight");

        // Pack 2 fits beside 1; pack 3 needs room: the least recently used unpinned one goes.
        let two = cache
            .get(2, 100, |dir| write_pack(dir, 100))
            .await
            .expect("two");
        let three = cache
            .get(3, 100, |dir| write_pack(dir, 100))
            .await
            .expect("three");
        assert!(cache.used() <= cache.cap());
        assert!(!root.path().join("cache/1").exists(), "pack 1 evicted");
        assert!(
            two.dir().exists() && three.dir().exists(),
            "pinned packs stay"
        );

        // Everything pinned: a fetch waits for room instead of going over the cap.
        let cache2 = cache.clone();
        let blocked = tokio::spawn(async move {
            cache2
                .get(4, 100, |dir| write_pack(dir, 100))
                .await
                .map(|_| ())
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(
            !blocked.is_finished(),
            "waits while every pack is being read"
        );
        drop(two);
        assert_eq!(
            blocked.await.expect("join").map_err(|e| e.to_string()),
            Ok(())
        );
        assert!(cache.used() <= cache.cap());

        // A failed fetch reports its error to every waiter and can be retried.
        let failed = cache
            .get(5, 10, |_| async { Err("S3 down".to_string()) })
            .await;
        assert!(matches!(failed, Err(CacheError::Fetch(m)) if m == "S3 down"));
        assert!(cache.get(5, 10, |dir| write_pack(dir, 10)).await.is_ok());
        assert!(matches!(
            cache.get(6, 1000, |dir| write_pack(dir, 1)).await,
            Err(CacheError::TooLarge { .. })
        ));
        drop(three);
    }
}
