//! The retrieve cache: packs fetched from NEARLINE are unpacked into `<dir>/<pack id>/` and
//! served from there.
//!
//! - **Single flight**: however many requests want a pack at once, one fetch runs; the others
//!   wait for it. The fetch runs in its own task, so a requester that goes away (an aborted
//!   association) does not strand the others.
//! - **Streaming, without polling**: a running fetch is a [`PackFetch`], which announces each
//!   member as soon as it is unpacked and its checksum matched; a reader of one member wakes
//!   when that member (or the end of the fetch) is announced, so a C-MOVE sends while the rest
//!   of the pack arrives.
//! - **Bounded**: the unpacked bytes stay under the cap. Before a fetch, least recently used
//!   packs nobody is reading are evicted; a pack being read (pinned) is never evicted, so a
//!   fetch that finds no room waits, woken when a reader lets go of a pack.

use crate::metrics;
use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{watch, Notify};

/// How long a fetch waits for room before giving up (every pack in the cache being read).
const ROOM_TIMEOUT: Duration = Duration::from_secs(300);

/// Why a fetch failed, shared by everyone who waited for it.
pub type FetchFailure = Arc<dyn std::error::Error + Send + Sync>;

#[derive(Debug, thiserror::Error, Clone)]
pub enum CacheError {
    #[error("pack of {size} bytes does not fit in the retrieve cache ({cap} bytes, nearline.cache_size)")]
    TooLarge { size: u64, cap: u64 },
    #[error("the retrieve cache stayed full (every pack in it being read) for {0:?}")]
    NoRoom(Duration),
    #[error("fetching the pack failed: {0}")]
    Fetch(FetchFailure),
    #[error("the fetch of the pack was interrupted (the process is shutting down)")]
    Interrupted,
}

/// Tells a running fetch's readers that a member is unpacked and checked (by member path).
pub type MemberReady = Arc<dyn Fn(&str) + Send + Sync>;

/// What a fetch has made available so far.
#[derive(Default)]
struct FetchState {
    ready: HashSet<String>,
    /// `Some` once the fetch ended (and, when `Ok`, the pack is in its final place).
    outcome: Option<Result<(), FetchFailure>>,
}

/// A pack being fetched: readers wait on it for one member or for the end.
pub struct PackFetch {
    state: watch::Sender<FetchState>,
}

/// What a reader of one member learns.
enum MemberWait {
    /// Unpacked in the partial directory (the fetch is still running).
    Early,
    /// The fetch ended well: the pack is in place.
    Finished,
}

impl PackFetch {
    fn new() -> Arc<PackFetch> {
        Arc::new(PackFetch {
            state: watch::Sender::new(FetchState::default()),
        })
    }

    fn announcer(self: &Arc<Self>) -> MemberReady {
        let fetch = self.clone();
        Arc::new(move |member: &str| {
            fetch.state.send_modify(|state| {
                state.ready.insert(member.to_string());
            })
        })
    }

    fn end(&self, outcome: Result<(), FetchFailure>) {
        self.state
            .send_modify(|state| state.outcome = Some(outcome));
    }

    async fn member(&self, member: &str) -> Result<MemberWait, CacheError> {
        let mut receiver = self.state.subscribe();
        let seen = receiver
            .wait_for(|state| state.outcome.is_some() || state.ready.contains(member))
            .await
            .map_err(|_| CacheError::Interrupted)?;
        match &seen.outcome {
            Some(Ok(())) => Ok(MemberWait::Finished),
            Some(Err(failure)) => Err(CacheError::Fetch(failure.clone())),
            None => Ok(MemberWait::Early),
        }
    }

    async fn finished(&self) -> Result<(), CacheError> {
        let mut receiver = self.state.subscribe();
        let seen = receiver
            .wait_for(|state| state.outcome.is_some())
            .await
            .map_err(|_| CacheError::Interrupted)?;
        match &seen.outcome {
            Some(Err(failure)) => Err(CacheError::Fetch(failure.clone())),
            _ => Ok(()),
        }
    }
}

struct Slot {
    /// `Some` while the pack is being fetched; `None` once it is unpacked and in place.
    fetching: Option<Arc<PackFetch>>,
    /// Tells this slot from a later one for the same pack (after a failed fetch), so an old
    /// pin cannot unpin the new slot.
    generation: u64,
    size: u64,
    last_used: Instant,
    /// Pins: readers of its files, readers waiting for a pack still arriving included. A
    /// pinned pack is never evicted.
    readers: usize,
}

struct State {
    slots: HashMap<i64, Slot>,
    /// Bytes of unpacked packs plus bytes reserved for fetches.
    used: u64,
    next_generation: u64,
}

pub struct RetrieveCache {
    dir: PathBuf,
    cap: u64,
    state: Mutex<State>,
    /// Woken when a pin is released or a slot goes: a fetch waiting for room looks again.
    room_freed: Notify,
}

/// A pack held in the cache while its files are read; dropping it lets the pack be evicted.
pub struct CachePin {
    cache: Arc<RetrieveCache>,
    pack_id: i64,
    generation: u64,
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
        {
            let mut state = self.cache.lock();
            if let Some(slot) = state.slots.get_mut(&self.pack_id) {
                if slot.generation == self.generation {
                    slot.readers = slot.readers.saturating_sub(1);
                    slot.last_used = Instant::now();
                }
            }
        }
        self.cache.room_freed.notify_waiters();
    }
}

fn partial_dir_of(dir: &Path) -> PathBuf {
    dir.with_extension("partial")
}

/// What a request does next, decided under the lock.
enum Next {
    /// The pack is unpacked and in place.
    Ready(CachePin),
    Wait(Arc<PackFetch>, CachePin),
    Start(Arc<PackFetch>, CachePin),
    WaitForRoom,
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
                next_generation: 0,
            }),
            room_freed: Notify::new(),
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

    /// The whole pack unpacked in the cache, fetched by `fetch(dir, ready)` if it is not there
    /// yet. `fetch` unpacks into `dir`, calling `ready(member path)` for each checked member.
    pub async fn get<F, Fut, E>(
        self: &Arc<Self>,
        pack_id: i64,
        size: u64,
        fetch: F,
    ) -> Result<CachePin, CacheError>
    where
        F: FnOnce(PathBuf, MemberReady) -> Fut + Send + 'static,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
        E: std::error::Error + Send + Sync + 'static,
    {
        let (fetch_state, pin) = self.join_or_start(pack_id, size, fetch).await?;
        if let Some(fetch_state) = fetch_state {
            fetch_state.finished().await?;
        }
        Ok(pin)
    }

    /// One member of the pack, as soon as it is unpacked and checked, while the rest may still
    /// be arriving. The path is valid while the pin lives; if opening it fails with NotFound,
    /// the pack was just moved into place: ask again.
    pub async fn get_member<F, Fut, E>(
        self: &Arc<Self>,
        pack_id: i64,
        size: u64,
        member_path: &str,
        fetch: F,
    ) -> Result<(CachePin, PathBuf), CacheError>
    where
        F: FnOnce(PathBuf, MemberReady) -> Fut + Send + 'static,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
        E: std::error::Error + Send + Sync + 'static,
    {
        let final_dir = self.pack_dir(pack_id);
        let (fetch_state, pin) = self.join_or_start(pack_id, size, fetch).await?;
        let Some(fetch_state) = fetch_state else {
            return Ok((pin, final_dir.join(member_path)));
        };
        let path = match fetch_state.member(member_path).await? {
            MemberWait::Early => {
                let early = partial_dir_of(&final_dir).join(member_path);
                // The fetch moves `<id>.partial` to `<id>` just before it announces its end:
                // a member announced early may already have moved. Then wait for that end
                // (moments away) and read it in its final place.
                if tokio::fs::try_exists(&early).await.unwrap_or(false) {
                    early
                } else {
                    fetch_state.finished().await?;
                    final_dir.join(member_path)
                }
            }
            MemberWait::Finished => final_dir.join(member_path),
        };
        Ok((pin, path))
    }

    /// Pins the pack's slot, starting its fetch when nobody has; `None` when the pack is
    /// already in place.
    async fn join_or_start<F, Fut, E>(
        self: &Arc<Self>,
        pack_id: i64,
        size: u64,
        fetch: F,
    ) -> Result<(Option<Arc<PackFetch>>, CachePin), CacheError>
    where
        F: FnOnce(PathBuf, MemberReady) -> Fut + Send + 'static,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
        E: std::error::Error + Send + Sync + 'static,
    {
        if size > self.cap {
            return Err(CacheError::TooLarge {
                size,
                cap: self.cap,
            });
        }
        let deadline = tokio::time::Instant::now() + ROOM_TIMEOUT;
        let mut fetch = Some(fetch);
        loop {
            // Registered before looking, so a pin released between the look and the wait
            // still wakes us.
            let room_freed = self.room_freed.notified();
            tokio::pin!(room_freed);
            room_freed.as_mut().enable();
            let (next, evicted) = self.decide(pack_id, size);
            delete_in_background(evicted);
            match next {
                Next::Ready(pin) => return Ok((None, pin)),
                Next::Wait(fetch_state, pin) => return Ok((Some(fetch_state), pin)),
                Next::Start(fetch_state, pin) => {
                    let Some(fetch) = fetch.take() else {
                        return Err(CacheError::Interrupted);
                    };
                    self.start_fetch(pack_id, pin.generation, fetch_state.clone(), fetch);
                    return Ok((Some(fetch_state), pin));
                }
                Next::WaitForRoom => {
                    if tokio::time::timeout_at(deadline, room_freed).await.is_err() {
                        return Err(CacheError::NoRoom(ROOM_TIMEOUT));
                    }
                }
            }
        }
    }

    /// Under the lock: join the slot (pinning it), or reserve room and create one, or wait.
    /// Returns the packs evicted to make room, whose directories the caller removes.
    fn decide(self: &Arc<Self>, pack_id: i64, size: u64) -> (Next, Vec<PathBuf>) {
        let mut state = self.lock();
        if let Some(slot) = state.slots.get_mut(&pack_id) {
            slot.readers += 1;
            slot.last_used = Instant::now();
            let generation = slot.generation;
            let fetching = slot.fetching.clone();
            drop(state);
            let pin = self.pin(pack_id, generation);
            return match fetching {
                Some(fetch_state) => (Next::Wait(fetch_state, pin), Vec::new()),
                None => {
                    metrics::CACHE_HITS.add(1);
                    (Next::Ready(pin), Vec::new())
                }
            };
        }
        // Evicted directories are renamed aside under the lock, so a new fetch of the same pack
        // (which needs the lock to start) can never find the old directory in its place.
        let evicted = self.set_aside(make_room(&mut state, self.cap, size));
        if state.used + size > self.cap {
            return (Next::WaitForRoom, evicted);
        }
        let generation = state.next_generation;
        state.next_generation += 1;
        let fetch_state = PackFetch::new();
        state.slots.insert(
            pack_id,
            Slot {
                fetching: Some(fetch_state.clone()),
                generation,
                size,
                last_used: Instant::now(),
                readers: 1,
            },
        );
        state.used += size;
        drop(state);
        (
            Next::Start(fetch_state, self.pin(pack_id, generation)),
            evicted,
        )
    }

    fn pin(self: &Arc<Self>, pack_id: i64, generation: u64) -> CachePin {
        CachePin {
            cache: self.clone(),
            pack_id,
            generation,
            dir: self.pack_dir(pack_id),
        }
    }

    fn start_fetch<F, Fut, E>(
        self: &Arc<Self>,
        pack_id: i64,
        generation: u64,
        fetch_state: Arc<PackFetch>,
        fetch: F,
    ) where
        F: FnOnce(PathBuf, MemberReady) -> Fut + Send + 'static,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
        E: std::error::Error + Send + Sync + 'static,
    {
        let cache = self.clone();
        let dir = self.pack_dir(pack_id);
        tokio::spawn(async move {
            let partial = partial_dir_of(&dir);
            let _ = tokio::fs::remove_dir_all(&partial).await;
            // In a task of its own: a panic in a target's code becomes an error for the
            // waiters instead of a slot that never finishes.
            let ready = fetch_state.announcer();
            let mut result: Result<(), FetchFailure> =
                match tokio::spawn(fetch(partial.clone(), ready)).await {
                    Ok(Ok(())) => Ok(()),
                    Ok(Err(error)) => Err(Arc::new(error)),
                    Err(panicked) => Err(Arc::new(std::io::Error::other(format!(
                        "the fetch failed: {panicked}"
                    )))),
                };
            if result.is_ok() {
                if let Err(error) = tokio::fs::rename(&partial, &dir).await {
                    result = Err(Arc::new(std::io::Error::new(
                        error.kind(),
                        format!("cannot move the unpacked pack into place: {error}"),
                    )));
                }
            }
            if result.is_err() {
                // Before the slot goes: while it is still fetching no retry can start, so this
                // cannot delete what a new fetch of the same pack writes into the same place.
                let _ = tokio::fs::remove_dir_all(&partial).await;
            }
            {
                let mut state = cache.lock();
                let ours = state
                    .slots
                    .get(&pack_id)
                    .is_some_and(|slot| slot.generation == generation);
                if ours {
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
                }
                // Under the lock: whoever sees the slot done or gone also sees the outcome.
                fetch_state.end(result.clone());
            }
            cache.room_freed.notify_waiters();
        });
    }

    /// Removes what no pack in the cache claims: directories of fetches a crashed task left
    /// behind, stray files. Blocking (file-system work): call it off the async threads.
    /// Returns how many entries were removed.
    pub fn remove_leftovers(&self) -> std::io::Result<u64> {
        let mut removed = 0;
        for entry in std::fs::read_dir(&self.dir)?.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with(".evicted-") {
                continue; // being removed by the eviction that renamed it
            }
            let (id, partial) = match name.strip_suffix(".partial") {
                Some(id) => (id.parse::<i64>().ok(), true),
                None => (name.parse::<i64>().ok(), false),
            };
            // Decided and done under the lock, so a fetch starting now cannot lose the
            // directory it is about to fill (leftovers are rare; the lock is held briefly).
            let state = self.lock();
            let claimed = id
                .and_then(|id| state.slots.get(&id))
                .is_some_and(|slot| !partial || slot.fetching.is_some());
            if claimed {
                continue;
            }
            // Renamed aside under the lock (a metadata operation), deleted after it: no other
            // request waits on the mutex while a leftover pack's files are unlinked.
            let trash = self
                .dir
                .join(format!(".evicted-leftover-{}", unique_suffix()));
            let moved = std::fs::rename(entry.path(), &trash);
            drop(state);
            match moved {
                Ok(()) => {
                    let gone = if trash.is_dir() {
                        std::fs::remove_dir_all(&trash)
                    } else {
                        std::fs::remove_file(&trash)
                    };
                    match gone {
                        Ok(()) => removed += 1,
                        Err(error) => {
                            tracing::warn!(path = %trash.display(), %error, "cannot remove a retrieve-cache leftover")
                        }
                    }
                }
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
                Err(error) => {
                    tracing::warn!(name = %name, %error, "cannot remove a retrieve-cache leftover")
                }
            }
        }
        Ok(removed)
    }

    /// Renames evicted packs' directories out of the way (one metadata operation each) and
    /// returns where they went, for [`delete_in_background`].
    fn set_aside(&self, packs: Vec<i64>) -> Vec<PathBuf> {
        let mut doomed = Vec::with_capacity(packs.len());
        for pack_id in packs {
            let trash = self
                .dir
                .join(format!(".evicted-{pack_id}-{}", unique_suffix()));
            match std::fs::rename(self.pack_dir(pack_id), &trash) {
                Ok(()) => doomed.push(trash),
                Err(error) => {
                    tracing::warn!(pack_id, %error, "cannot remove an evicted pack from the retrieve cache")
                }
            }
        }
        doomed
    }
}

/// Deletes evicted packs on the blocking pool: unlinking a pack's thousands of files must not
/// hold up an async thread.
fn delete_in_background(doomed: Vec<PathBuf>) {
    if doomed.is_empty() {
        return;
    }
    let remove = move || {
        for trash in doomed {
            if let Err(error) = std::fs::remove_dir_all(&trash) {
                tracing::warn!(path = %trash.display(), %error, "cannot remove an evicted pack from the retrieve cache");
            }
        }
    };
    match tokio::runtime::Handle::try_current() {
        Ok(runtime) => drop(runtime.spawn_blocking(remove)),
        Err(_) => remove(),
    }
}

/// Distinguishes evicted directories of the same pack (evicted, fetched again, evicted).
fn unique_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
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
mod tests;
