//! The scavenge job, on SQLite and PostgreSQL: stale spool files go, files no index row points
//! at are reported (and removed only when configured), young files and indexed objects stay.

#[macro_use]
mod common;

use common::lifecycle::*;
use common::{files_below, Backend, Strata};
use std::path::Path;
use std::time::{Duration, SystemTime};

fn write_aged(path: &Path, bytes: &[u8], age: Duration) {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).expect("mkdir");
    }
    std::fs::write(path, bytes).expect("write");
    let file = std::fs::File::options()
        .write(true)
        .open(path)
        .expect("open");
    file.set_modified(SystemTime::now() - age).expect("mtime");
}

const TWO_HOURS: Duration = Duration::from_secs(2 * 3600);

async fn scavenge(backend: Backend, remove_orphans: bool) {
    let settings = format!(
        "node_id = \"scavenger\"\nscavenge_schedule = \"\"\nscavenge_grace_hours = 1\n\
         remove_orphans = {remove_orphans}\n"
    );
    let strata = Strata::start(backend, &lifecycle_toml("", &settings)).await;
    ingest(&strata, 1, 3, 32).await;
    let online = strata.online_dir();
    let stored_before = files_below(&online);
    let index = strata.index().await;
    let indexed = index.counts().await.expect("counts").files;
    assert!(indexed > 0);
    assert_eq!(stored_before.len() as i64, indexed, "{stored_before:?}");

    let old_spool = online.join(".incoming/4242-1.part");
    let young_spool = online.join(".incoming/4242-2.part");
    // Orphans have the layout's shape (YYYY/MM/DD/<hash>/<hash>/<hash>.dcm); anything else below
    // the root (another filesystem nested in it, an admin's file) is never a candidate.
    let series = online.join("2020/01/01/aaaaaaaaaaaa/bbbbbbbbbbbb");
    let old_orphan = series.join("cccccccccccccccccccc.dcm");
    let young_orphan = series.join("dddddddddddddddddddd.dcm");
    let not_an_object = online.join("nested-disk/2020/old.dcm");
    write_aged(&old_spool, b"half an object", TWO_HOURS);
    write_aged(&young_spool, b"being received", Duration::ZERO);
    write_aged(&old_orphan, &[7u8; 1000], TWO_HOURS);
    write_aged(&young_orphan, &[7u8; 1000], Duration::ZERO);
    write_aged(&not_an_object, &[7u8; 1000], TWO_HOURS);

    let found_before = strata.metric("strata_scavenge_orphan_files_found_total");
    let said = strata.cli_ok(&["scavenge", "--wait", "--timeout-secs", "60"]);
    assert!(said.contains("SCAVENGE"), "{said}");

    assert!(!old_spool.exists(), "a spool file two hours old is removed");
    assert!(
        young_spool.exists(),
        "a transfer under way keeps its spool file"
    );
    assert!(
        young_orphan.exists() && not_an_object.exists(),
        "a file younger than the grace period stays, and one outside the layout is never touched"
    );
    assert_eq!(
        strata.metric("strata_scavenge_orphan_files_found_total"),
        found_before + 1,
        "exactly the old unindexed file is an orphan"
    );
    assert_eq!(
        strata.metric("strata_scavenge_spool_leftovers_removed_total"),
        1
    );
    assert_eq!(
        old_orphan.exists(),
        !remove_orphans,
        "orphans are removed only with lifecycle.remove_orphans"
    );
    assert_eq!(
        strata.metric("strata_scavenge_orphan_files_removed_total"),
        u64::from(remove_orphans)
    );
    for file in &stored_before {
        assert!(file.exists(), "indexed object {} untouched", file.display());
    }
    // The index and the files still agree.
    assert_eq!(index.counts().await.expect("counts").files, indexed);
}

async fn orphans_are_reported_not_removed_by_default(backend: Backend) {
    scavenge(backend, false).await;
}

async fn orphans_are_removed_when_configured(backend: Backend) {
    scavenge(backend, true).await;
}

on_both_backends!(
    orphans_are_reported_not_removed_by_default,
    orphans_are_removed_when_configured,
);
