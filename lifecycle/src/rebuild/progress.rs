//! Progress of a rebuild: what it is scanning, items and bytes done of the total, rate, ETA.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

#[derive(Debug)]
pub struct Progress {
    phase: Mutex<(String, Instant)>,
    items_total: AtomicU64,
    items_done: AtomicU64,
    bytes_total: AtomicU64,
    bytes_done: AtomicU64,
}

impl Default for Progress {
    fn default() -> Self {
        Progress {
            phase: Mutex::new((String::new(), Instant::now())),
            items_total: AtomicU64::new(0),
            items_done: AtomicU64::new(0),
            bytes_total: AtomicU64::new(0),
            bytes_done: AtomicU64::new(0),
        }
    }
}

impl Progress {
    /// Starts a phase (one filesystem or target) of `items` items and `bytes` bytes.
    pub(super) fn begin(&self, phase: String, items: u64, bytes: u64) {
        if let Ok(mut current) = self.phase.lock() {
            *current = (phase, Instant::now());
        }
        self.items_total.store(items, Ordering::Relaxed);
        self.bytes_total.store(bytes, Ordering::Relaxed);
        self.items_done.store(0, Ordering::Relaxed);
        self.bytes_done.store(0, Ordering::Relaxed);
    }

    pub(super) fn done(&self, items: u64, bytes: u64) {
        self.items_done.fetch_add(items, Ordering::Relaxed);
        self.bytes_done.fetch_add(bytes, Ordering::Relaxed);
    }

    pub(super) fn finish(&self) {
        if let Ok(mut current) = self.phase.lock() {
            current.0 = "done".into();
        }
    }

    /// One line for the admin: `ONLINE /srv/a: 1200/5000 items, 300/1250 MB, 85 items/s,
    /// 12.0 MB/s, ETA 45 s`. The ETA follows bytes when there are any (hashing and reading
    /// are what take the time), else items.
    pub fn line(&self) -> String {
        let (phase, started) = match self.phase.lock() {
            Ok(current) => (current.0.clone(), current.1),
            Err(_) => (String::new(), Instant::now()),
        };
        let seconds = started.elapsed().as_secs_f64().max(0.001);
        let items = self.items_done.load(Ordering::Relaxed);
        let items_total = self.items_total.load(Ordering::Relaxed);
        let bytes = self.bytes_done.load(Ordering::Relaxed);
        let bytes_total = self.bytes_total.load(Ordering::Relaxed);
        let mb = |b: u64| b as f64 / 1_000_000.0;
        let (left, rate) = if bytes_total > 0 {
            (
                bytes_total.saturating_sub(bytes) as f64,
                bytes as f64 / seconds,
            )
        } else {
            (
                items_total.saturating_sub(items) as f64,
                items as f64 / seconds,
            )
        };
        let eta = if rate > 0.0 {
            format!("ETA {:.0} s", left / rate)
        } else {
            "ETA unknown".into()
        };
        format!(
            "{phase}: {items}/{items_total} items, {:.1}/{:.1} MB, {:.0} items/s, {:.1} MB/s, {eta}",
            mb(bytes),
            mb(bytes_total),
            items as f64 / seconds,
            mb(bytes) / seconds,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_names_the_phase_counts_and_an_eta() {
        let progress = Progress::default();
        progress.begin("ONLINE /srv/a".into(), 10, 2_000_000);
        progress.done(5, 1_000_000);
        let line = progress.line();
        assert!(
            line.starts_with("ONLINE /srv/a: 5/10 items, 1.0/2.0 MB"),
            "{line}"
        );
        assert!(line.contains("ETA") && !line.contains("unknown"), "{line}");
        progress.begin("NEARLINE t".into(), 3, 0);
        assert!(progress.line().contains("0/3 items"));
        assert!(progress.line().contains("ETA unknown"));
    }
}
