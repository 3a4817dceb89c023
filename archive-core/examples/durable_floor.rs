//! The floor under any durable DICOM receiver on this machine: the files of a workload written
//! the way a C-STORE must be before its success may be sent (write a temporary file, fdatasync
//! it, rename it into place, fsync the directory), by as many writers as the senders keep
//! objects in flight. No network, no parsing, no index: nothing a receiver could leave out.
//!
//! `bench/ingest.sh` runs it beside storescp (which makes nothing durable) and Strata, so the
//! share of Strata's time that durability alone costs is measured in the same run.
//!
//! Usage: durable_floor <workload dir with part*/ subdirectories> <empty output dir>
//! Prints the wall seconds of the writing phase (the files are read into memory first).

use archive_core::online::INCOMING_DIR;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(workload), Some(out)) = (args.next(), args.next()) else {
        return Err("usage: durable_floor <workload dir> <output dir>".into());
    };
    let parts = load_parts(Path::new(&workload))?;
    if parts.is_empty() {
        return Err(format!("{workload} has no part*/ directories").into());
    }
    let out = PathBuf::from(out);
    let start = Instant::now();
    let writers: Vec<_> = parts
        .into_iter()
        .enumerate()
        .map(|(k, objects)| {
            let dir = out.join(format!("w{k}"));
            std::thread::spawn(move || write_all_durably(&dir, &objects))
        })
        .collect();
    for writer in writers {
        writer.join().map_err(|_| "a writer panicked")??;
    }
    println!("{:.3}", start.elapsed().as_secs_f64());
    Ok(())
}

/// Every `part*` directory's files (recursively), in memory: one list per sender.
fn load_parts(workload: &Path) -> std::io::Result<Vec<Vec<Vec<u8>>>> {
    let mut parts = Vec::new();
    let mut names: Vec<PathBuf> = fs::read_dir(workload)?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("part"))
        })
        .collect();
    names.sort();
    for part in names {
        let mut objects = Vec::new();
        collect_files(&part, &mut objects)?;
        parts.push(objects);
    }
    Ok(parts)
}

fn collect_files(dir: &Path, objects: &mut Vec<Vec<u8>>) -> std::io::Result<()> {
    let mut entries: Vec<PathBuf> = fs::read_dir(dir)?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            collect_files(&path, objects)?;
        } else {
            objects.push(fs::read(&path)?);
        }
    }
    Ok(())
}

/// One sender's objects, one after the other, each durable before the next starts (a storescu
/// association waits for each response).
fn write_all_durably(dir: &Path, objects: &[Vec<u8>]) -> std::io::Result<()> {
    let incoming = dir.join(INCOMING_DIR);
    let stored = dir.join("stored");
    fs::create_dir_all(&incoming)?;
    fs::create_dir_all(&stored)?;
    let stored_dir = File::open(&stored)?;
    for (n, bytes) in objects.iter().enumerate() {
        let temp = incoming.join(format!("{n}.part"));
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&temp)?;
        file.write_all(bytes)?;
        file.sync_data()?;
        fs::rename(&temp, stored.join(format!("{n}.dcm")))?;
        stored_dir.sync_all()?;
    }
    Ok(())
}
