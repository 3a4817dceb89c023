//! The retrieve cache: packs fetched from NEARLINE are unpacked into `<dir>/<pack id>/` and
//! served from there.
//!
//! - **Single flight**: however many requests want a pack at once, one fetch runs; the others
//!   wait for it. The fetch runs in its own task, so a requester that goes away (an aborted
//!   association) does not strand the others.
//! - **Streaming**: a member can be read as soon as it is unpacked and its SHA-256 checked,
//!   while the rest of the pack is still arriving, so a C-MOVE sends while it fetches.
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
/// How often a reader waiting for one member of a pack being fetched looks for it.
const MEMBER_POLL: Duration = Duration::from_millis(2);

#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum CacheError {
    #[error("pack of {size} bytes does not fit in the retrieve cache ({cap} bytes, nearline.cache_size)")]
    TooLarge { size: u64, cap: u64 },
    #[error("the retrieve cache stayed full (every pack in it being read) for {0:?}")]
    NoRoom(Duration),
    #[error("fetching the pack failed: {0}")]
    Fetch(String),
}

/// Turns to `Some(result)` when a fetch ends.
type Done = watch::Receiver<Option<Result<(), String>>>;

struct Slot {
    /// `Some` while the pack is being fetched; `None` once it is unpacked and in place.
    fetching: Option<Done>,
    size: u64,
    last_used: Instant,
    /// Pins: readers of its files, early readers of a pack still arriving included. A pinned
    /// pack is never evicted.
    readers: usize,
}

struct State {
    slots: HashMap<i64, Slot>,
    /// Bytes of unpacked packs plus bytes reserved for fetches.
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
        if let Some(slot) = state.slots.get_mut(&self.pack_id) {
            slot.readers = slot.readers.saturating_sub(1);
            slot.last_used = Instant::now();
        }
    }
}

fn partial_dir_of(dir: &Path) -> PathBuf {
    dir.with_extension("partial")
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

    /// The whole pack unpacked in the cache, fetched by `fetch(dir)` if it is not there yet.
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
        self.acquire(pack_id, size, None, fetch)
            .await
            .map(|(pin, _)| pin)
    }

    /// One member of the pack, as soon as it is unpacked and checked, while the rest may still
    /// be arriving. The path is valid while the pin lives; if opening it fails with NotFound,
    /// the pack was just moved into place: ask again.
    pub async fn get_member<F, Fut>(
        self: &Arc<Self>,
        pack_id: i64,
        size: u64,
        member_path: &str,
        fetch: F,
    ) -> Result<(CachePin, PathBuf), CacheError>
    where
        F: FnOnce(PathBuf) -> Fut + Send + 'static,
        Fut: Future<Output = Result<(), String>> + Send + 'static,
    {
        self.acquire(pack_id, size, Some(member_path), fetch).await
    }

    async fn acquire<F, Fut>(
        self: &Arc<Self>,
        pack_id: i64,
        size: u64,
        member: Option<&str>,
        fetch: F,
    ) -> Result<(CachePin, PathBuf), CacheError>
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
        // The fetch this request started, if any: once it has ended, its outcome is final for
        // this request (its closure is spent; a retry is a new request).
        let mut own: Option<Done> = None;
        let final_dir = self.pack_dir(pack_id);
        let partial_dir = partial_dir_of(&final_dir);
        loop {
            let waiting = {
                let mut state = self.lock();
                if let Some(slot) = state.slots.get_mut(&pack_id) {
                    match &slot.fetching {
                        None => {
                            slot.readers += 1;
                            slot.last_used = Instant::now();
                            metrics::CACHE_HITS.add(1);
                            let path =
                                member.map_or_else(|| final_dir.clone(), |m| final_dir.join(m));
                            return Ok((self.pin(pack_id), path));
                        }
                        Some(done) => {
                            if let Some(early) =
                                member.map(|m| partial_dir.join(m)).filter(|p| p.exists())
                            {
                                slot.readers += 1;
                                return Ok((self.pin(pack_id), early));
                            }
                            Some(done.clone())
                        }
                    }
                } else if let Some(mine) = &own {
                    // Our fetch ended and its slot is gone: it failed (or, under pressure, the
                    // pack was evicted before we could pin it).
                    let message = match mine.borrow().clone() {
                        Some(Err(message)) => message,
                        _ => "the pack left the cache before it could be read; try again".into(),
                    };
                    return Err(CacheError::Fetch(message));
                } else {
                    let evicted = make_room(&mut state, self.cap, size);
                    let fits = state.used + size <= self.cap;
                    let started = if fits {
                        let (sender, receiver) = watch::channel(None);
                        state.slots.insert(
                            pack_id,
                            Slot {
                                fetching: Some(receiver.clone()),
                                size,
                                last_used: Instant::now(),
                                readers: 0,
                            },
                        );
                        state.used += size;
                        Some((sender, receiver))
                    } else {
                        None
                    };
                    drop(state);
                    self.remove_dirs(evicted);
                    match (started, fetch.take()) {
                        (Some((sender, receiver)), Some(fetch)) => {
                            self.start_fetch(pack_id, fetch, sender);
                            own = Some(receiver.clone());
                            Some(receiver)
                        }
                        (Some(_), None) => {
                            return Err(CacheError::Fetch("fetch already started".into()))
                        }
                        (None, unused) => {
                            fetch = unused;
                            None
                        }
                    }
                }
            };
            match waiting {
                Some(mut done) => {
                    // `Err`: the fetch task is gone without a word (the runtime is shutting down).
                    let ended = async {
                        match done.wait_for(|value| value.is_some()).await {
                            Ok(value) => value.clone(),
                            Err(_) => Some(Err("the fetch was interrupted".to_string())),
                        }
                    };
                    // A reader of one member looks again shortly: it may be unpacked by then.
                    let outcome = match member {
                        Some(_) => tokio::time::timeout(MEMBER_POLL, ended)
                            .await
                            .ok()
                            .flatten(),
                        None => ended.await,
                    };
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
        fetch: F,
        done: watch::Sender<Option<Result<(), String>>>,
    ) where
        F: FnOnce(PathBuf) -> Fut + Send + 'static,
        Fut: Future<Output = Result<(), String>> + Send + 'static,
    {
        let cache = self.clone();
        let dir = self.pack_dir(pack_id);
        tokio::spawn(async move {
            let partial = partial_dir_of(&dir);
            let _ = tokio::fs::remove_dir_all(&partial).await;
            // In a task of its own: a panic in a target's code becomes an error for the
            // waiters instead of a slot that never finishes.
            let mut result = match tokio::spawn(fetch(partial.clone())).await {
                Ok(result) => result,
                Err(failed) => Err(format!("the fetch failed: {failed}")),
            };
            if result.is_ok() {
                if let Err(error) = tokio::fs::rename(&partial, &dir).await {
                    result = Err(format!("cannot move the unpacked pack into place: {error}"));
                }
            }
            {
                let mut state = cache.lock();
                match &result {
                    Ok(()) => {
                        if let Some(slot) = state.slots.get_mut(&pack_id) {
                            slot.fetching = None;
                            slot.last_used = Instant::now();
                            metrics::CACHE_BYTES.add(slot.size);
                        }
                    }
                    Err(_) => {
                        if let Some(slot) = state.slots.remove(&pack_id) {
                            state.used = state.used.saturating_sub(slot.size);
                        }
                    }
                }
                // Under the lock: whoever sees the slot gone or done also sees the outcome.
                let _ = done.send(Some(result.clone()));
            }
            if result.is_err() {
                let _ = tokio::fs::remove_dir_all(&partial).await;
            }
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

/// Evicts least recently used unpacked packs nobody reads until `size` more bytes fit (or
/// nothing more can go); returns the evicted pack ids, whose directories the caller removes.
fn make_room(state: &mut State, cap: u64, size: u64) -> Vec<i64> {
    let mut evicted = Vec::new();
    while state.used + size > cap {
        let victim = state
            .slots
            .iter()
            .filter(|(_, slot)| slot.fetching.is_none() && slot.readers == 0)
            .map(|(id, slot)| (slot.last_used, *id, slot.size))
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
    async fn a_failed_fetch_fails_its_waiters_and_can_be_retried() {
        let root = tempfile::tempdir().expect("tempdir");
        let cache = RetrieveCache::open(root.path().join("cache"), 1000).expect("cache");
        // Fails after several member polls: the waiter must see the error, not spin on.
        let failed = tokio::time::timeout(
            Duration::from_secs(5),
            cache.get_member(9, 100, "m.dcm", |_| async {
                tokio::time::sleep(Duration::from_millis(100)).await;
                Err("target down".to_string())
            }),
        )
        .await
        .expect("no hang");
        assert!(
            matches!(failed, Err(CacheError::Fetch(ref m)) if m == "target down"),
            "{:?}",
            failed.map(|_| ())
        );
        assert_eq!(cache.used(), 0, "nothing stays reserved");
        let again = tokio::time::timeout(
            Duration::from_secs(5),
            cache.get_member(9, 100, "m.dcm", |dir| write_pack(dir, 10)),
        )
        .await
        .expect("no hang");
        assert!(again.is_ok());
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_member_is_served_while_the_rest_of_its_pack_arrives() {
        let root = tempfile::tempdir().expect("tempdir");
        let cache = RetrieveCache::open(root.path().join("cache"), 1000).expect("cache");
        let started = Instant::now();
        let (pin, path) = cache
            .get_member(7, 100, "s/first.dcm", |dir| async move {
                std::fs::create_dir_all(dir.join("s")).map_err(|e| e.to_string())?;
                std::fs::write(dir.join("s/first.dcm"), b"first").map_err(|e| e.to_string())?;
                tokio::time::sleep(Duration::from_millis(500)).await;
                std::fs::write(dir.join("s/second.dcm"), b"second").map_err(|e| e.to_string())
            })
            .await
            .expect("member");
        assert!(
            started.elapsed() < Duration::from_millis(400),
            "did not wait for the whole pack"
        );
        assert_eq!(std::fs::read(&path).expect("read"), b"first");
        // A whole-pack request waits for the end, then finds the pack in place.
        let whole = cache
            .get(7, 100, |_| async {
                Err("must not fetch twice".to_string())
            })
            .await
            .expect("pack");
        assert_eq!(
            std::fs::read(whole.dir().join("s/second.dcm")).expect("read"),
            b"second"
        );
        drop(pin);
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
