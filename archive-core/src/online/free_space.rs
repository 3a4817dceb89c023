//! Free space of the ONLINE filesystems, for the watermark check every received object makes.
//! `statvfs` is a blocking call (and on NFS a slow one), so it is not made per object on an
//! async thread: each filesystem is measured once when first asked about, then re-measured on
//! the blocking pool when its reading is older than [`REFRESH`], the stale reading serving
//! meanwhile. A burst of objects can therefore pass a watermark by at most about one second of
//! ingest, which is what watermarks are sized for.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How old a reading may get before it is re-measured.
const REFRESH: Duration = Duration::from_secs(1);

#[derive(Clone)]
struct Reading {
    available: Result<u64, String>,
    at: Instant,
}

#[derive(Default)]
pub(crate) struct FreeSpace {
    readings: Mutex<HashMap<String, Reading>>,
    refreshing: AtomicBool,
}

impl FreeSpace {
    /// Bytes available to us on the filesystem at `path`, as last measured.
    pub fn available(self: &Arc<Self>, path: &str) -> Result<u64, String> {
        let known = self.lock().get(path).cloned();
        match known {
            Some(reading) => {
                if reading.at.elapsed() > REFRESH {
                    self.refresh_in_background();
                }
                reading.available
            }
            None => {
                let available = measure(path);
                self.record(path, available.clone());
                available
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Reading>> {
        self.readings
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn record(&self, path: &str, available: Result<u64, String>) {
        self.lock().insert(
            path.to_string(),
            Reading {
                available,
                at: Instant::now(),
            },
        );
    }

    /// Re-measures every known filesystem on the blocking pool; one refresh at a time.
    fn refresh_in_background(self: &Arc<Self>) {
        if self.refreshing.swap(true, Ordering::AcqRel) {
            return;
        }
        let free = self.clone();
        let refresh = move || {
            let paths: Vec<String> = free.lock().keys().cloned().collect();
            for path in paths {
                let available = measure(&path);
                free.record(&path, available);
            }
            free.refreshing.store(false, Ordering::Release);
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => drop(runtime.spawn_blocking(refresh)),
            Err(_) => refresh(),
        }
    }
}

fn measure(path: &str) -> Result<u64, String> {
    fs4::available_space(path).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reading_is_taken_once_and_serves_until_it_is_refreshed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().display().to_string();
        let free = Arc::new(FreeSpace::default());
        let first = free.available(&path).expect("measured");
        assert!(first > 0);
        assert_eq!(free.lock().len(), 1);
        assert!(free.available("/no/such/directory/strata").is_err());
    }
}
