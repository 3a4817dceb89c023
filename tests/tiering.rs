//! ONLINE → NEARLINE → back, end to end: retention rules that wait for verified copies, the
//! dry-run preview, crash-safe deletion, C-FIND availability, C-MOVE / C-GET served from
//! NEARLINE (one fetch per pack, ranged reads for single instances, a bounded cache), restore.

#[macro_use]
mod common;

use archive_core::index::Index;
use archive_core::jobs::JobType;
use archive_core::model::Availability;
use archive_core::query::Level;
use common::dcmtk::Storescp;
use common::lifecycle::*;
use common::s3::{Garage, S3Place};
use common::{data_set_sha256, dcmtk, files_below, sop_instance_uid, Backend, Strata};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

fn retention_rule(enabled: bool) -> String {
    format!(
        "[[lifecycle.retention_rules]]\nname = \"idle\"\nschedule = \"* * * * * *\"\n\
         not_accessed_days = 0\nenabled = {enabled}\n"
    )
}

/// SOP Instance UID → data-set SHA-256 of the files that were sent.
fn sent_data_sets(corpus: &Path) -> HashMap<String, String> {
    files_below(corpus)
        .into_iter()
        .map(|f| (sop_instance_uid(&f), data_set_sha256(&f)))
        .collect()
}

/// Stored ONLINE files (the `.incoming` spool excluded).
fn online_files(strata: &Strata) -> Vec<PathBuf> {
    files_below(&strata.online_dir())
        .into_iter()
        .filter(|p| !p.components().any(|c| c.as_os_str() == ".incoming"))
        .collect()
}

/// InstanceAvailability (0008,0056) of a study, as DCMTK findscu shows it.
fn find_availability(strata: &Strata, study: &str) -> String {
    let output = dcmtk::run(
        "findscu",
        &[
            "-v",
            "-S",
            "-aec",
            "STRATA",
            "-k",
            "QueryRetrieveLevel=STUDY",
            "-k",
            &format!("StudyInstanceUID={study}"),
            "-k",
            "InstanceAvailability",
            "127.0.0.1",
            &strata.dicom_port.to_string(),
        ],
    );
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    // The request is echoed first; the answer follows "Find Response".
    let answer = text.split("Find Response").nth(1).unwrap_or_default();
    answer
        .lines()
        .find(|l| l.contains("(0008,0056)"))
        .and_then(|l| Some(l.split('[').nth(1)?.split(']').next()?.to_string()))
        .unwrap_or_else(|| panic!("no InstanceAvailability in findscu output:\n{text}"))
}

fn movescu(
    strata: &Strata,
    destination: &str,
    level: &str,
    keys: &[String],
) -> std::process::Output {
    let port = strata.dicom_port.to_string();
    let mut args = vec!["-v", "-S", "-aec", "STRATA", "-aem", destination, "-k"];
    let level = format!("QueryRetrieveLevel={level}");
    args.push(&level);
    for key in keys {
        args.push("-k");
        args.push(key);
    }
    args.extend_from_slice(&["127.0.0.1", &port]);
    dcmtk::run("movescu", &args)
}

/// DCMTK getscu into a new directory `dir` (returned), failing the test unless it succeeds.
fn getscu(strata: &Strata, dir: &Path, keys: &[String]) -> PathBuf {
    std::fs::create_dir_all(dir).expect("mkdir");
    let out = dir.display().to_string();
    let port = strata.dicom_port.to_string();
    let mut args = vec!["-S", "-aec", "STRATA", "-od", out.as_str()];
    for key in keys {
        args.push("-k");
        args.push(key);
    }
    args.extend_from_slice(&["127.0.0.1", &port]);
    let output = dcmtk::run("getscu", &args);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    dir.to_path_buf()
}

async fn study_availability(index: &Index, study: &str) -> Availability {
    index
        .study(study)
        .await
        .expect("study")
        .expect("exists")
        .availability
}

async fn a_study_goes_nearline_on_s3_is_retrieved_from_there_and_restored(backend: Backend) {
    let place = S3Place::shared();
    let scratch = tempfile::tempdir().expect("tempdir");
    let target = place.target_toml("cloud", scratch.path(), "");
    study_round_trip(backend, &target, scratch).await;
}

async fn a_study_goes_nearline_in_a_directory_is_retrieved_from_there_and_restored(
    backend: Backend,
) {
    // The embedded default target: `local` under the data directory.
    study_round_trip(backend, "", tempfile::tempdir().expect("tempdir")).await;
}

/// ingest → copy → (held back until verified) → verify → deletion by rule → NEARLINE in
/// C-FIND → IMAGE-level C-GET by range → study C-MOVE from one pack fetch → restore → ONLINE.
async fn study_round_trip(backend: Backend, target_toml: &str, scratch: tempfile::TempDir) {
    let config = format!("{target_toml}{}", lifecycle_toml("", &retention_rule(true)));
    let mut strata = Strata::start(backend, &config).await;
    let study = ingest(&strata, 1, 3, 64).await.remove(0);
    let sent = sent_data_sets(&corpus_of(&strata, 1, 3, 64));
    let index = strata.index().await;
    assert_eq!(find_availability(&strata, &study), "ONLINE");

    // Copied but not verified: the rule wants the study, the hard constraint holds it back.
    strata.cli_ok(&["copy", "--study", &study, "--wait"]);
    let preview = strata.cli_ok(&["retention", "preview", "--json"]);
    let entry: serde_json::Value =
        serde_json::from_str(preview.lines().next().expect("one study")).expect("json");
    assert_eq!(entry["delete"], false, "{entry}");
    assert!(
        entry["reasons"][0]
            .as_str()
            .expect("reason")
            .contains("6 of 6 instances have no verified NEARLINE copy (6 awaiting verify-sync"),
        "{entry}"
    );
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(
        online_files(&strata).len(),
        6,
        "nothing deleted before verification"
    );

    // Verified: the rule (every second) deletes the ONLINE copies.
    strata.cli_ok(&["verify", "--study", &study, "--wait"]);
    wait_for(
        "the study to become NEARLINE",
        Duration::from_secs(60),
        &strata,
        || async { study_availability(&index, &study).await == "NEARLINE" },
    )
    .await;
    wait_for(
        "the ONLINE files to go",
        Duration::from_secs(30),
        &strata,
        || async { online_files(&strata).is_empty() },
    )
    .await;
    assert_eq!(find_availability(&strata, &study), "NEARLINE");
    let deletes = jobs_of(&index, &study, JobType::Delete).await;
    assert!(
        deletes
            .iter()
            .all(|j| j.created_by == "retention:idle" && j.state == "DONE"),
        "{deletes:?}"
    );

    // One instance at IMAGE level: a ranged read of just that member, no pack fetch.
    let one = index
        .retrieve_locations(Level::Study, std::slice::from_ref(&study))
        .await
        .expect("locations")
        .remove(0);
    assert!(one.nearline.is_some(), "served from NEARLINE");
    let (fetches, ranges, bytes) = (
        strata.metric("strata_nearline_pack_fetches_total"),
        strata.metric("strata_nearline_member_range_reads_total"),
        strata.metric("strata_nearline_bytes_read_total"),
    );
    let got = getscu(
        &strata,
        &scratch.path().join("got"),
        &[
            "QueryRetrieveLevel=IMAGE".into(),
            format!("StudyInstanceUID={study}"),
            format!("SeriesInstanceUID={}", one.series_uid),
            format!("SOPInstanceUID={}", one.sop_uid),
        ],
    );
    let received = files_below(&got);
    assert_eq!(received.len(), 1);
    assert_eq!(
        data_set_sha256(&received[0]),
        sent[&one.sop_uid],
        "byte-identical from a ranged read"
    );
    assert_eq!(
        strata.metric("strata_nearline_member_range_reads_total"),
        ranges + 1
    );
    assert_eq!(
        strata.metric("strata_nearline_pack_fetches_total"),
        fetches,
        "no pack fetched for one instance"
    );
    let read = strata.metric("strata_nearline_bytes_read_total") - bytes;
    assert!(
        read <= one.size_bytes as u64 + 65_536,
        "read {read} bytes for a {}-byte instance",
        one.size_bytes
    );

    // The whole study with C-MOVE: one pack fetch, every instance byte-identical.
    let destination = Storescp::start(&scratch.path().join("moved"), "RECV", true);
    strata.cli_ok(&[
        "ae",
        "add",
        "RECV",
        "127.0.0.1",
        &destination.port.to_string(),
    ]);
    let output = movescu(
        &strata,
        "RECV",
        "STUDY",
        &[format!("StudyInstanceUID={study}")],
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let moved = destination.received(6);
    assert_eq!(moved.len(), 6);
    for (uid, file) in &moved {
        assert_eq!(
            &data_set_sha256(file),
            &sent[uid],
            "{uid} byte-identical from NEARLINE"
        );
    }
    assert_eq!(
        strata.metric("strata_nearline_pack_fetches_total"),
        fetches + 1
    );

    // The whole study with getscu (C-GET) too, from the cached pack: no second fetch.
    let got_all = getscu(
        &strata,
        &scratch.path().join("got-all"),
        &[
            "QueryRetrieveLevel=STUDY".into(),
            format!("StudyInstanceUID={study}"),
        ],
    );
    let gotten = files_below(&got_all);
    assert_eq!(gotten.len(), 6);
    for file in &gotten {
        assert_eq!(
            data_set_sha256(file),
            sent[&sop_instance_uid(file)],
            "C-GET byte-identical from NEARLINE"
        );
    }
    assert_eq!(
        strata.metric("strata_nearline_pack_fetches_total"),
        fetches + 1,
        "served from the retrieve cache"
    );
    assert!(strata.metric("strata_retrieve_cache_hits_total") >= 1);

    // Restore (with the rule switched off, or it would free the study again at once).
    let text = std::fs::read_to_string(&strata.config_path).expect("config");
    std::fs::write(
        &strata.config_path,
        text.replace("enabled = true", "enabled = false"),
    )
    .expect("config");
    strata.restart();
    strata.cli_ok(&["restore", "--study", &study, "--wait"]);
    assert_eq!(study_availability(&index, &study).await, "ONLINE");
    assert_eq!(find_availability(&strata, &study), "ONLINE");
    let restored = online_files(&strata);
    assert_eq!(restored.len(), 6);
    let mut restored_sets: Vec<String> = restored.iter().map(|f| data_set_sha256(f)).collect();
    let mut sent_sets: Vec<String> = sent.values().cloned().collect();
    restored_sets.sort();
    sent_sets.sort();
    assert_eq!(
        restored_sets, sent_sets,
        "restored files are the stored objects"
    );
    let accessed = index
        .study(&study)
        .await
        .expect("q")
        .expect("study")
        .last_accessed_at;
    assert!(
        archive_core::index::now_millis() - accessed < 60_000,
        "restore counts as an access"
    );
}

/// Every ONLINE file row points at an existing file, and every stored file has a row.
async fn assert_rows_match_files(strata: &Strata, index: &Index, studies: &[String]) {
    let mut indexed = Vec::new();
    for study in studies {
        for location in index.study_locations(study).await.expect("locations") {
            assert!(
                location.full_path().exists(),
                "row points at a missing file: {}",
                location.full_path().display()
            );
            indexed.push(location.full_path());
        }
        assert!(
            index
                .deleting_files(study)
                .await
                .expect("deleting")
                .is_empty(),
            "deletion finished"
        );
    }
    indexed.sort();
    assert_eq!(online_files(strata), indexed, "no orphaned file");
}

async fn deletion_is_crash_safe(backend: Backend) {
    let place = S3Place::shared();
    let scratch = tempfile::tempdir().expect("tempdir");
    let config = format!(
        "{}{}",
        place.target_toml("cloud", scratch.path(), ""),
        lifecycle_toml("", "")
    );
    let mut strata = Strata::start(backend, &config).await;
    let studies = ingest(&strata, 2, 20, 64).await;
    let index = strata.index().await;
    for study in &studies {
        strata.cli_ok(&["copy", "--study", study, "--wait"]);
        strata.cli_ok(&["verify", "--study", study, "--wait"]);
    }

    // A crash after step 1 and half of step 2: rows DELETING, half the files unlinked.
    strata.kill9();
    let start = index
        .begin_online_deletion(&studies[0], "")
        .await
        .expect("mark");
    assert_eq!((start.marked, start.kept_unverified), (40, 0));
    assert_eq!(
        study_availability(&index, &studies[0]).await,
        "NEARLINE",
        "availability changes with the mark"
    );
    let deleting = index.deleting_files(&studies[0]).await.expect("deleting");
    for (_, path) in deleting.iter().take(20) {
        std::fs::remove_file(path).expect("unlink");
    }
    // And a real kill -9 while the other study's deletion runs.
    strata.restart();
    strata.cli_ok(&["delete-online", "--study", &studies[1]]);
    tokio::time::sleep(Duration::from_millis(150)).await;
    strata.kill9();
    strata.restart();
    for study in &studies {
        wait_for(
            "the deletion to finish",
            Duration::from_secs(60),
            &strata,
            || async {
                index.deleting_files(study).await.expect("q").is_empty()
                    && study_availability(&index, study).await == "NEARLINE"
                    && index.study_locations(study).await.expect("q").is_empty()
            },
        )
        .await;
    }
    assert_rows_match_files(&strata, &index, &studies).await;
    assert!(online_files(&strata).is_empty());
}

on_both_backends!(
    a_study_goes_nearline_on_s3_is_retrieved_from_there_and_restored,
    a_study_goes_nearline_in_a_directory_is_retrieved_from_there_and_restored,
    deletion_is_crash_safe,
);

/// Ten movescu of the same NEARLINE study at once: one GET of the pack (Strata's metrics and
/// Garage's request log agree); then more studies than the cache holds: it stays under its cap.
#[tokio::test(flavor = "multi_thread")]
async fn concurrent_moves_fetch_a_pack_once_and_the_cache_stays_under_its_cap() {
    let garage = Garage::start();
    let place = garage.place();
    let scratch = tempfile::tempdir().expect("tempdir");
    // Packs of ~800 KB (6 × 128 KiB); the cache holds one.
    let config = format!(
        "{}{}[nearline]\ncache_size = \"1MiB\"\n",
        place.target_toml("cloud", scratch.path(), ""),
        lifecycle_toml("", "")
    );
    let strata = Strata::start(Backend::Sqlite, &config).await;
    let studies = ingest(&strata, 3, 3, 256).await;
    let index = strata.index().await;
    for study in &studies {
        strata.cli_ok(&["copy", "--study", study, "--wait"]);
        strata.cli_ok(&["verify", "--study", study, "--wait"]);
        strata.cli_ok(&["delete-online", "--study", study, "--wait"]);
        assert_eq!(study_availability(&index, study).await, "NEARLINE");
    }
    let destination = Storescp::start(&scratch.path().join("moved"), "RECV", true);
    strata.cli_ok(&[
        "ae",
        "add",
        "RECV",
        "127.0.0.1",
        &destination.port.to_string(),
    ]);

    let key = format!(
        "{}{}",
        place.prefix,
        packs(&index, &studies[0]).await[0].object_key
    );
    let fetches = strata.metric("strata_nearline_pack_fetches_total");
    // verify-sync read the pack once already.
    let gets_before = garage.object_gets(&key);
    let movers: Vec<_> = (0..10)
        .map(|_| {
            let port = strata.dicom_port;
            let study = studies[0].clone();
            std::thread::spawn(move || {
                dcmtk::run(
                    "movescu",
                    &[
                        "-v",
                        "-S",
                        "-aec",
                        "STRATA",
                        "-aem",
                        "RECV",
                        "-k",
                        "QueryRetrieveLevel=STUDY",
                        "-k",
                        &format!("StudyInstanceUID={study}"),
                        "127.0.0.1",
                        &port.to_string(),
                    ],
                )
            })
        })
        .collect();
    for mover in movers {
        let output = mover.join().expect("movescu thread");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(output.status.success(), "{text}");
        // A final Success means every sub-operation completed (failures make it a Warning).
        assert!(text.contains("Final Move Response (Success)"), "{text}");
    }
    assert_eq!(
        strata.metric("strata_nearline_pack_fetches_total"),
        fetches + 1,
        "one fetch for ten moves"
    );
    assert_eq!(
        garage.object_gets(&key),
        gets_before + 1,
        "Garage served the pack once"
    );

    // Three studies through a cache that holds one: evictions, never over the cap.
    let cap = 1u64 << 20;
    for study in &studies {
        let output = movescu(
            &strata,
            "RECV",
            "STUDY",
            &[format!("StudyInstanceUID={study}")],
        );
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(strata.metric("strata_retrieve_cache_bytes") <= cap);
        let on_disk: u64 = files_below(&strata.data_dir().join("retrieve-cache"))
            .iter()
            .map(|f| f.metadata().map(|m| m.len()).unwrap_or(0))
            .sum();
        assert!(on_disk <= cap, "cache holds {on_disk} bytes, cap {cap}");
    }
    assert!(strata.metric("strata_retrieve_cache_evictions_total") >= 2);

    // The target down: the move ends (no hang) with failed sub-operations and a reason.
    let mut garage = garage;
    garage.stop();
    let started = std::time::Instant::now();
    let output = movescu(
        &strata,
        "RECV",
        "STUDY",
        &[format!("StudyInstanceUID={}", studies[0])],
    );
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        started.elapsed() < Duration::from_secs(120),
        "the move ended"
    );
    assert!(
        text.contains("Final Move Response (Failed")
            || text.contains("Final Move Response (Warning"),
        "{text}"
    );
    assert!(
        strata.log().contains("cannot read its NEARLINE copy"),
        "the reason is logged"
    );
}
