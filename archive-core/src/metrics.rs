//! Process-wide counters for the NEARLINE path, exported by `/metrics` (Prometheus text).
//! Plain atomics: incremented on hot paths, read rarely.

use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub const fn new() -> Counter {
        Counter(AtomicU64::new(0))
    }
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    pub fn sub(&self, n: u64) {
        self.0.fetch_sub(n, Ordering::Relaxed);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Whole packs fetched from a target for retrieval (or restore).
pub static PACK_FETCHES: Counter = Counter::new();
/// Single members read with a ranged GET.
pub static MEMBER_RANGE_READS: Counter = Counter::new();
/// Retrievals that read another target's copy because the preferred one could not be read.
pub static NEARLINE_FALLBACKS: Counter = Counter::new();
/// Bytes read from NEARLINE targets for retrieval: whole packs and ranges (not verify-sync).
pub static NEARLINE_BYTES_READ: Counter = Counter::new();
/// Retrievals served from a pack already in the retrieve cache.
pub static CACHE_HITS: Counter = Counter::new();
/// Bytes of unpacked packs in the retrieve cache now.
pub static CACHE_BYTES: Counter = Counter::new();
/// Packs evicted from the retrieve cache.
pub static CACHE_EVICTIONS: Counter = Counter::new();

/// Spool files (`.incoming/*.part`) left by interrupted transfers, removed by a scavenge.
pub static SPOOL_LEFTOVERS_REMOVED: Counter = Counter::new();
/// Retrieve-cache entries no pack claims (a crashed fetch's directory), removed by a scavenge.
pub static CACHE_LEFTOVERS_REMOVED: Counter = Counter::new();
/// Files on ONLINE filesystems the index has no row for, found by a scavenge.
pub static ORPHANS_FOUND: Counter = Counter::new();
/// Of those, removed (`lifecycle.remove_orphans`).
pub static ORPHANS_REMOVED: Counter = Counter::new();
/// Packs and ONLINE files checked by the fixity service, and the bytes it read for them.
pub static FIXITY_CHECKS: Counter = Counter::new();
pub static FIXITY_BYTES: Counter = Counter::new();
/// Fixity checks that found a copy damaged or missing.
pub static FIXITY_FAILURES: Counter = Counter::new();

/// The counters in Prometheus text exposition format.
pub fn prometheus_text() -> String {
    let mut out = String::new();
    for (name, help, kind, counter) in [
        (
            "strata_nearline_pack_fetches_total",
            "Whole packs fetched from NEARLINE targets for retrieval or restore",
            "counter",
            &PACK_FETCHES,
        ),
        (
            "strata_nearline_member_range_reads_total",
            "Single instances read from a pack with a ranged GET",
            "counter",
            &MEMBER_RANGE_READS,
        ),
        (
            "strata_nearline_fallbacks_total",
            "Retrievals that fell back to another target's copy after a read failed",
            "counter",
            &NEARLINE_FALLBACKS,
        ),
        (
            "strata_nearline_bytes_read_total",
            "Bytes read from NEARLINE targets for retrieval or restore",
            "counter",
            &NEARLINE_BYTES_READ,
        ),
        (
            "strata_retrieve_cache_hits_total",
            "Retrievals served from a pack already in the retrieve cache",
            "counter",
            &CACHE_HITS,
        ),
        (
            "strata_retrieve_cache_bytes",
            "Bytes of unpacked packs in the retrieve cache",
            "gauge",
            &CACHE_BYTES,
        ),
        (
            "strata_retrieve_cache_evictions_total",
            "Packs evicted from the retrieve cache",
            "counter",
            &CACHE_EVICTIONS,
        ),
        (
            "strata_scavenge_spool_leftovers_removed_total",
            "Spool files of interrupted transfers removed by scavenge jobs",
            "counter",
            &SPOOL_LEFTOVERS_REMOVED,
        ),
        (
            "strata_scavenge_cache_leftovers_removed_total",
            "Retrieve-cache entries no pack claims, removed by scavenge jobs",
            "counter",
            &CACHE_LEFTOVERS_REMOVED,
        ),
        (
            "strata_scavenge_orphan_files_found_total",
            "Files on ONLINE filesystems without an index row, found by scavenge jobs",
            "counter",
            &ORPHANS_FOUND,
        ),
        (
            "strata_scavenge_orphan_files_removed_total",
            "Orphan ONLINE files removed by scavenge jobs (lifecycle.remove_orphans)",
            "counter",
            &ORPHANS_REMOVED,
        ),
        (
            "strata_fixity_checks_total",
            "ARCHIVED packs re-read and ONLINE files re-hashed by the fixity service",
            "counter",
            &FIXITY_CHECKS,
        ),
        (
            "strata_fixity_bytes_read_total",
            "Bytes the fixity service read (bounded by lifecycle.fixity_max_bytes_per_day)",
            "counter",
            &FIXITY_BYTES,
        ),
        (
            "strata_fixity_failures_total",
            "Fixity checks that found a copy damaged or missing (repair queued)",
            "counter",
            &FIXITY_FAILURES,
        ),
    ] {
        out.push_str(&format!(
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {}\n",
            counter.get()
        ));
    }
    out
}
