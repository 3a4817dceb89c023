//! glibc's allocator gives each thread that contends for the heap an arena of its own, up to
//! eight per core, and memory freed in an arena stays with it. Under the soak (16
//! associations; tokio workers, the blocking pool, sqlx) RSS reached 85 MB in 10 minutes and
//! kept creeping (+0.2 MB a minute after an hour); the same soak with `MALLOC_ARENA_MAX=2` ran
//! at about half that (README, Hardening: soak).
//!
//! glibc reads `MALLOC_ARENA_MAX` only when the process starts, and setting it through
//! `mallopt` would need `unsafe` (forbidden in this workspace). So when the variable is not
//! set, the process replaces itself once (`exec`, same pid, same arguments) with it set to one
//! arena per core, at least two. An admin's own `MALLOC_ARENA_MAX` is left as it is.

use std::os::unix::process::CommandExt;

const VARIABLE: &str = "MALLOC_ARENA_MAX";

/// Call first thing in `main`, before any thread starts. Returns only if nothing needed to be
/// done, or the re-exec failed (then the process simply runs with glibc's default).
pub fn limit() {
    if !cfg!(all(target_os = "linux", target_env = "gnu")) || std::env::var_os(VARIABLE).is_some() {
        return;
    }
    let Ok(exe) = std::env::current_exe() else {
        return;
    };
    let arenas = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .max(2);
    let error = std::process::Command::new(exe)
        .args(std::env::args_os().skip(1))
        .env(VARIABLE, arenas.to_string())
        .exec();
    eprintln!("note: could not restart with {VARIABLE}={arenas} ({error}); using glibc's default");
}
