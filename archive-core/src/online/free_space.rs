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
/// A reading this old means re-measuring is stuck (a hung NFS mount): the filesystem counts as
/// unmeasurable, and so receives nothing, rather than trusting a figure that may be long gone.
const STALE: Duration = Duration::from_secs(30);

#[derive(Clone)]
struct Reading {
    available: Result<u64, String>,
    at: Instant,
    /// A re-measurement of this filesystem is under way (one at a time per filesystem, so
    /// one hung mount does not keep the others from being measured).
    refreshing: Arc<AtomicBool>,
}

#[derive(Default)]
pub(crate) struct FreeSpace {
    readings: Mutex<HashMap<String, Reading>>,
}

impl FreeSpace {
    /// Bytes available to us on the filesystem at `path`, as last measured.
    pub fn available(self: &Arc<Self>, path: &str) -> Result<u64, String> {
        let known = self.lock().get(path).cloned();
        match known {
            Some(reading) => {
                let age = reading.at.elapsed();
                if age > REFRESH {
                    self.refresh_in_background(path, &reading.refreshing);
                }
                if age > STALE {
                    return Err(format!("free space not measured for {} s", age.as_secs()));
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
        let mut readings = self.lock();
        let refreshing = readings
            .get(path)
            .map(|r| r.refreshing.clone())
            .unwrap_or_default();
        readings.insert(
            path.to_string(),
            Reading {
                available,
                at: Instant::now(),
                refreshing,
            },
        );
    }

    /// Re-measures one filesystem on the blocking pool, unless that is already under way.
    fn refresh_in_background(self: &Arc<Self>, path: &str, refreshing: &Arc<AtomicBool>) {
        if refreshing.swap(true, Ordering::AcqRel) {
            return;
        }
        let (free, path, flag) = (self.clone(), path.to_string(), refreshing.clone());
        let refresh = move || {
            let available = measure(&path);
            free.record(&path, available);
            flag.store(false, Ordering::Release);
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
