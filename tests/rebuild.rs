//! `strata rebuild-index`: an archive whose index is lost (SQLite file deleted, PostgreSQL
//! database dropped) is rebuilt from its ONLINE filesystem and two NEARLINE targets (S3 and a
//! directory) and answers as before: C-FIND, availability, packs, C-MOVE byte for byte.
//! Run twice it changes nothing; killed halfway and run again it completes.

#[macro_use]
mod common;

use archive_core::index::Index;
use archive_core::query::{Attr, FindQuery, Level, Matcher, QueryKey};
use common::dcmtk::Storescp;
use common::lifecycle::*;
use common::s3::S3Place;
use common::{data_set_sha256, dcmtk, files_below, sop_instance_uid, Backend, Strata};
use std::collections::{BTreeMap, HashMap};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const STUDIES: u32 = 6;
const PER_SERIES: u32 = 2;

/// Every C-FIND row at study and at image level, with every attribute the index answers,
/// and every pack (target, key, status, members): what must survive the loss.
#[derive(Debug)]
struct Snapshot {
    studies: Vec<BTreeMap<String, String>>,
    instances: Vec<BTreeMap<String, String>>,
    packs: Vec<(String, String, String, i64, i64)>,
}

/// Fails on the first difference, naming it (a whole snapshot is too long to read).
fn assert_same(after: &Snapshot, before: &Snapshot, when: &str) {
    for (name, a, b) in [
        ("study", &after.studies, &before.studies),
        ("instance", &after.instances, &before.instances),
    ] {
        assert_eq!(a.len(), b.len(), "{when}: {name} rows");
        for (x, y) in a.iter().zip(b) {
            assert_eq!(x, y, "{when}: a {name} row differs");
        }
    }
    assert_eq!(after.packs, before.packs, "{when}: packs");
}

async fn rows(index: &Index, level: Level, attrs: &[Attr]) -> Vec<BTreeMap<String, String>> {
    let query = FindQuery {
        level,
        keys: attrs
            .iter()
            .map(|attr| QueryKey {
                attr: *attr,
                matcher: Matcher::Universal,
            })
            .collect(),
        limit: 100_000,
        offset: None,
    };
    let mut rows: Vec<BTreeMap<String, String>> = index
        .find(&query)
        .await
        .expect("find")
        .into_iter()
        .map(|row| {
            row.into_iter()
                .map(|(a, v)| (format!("{a:?}"), v))
                .collect()
        })
        .collect();
    rows.sort();
    rows
}

async fn snapshot(index: &Index, studies: &[String]) -> Snapshot {
    use Attr::*;
    let study_attrs = [
        PatientId,
        PatientName,
        PatientBirthDate,
        PatientSex,
        StudyInstanceUid,
        StudyDate,
        StudyTime,
        AccessionNumber,
        StudyId,
        StudyDescription,
        ReferringPhysicianName,
        ModalitiesInStudy,
        NumberOfStudyRelatedSeries,
        NumberOfStudyRelatedInstances,
        InstanceAvailability,
    ];
    let instance_attrs = [
        StudyInstanceUid,
        SeriesInstanceUid,
        SopInstanceUid,
        SopClassUid,
        InstanceNumber,
        NumberOfFrames,
        InstanceAvailability,
    ];
    let mut packs = Vec::new();
    for study in studies {
        for pack in index.packs_of_study(study).await.expect("packs") {
            packs.push((
                pack.target_name,
                pack.object_key,
                pack.status.as_str().to_string(),
                pack.member_count,
                pack.size_bytes,
            ));
        }
    }
    packs.sort();
    Snapshot {
        studies: rows(index, Level::Study, &study_attrs).await,
        instances: rows(index, Level::Image, &instance_attrs).await,
        packs,
    }
}

/// The index is gone: the SQLite file (and its WAL), or the PostgreSQL database.
async fn lose_the_index(strata: &Strata, backend: Backend) {
    match backend {
        Backend::Sqlite => {
            for name in ["index.db", "index.db-wal", "index.db-shm"] {
                let _ = std::fs::remove_file(strata.dir.path().join(name));
            }
        }
        Backend::Postgres => {
            archive_core::testing::recreate_postgres_database(&strata.database_url).await
        }
    }
}

fn rebuild_command(strata: &Strata) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_strata"));
    command
        .arg("--config")
        .arg(&strata.config_path)
        .args(["rebuild-index", "--verify", "--parallel", "1"])
        .env("STRATA_LOG", "warn");
    command
}

async fn pack_rows(index: &Index) -> i64 {
    sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM pack")
        .fetch_one(index.pool_for_tests())
        .await
        .unwrap_or(0)
}

async fn checkpoints(index: &Index) -> i64 {
    sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM rebuild_checkpoint")
        .fetch_one(index.pool_for_tests())
        .await
        .unwrap_or(0)
}

async fn rebuilds_the_index_from_online_and_nearline_storage(backend: Backend) {
    let place = S3Place::shared();
    let scratch = tempfile::tempdir().expect("tempdir");
    let vault = scratch.path().join("vault");
    let config = format!(
        "{}[[nearline.targets]]\nname = \"vault\"\nkind = \"filesystem\"\npath = \"{}\"\n{}",
        place.target_toml("cloud", scratch.path(), ""),
        vault.display(),
        lifecycle_toml("", "")
    );
    let mut strata = Strata::start(backend, &config).await;
    let studies = ingest(&strata, STUDIES, PER_SERIES, 64).await;
    let corpus = corpus_of(&strata, STUDIES, PER_SERIES, 64);
    let sent: HashMap<String, String> = files_below(&corpus)
        .into_iter()
        .map(|f| (sop_instance_uid(&f), data_set_sha256(&f)))
        .collect();
    for study in &studies {
        for target in ["cloud", "vault"] {
            strata.cli_ok(&["copy", "--study", study, "--target", target, "--wait"]);
            strata.cli_ok(&["verify", "--study", study, "--target", target, "--wait"]);
        }
    }
    // Half the studies lose their ONLINE copies: they live on in the packs only.
    let (gone, kept) = studies.split_at(studies.len() / 2);
    for study in gone {
        strata.cli_ok(&["delete-online", "--study", study, "--wait"]);
    }
    let index = strata.index().await;
    let before = snapshot(&index, &studies).await;
    assert_eq!(before.packs.len(), studies.len() * 2);
    assert!(before.packs.iter().all(|p| p.2 == "ARCHIVED"));
    let availability: Vec<&str> = before
        .studies
        .iter()
        .map(|row| row["InstanceAvailability"].as_str())
        .collect();
    assert_eq!(
        availability.iter().filter(|a| **a == "NEARLINE").count(),
        gone.len(),
        "{availability:?}"
    );
    drop(index);

    strata.kill9();
    lose_the_index(&strata, backend).await;

    // Killed halfway (some packs recorded, not all), then run again: it completes.
    let mut child = rebuild_command(&strata)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start rebuild-index");
    let index = strata.index().await;
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut recorded = 0;
    while recorded == 0 {
        assert!(Instant::now() < deadline, "rebuild-index recorded no pack");
        assert!(
            child.try_wait().expect("poll").is_none(),
            "rebuild-index ended before it could be interrupted"
        );
        recorded = pack_rows(&index).await;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    child.kill().expect("kill -9");
    child.wait().expect("reap");
    let halfway = pack_rows(&index).await;
    assert!(
        (halfway as usize) < studies.len() * 2,
        "interrupted before the end ({halfway} packs recorded)"
    );
    assert!(
        checkpoints(&index).await > 0,
        "an interrupted rebuild leaves its checkpoint"
    );
    let output = rebuild_command(&strata).output().expect("rebuild-index");
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        !text.contains("problem:") && !text.contains("conflict:"),
        "{text}"
    );
    assert_eq!(checkpoints(&index).await, 0, "a finished rebuild clears it");
    let after = snapshot(&index, &studies).await;
    assert_same(&after, &before, "after the rebuild");

    // Again: nothing to add, nothing changes.
    let output = strata.cli_ok(&["rebuild-index", "--verify"]);
    assert!(
        output.contains("0 ONLINE files indexed") && output.contains("0 packs recorded"),
        "{output}"
    );
    assert_same(
        &snapshot(&index, &studies).await,
        &before,
        "after a second run",
    );

    // Served again: C-MOVE of every study is byte-identical, from ONLINE or from the packs.
    strata.restart();
    let destination = Storescp::start(&scratch.path().join("moved"), "RECV", true);
    strata.cli_ok(&[
        "ae",
        "add",
        "RECV",
        "127.0.0.1",
        &destination.port.to_string(),
    ]);
    for study in gone.iter().chain(kept) {
        dcmtk::move_study(strata.dicom_port, "RECV", study, &|| strata.log());
    }
    let moved = destination.received(sent.len());
    assert_eq!(moved.len(), sent.len());
    for (uid, file) in &moved {
        assert_eq!(&data_set_sha256(file), &sent[uid], "{uid} byte-identical");
    }
}

on_both_backends!(rebuilds_the_index_from_online_and_nearline_storage);
