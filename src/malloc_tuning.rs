//! glibc malloc settings the archive's workload needs, applied before any thread starts.
//!
//! Arenas: glibc gives each thread that contends for the heap an arena of its own, up to
//! eight per core, and memory freed in an arena stays with it. Under the soak (16
//! associations; tokio workers, the blocking pool, sqlx) RSS reached 85 MB in 10 minutes and
//! kept creeping (+0.2 MB a minute after an hour); the same soak with `MALLOC_ARENA_MAX=2` ran
//! at about half that (README, Hardening: soak). So: one arena per core, at least two.
//!
//! Thresholds: objects are read and received in buffers of 0.1–8 MiB (a CT slice is 512 KiB,
//! spool and chunk buffers are 1 MiB). glibc serves blocks above its mmap threshold (128 KiB,
//! raised as larger mapped blocks are freed) with a fresh mapping and gives the top of a heap back to
//! the kernel beyond a trim threshold, so each such buffer was faulted in and zeroed page by
//! page, and unmapped again: a third of the server's CPU time in a WADO-RS study retrieval
//! (perf: page faults, page clearing, unmapping). With the mmap threshold at 8 MiB and the trim
//! threshold at 16 MiB the same retrieval took 30 % less CPU and ran 35–50 % faster, for 3 MB
//! more peak RSS (README, Benchmarks → DICOMweb).
//!
//! glibc reads these variables only when the process starts, and `mallopt` would need
//! `unsafe` (forbidden in this workspace). So when any is not set, the process replaces itself
//! once (`exec`, same pid, same arguments) with the missing ones set. An admin's own values
//! are left as they are.

use std::os::unix::process::CommandExt;

/// Set in the re-executed process. Not `STRATA_…`: those are configuration keys.
const REEXECUTED: &str = "MALLOC_TUNED_BY_STRATA";

/// Each variable glibc reads at start-up, with the value used when the environment has none.
fn settings() -> [(&'static str, String); 3] {
    let arenas = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .max(2);
    [
        ("MALLOC_ARENA_MAX", arenas.to_string()),
        ("MALLOC_MMAP_THRESHOLD_", (8u64 << 20).to_string()),
        ("MALLOC_TRIM_THRESHOLD_", (16u64 << 20).to_string()),
    ]
}

/// Call first thing in `main`, before any thread starts. Returns only if nothing needed to be
/// done, or the re-exec failed (then the process simply runs with glibc's defaults).
pub fn apply() {
    if !cfg!(all(target_os = "linux", target_env = "gnu")) {
        return;
    }
    // Once only, even where the variables do not survive the exec (a setuid or
    // file-capability binary, e.g. to bind port 104, may have them stripped by glibc).
    if std::env::var_os(REEXECUTED).is_some() {
        return;
    }
    let missing: Vec<(&str, String)> = settings()
        .into_iter()
        .filter(|(name, _)| std::env::var_os(name).is_none())
        .collect();
    if missing.is_empty() {
        return;
    }
    let Ok(exe) = std::env::current_exe() else {
        return;
    };
    let error = std::process::Command::new(exe)
        .args(std::env::args_os().skip(1))
        .envs(missing.iter().map(|(name, value)| (*name, value)))
        .env(REEXECUTED, "1")
        .exec();
    eprintln!(
        "note: could not restart with glibc malloc settings ({error}); using glibc's defaults"
    );
}
