//! The NEARLINE tier end to end, on SQLite and PostgreSQL, against Garage (S3) and a
//! filesystem target: ingest → copy (by schedule and by CLI) → verify-sync → ARCHIVED, packs
//! read back with Python's tarfile, and the faults an archive must survive: S3 down during an
//! upload, a pack damaged in the bucket, kill -9 mid-upload, two nodes on one database.

#[macro_use]
mod common;

use archive_core::index::Index;
use archive_core::jobs::{Job, JobState, JobType};
use archive_core::nearline::{PackRow, PackStatus};
use common::lifecycle::*;
use common::s3::{Garage, S3Place};
use common::{dcmtk, Backend, Strata};
use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

/// Checks a pack, as read by Python's tarfile, against the ONLINE files: manifest first and
/// listing every member, every member byte-identical.
fn assert_pack_matches(pack: &serde_json::Value, online: &BTreeMap<String, (u64, String)>) {
    let names: Vec<&str> = pack["names"]
        .as_array()
        .expect("names")
        .iter()
        .filter_map(|n| n.as_str())
        .collect();
    assert_eq!(
        names.first(),
        Some(&"MANIFEST.json"),
        "manifest is the first member"
    );
    let members = pack["members"].as_object().expect("members");
    let in_pack: BTreeMap<String, (u64, String)> = members
        .iter()
        .map(|(name, m)| {
            (
                name.clone(),
                (
                    m["size"].as_u64().expect("size"),
                    m["sha256"].as_str().expect("sha").to_string(),
                ),
            )
        })
        .collect();
    assert_eq!(
        &in_pack, online,
        "pack members are the ONLINE files, byte for byte"
    );
    let manifest: BTreeMap<String, (u64, String)> = pack["manifest"]["members"]
        .as_array()
        .expect("manifest members")
        .iter()
        .map(|m| {
            (
                m["path"].as_str().expect("path").to_string(),
                (
                    m["size"].as_u64().expect("size"),
                    m["sha256"].as_str().expect("sha").to_string(),
                ),
            )
        })
        .collect();
    assert_eq!(
        &manifest, online,
        "the manifest lists every member with size and SHA-256"
    );
    for m in pack["manifest"]["members"].as_array().expect("members") {
        let uid = m["sop_instance_uid"].as_str().expect("uid");
        assert!(m["path"]
            .as_str()
            .expect("path")
            .ends_with(&format!("{uid}.dcm")));
    }
}

async fn copies_by_schedule_to_s3_and_verifies(backend: Backend) {
    let place = S3Place::shared();
    let scratch = tempfile::tempdir().expect("tempdir");
    let config = format!(
        "{}{}",
        place.target_toml("cloud", scratch.path(), ""),
        lifecycle_toml("*/2 * * * * *", &copy_rule("cloud"))
    );
    let mut strata = Strata::start(backend, &with_copy_rules_paused(&config)).await;
    let studies = ingest(&strata, 2, 3, 64).await;
    enable_copy_rules(&mut strata, &config);
    let index = strata.index().await;
    for study in &studies {
        wait_for(
            "an ARCHIVED pack",
            Duration::from_secs(60),
            &strata,
            || async {
                packs(&index, study)
                    .await
                    .iter()
                    .any(|p| p.status == PackStatus::Archived)
            },
        )
        .await;
        let copies = jobs_of(&index, study, JobType::Copy).await;
        assert!(
            copies.iter().all(|j| j.created_by == "rule:everything"),
            "{copies:?}"
        );
        let study_packs = packs(&index, study).await;
        assert_eq!(study_packs.len(), 1, "one pack per study: {study_packs:?}");
        let pack = &study_packs[0];
        assert!(pack.verified_at.is_some());
        assert_eq!(pack.member_count, 6);
        let keys = place.keys(study);
        assert_eq!(keys, vec![format!("{}{}", place.prefix, pack.object_key)]);
        assert_pack_matches(
            &place.read_pack(&keys[0]),
            &online_members(&index, study).await,
        );
    }
    // Every firing after the copies finds nothing new: no further jobs or packs.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    for study in &studies {
        assert_eq!(jobs_of(&index, study, JobType::Copy).await.len(), 1);
        assert_eq!(packs(&index, study).await.len(), 1);
    }
}

async fn copies_by_cli_to_a_directory_and_verifies_only_when_asked(backend: Backend) {
    // Embedded default target `local` under the data directory; no verify schedule.
    let strata = Strata::start(backend, &lifecycle_toml("", "")).await;
    let studies = ingest(&strata, 1, 2, 64).await;
    let study = &studies[0];
    let index = strata.index().await;
    let out = strata.cli_ok(&["copy", "--study", study, "--wait", "--timeout-secs", "60"]);
    assert!(out.contains("DONE"), "{out}");
    let before = packs(&index, study).await;
    assert_eq!(before.len(), 1);
    assert_eq!(
        before[0].status,
        PackStatus::ToArchive,
        "not ARCHIVED before a read-back"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(packs(&index, study).await[0].status, PackStatus::ToArchive);

    strata.cli_ok(&["verify", "--study", study, "--wait", "--timeout-secs", "60"]);
    let after = packs(&index, study).await;
    assert_eq!(after[0].status, PackStatus::Archived);

    let tar = strata
        .data_dir()
        .join("nearline")
        .join(&after[0].object_key);
    let read = dcmtk::python(
        &[
            "-c",
            "import sys, json, tarfile, hashlib\n\
             t = tarfile.open(sys.argv[1], mode='r:')\nnames = t.getnames()\n\
             print(json.dumps({'names': names, 'manifest': json.load(t.extractfile(names[0])), \
             'members': {m.name: {'size': m.size, 'sha256': hashlib.sha256(t.extractfile(m).read()).hexdigest()} for m in t.getmembers()[1:]}}))",
            &tar.display().to_string(),
        ],
        None,
    );
    let pack: serde_json::Value = serde_json::from_slice(&read.stdout).expect("json");
    assert_pack_matches(&pack, &online_members(&index, study).await);

    let listed = strata.cli_ok(&["jobs", "list"]);
    assert!(
        listed.contains("COPY") && listed.contains("VERIFY"),
        "{listed}"
    );
    let json = strata.cli_ok(&["jobs", "list", "--json", "--state", "done"]);
    assert_eq!(json.lines().count(), 2, "{json}");

    // New instances of an already packed study go into an additional pack, alone.
    let again = ingest(&strata, 1, 3, 64).await;
    assert_eq!(&again[0], study);
    strata.cli_ok(&["copy", "--study", study, "--wait", "--timeout-secs", "60"]);
    let now = packs(&index, study).await;
    assert_eq!(now.len(), 2, "{now:?}");
    assert_eq!((now[0].member_count, now[1].member_count), (4, 2));
    assert_eq!(now[1].status, PackStatus::ToArchive);

    // Bad requests are refused with a clear message, nothing queued.
    let unknown = strata.cli(&["copy", "--study", "1.2.3.4.5"]);
    assert!(!unknown.status.success());
    assert!(String::from_utf8_lossy(&unknown.stderr)
        .contains("no study with Study Instance UID 1.2.3.4.5"));
    let no_target = strata.cli(&["copy", "--study", study, "--target", "tape"]);
    assert!(String::from_utf8_lossy(&no_target.stderr).contains("no nearline target named `tape`"));
}

async fn a_pack_damaged_in_the_bucket_fails_verification_and_is_copied_again(backend: Backend) {
    let place = S3Place::shared();
    let scratch = tempfile::tempdir().expect("tempdir");
    let config = format!(
        "{}{}",
        place.target_toml("cloud", scratch.path(), ""),
        lifecycle_toml("", "")
    );
    let strata = Strata::start(backend, &config).await;
    let study = ingest(&strata, 1, 3, 64).await.remove(0);
    let index = strata.index().await;
    strata.cli_ok(&["copy", "--study", &study, "--wait"]);
    let first = packs(&index, &study).await.remove(0);
    place.corrupt(&format!("{}{}", place.prefix, first.object_key));

    let verify = strata.cli(&["verify", "--study", &study, "--wait"]);
    assert!(
        !verify.status.success(),
        "verification of a damaged pack must fail"
    );
    let after = packs(&index, &study).await;
    assert_eq!(after[0].status, PackStatus::VerifyFailed);
    assert!(
        after[0].error.contains("SHA-256"),
        "the error says what did not match: {}",
        after[0].error
    );

    // verify-failed queued a new copy, which a worker runs at once.
    wait_for(
        "a second pack",
        Duration::from_secs(60),
        &strata,
        || async {
            packs(&index, &study)
                .await
                .iter()
                .any(|p| p.status == PackStatus::ToArchive)
        },
    )
    .await;
    let copies = jobs_of(&index, &study, JobType::Copy).await;
    assert!(
        copies.iter().any(|j| j.created_by == "verify-failed"),
        "{copies:?}"
    );
    strata.cli_ok(&["verify", "--study", &study, "--wait"]);
    let statuses: Vec<PackStatus> = packs(&index, &study)
        .await
        .into_iter()
        .map(|p| p.status)
        .collect();
    assert_eq!(
        statuses,
        vec![PackStatus::VerifyFailed, PackStatus::Archived]
    );
}

/// Waits until the study's copy job has uploaded some bytes (so it is mid-upload).
async fn wait_mid_upload(strata: &Strata, index: &Index, study: &str) -> Job {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let jobs = jobs_of(index, study, JobType::Copy).await;
        if let Some(job) = jobs.first() {
            if job.state == JobState::Running
                && job.done_bytes > 0
                && job.done_bytes < job.total_bytes
            {
                return job.clone();
            }
            assert!(
                job.state != JobState::Done,
                "the copy finished before the fault was injected; make the study larger"
            );
        }
        assert!(
            Instant::now() < deadline,
            "copy never started\n{}",
            strata.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Starts Strata with an S3 target at `place` that uploads slowly, ingests a big study and
/// returns once its copy job is mid-upload.
async fn big_copy_under_way(
    backend: Backend,
    place: &S3Place,
) -> (Strata, Index, String, tempfile::TempDir) {
    let scratch = tempfile::tempdir().expect("tempdir");
    let config = format!(
        "{}{}",
        place.target_toml("cloud", scratch.path(), SLOW_UPLOAD),
        lifecycle_toml("", "")
    );
    let strata = Strata::start(backend, &config).await;
    let study = ingest(&strata, BIG.0, BIG.1, BIG.2).await.remove(0);
    let index = strata.index().await;
    strata.cli_ok(&["copy", "--study", &study]);
    wait_mid_upload(&strata, &index, &study).await;
    (strata, index, study, scratch)
}

/// Waits until the study's (latest) copy job is in `state`.
async fn wait_for_copy(strata: &Strata, index: &Index, study: &str, state: JobState, seconds: u64) {
    wait_for(
        &format!("the copy job to be {state}"),
        Duration::from_secs(seconds),
        strata,
        || async { jobs_of(index, study, JobType::Copy).await[0].state == state },
    )
    .await;
}

/// A study of ~130 MB uploads in 5 MiB parts one at a time: a second or more mid-upload.
const BIG: (u32, u32, u32) = (1, 64, 1024);
const SLOW_UPLOAD: &str = "part_size = \"5MiB\"\nupload_concurrency = 1\n";

async fn an_s3_outage_during_an_upload_is_retried_until_it_succeeds(backend: Backend) {
    let mut garage = Garage::start();
    let place = garage.place();
    let (strata, index, study, _scratch) = big_copy_under_way(backend, &place).await;
    garage.stop();
    // The attempt fails and is retried with backoff while S3 is away.
    wait_for_copy(&strata, &index, &study, JobState::Queued, 60).await;
    let failed = jobs_of(&index, &study, JobType::Copy).await.remove(0);
    assert!(!failed.last_error.is_empty());
    tokio::time::sleep(Duration::from_secs(3)).await;
    garage.resume();
    wait_for_copy(&strata, &index, &study, JobState::Done, 120).await;
    let done = jobs_of(&index, &study, JobType::Copy).await.remove(0);
    assert!(done.attempts >= 2, "{done:?}");
    assert!(
        packs(&index, &study)
            .await
            .iter()
            .all(|p| p.status != PackStatus::Archived),
        "nothing is ARCHIVED without a read-back"
    );
    strata.cli_ok(&["verify", "--study", &study, "--wait"]);
    assert_one_live_copy(&index, &place, &study).await;
}

async fn kill_9_mid_upload_resumes_without_duplicate_packs(backend: Backend) {
    let place = S3Place::shared();
    let (mut strata, index, study, _scratch) = big_copy_under_way(backend, &place).await;
    strata.kill9();
    assert_eq!(packs(&index, &study).await[0].status, PackStatus::Uploading);
    strata.restart();
    wait_for_copy(&strata, &index, &study, JobState::Done, 120).await;
    strata.cli_ok(&["verify", "--study", &study, "--wait"]);
    let statuses: Vec<PackStatus> = packs(&index, &study)
        .await
        .into_iter()
        .map(|p| p.status)
        .collect();
    assert_eq!(statuses, vec![PackStatus::Abandoned, PackStatus::Archived]);
    assert_one_live_copy(&index, &place, &study).await;
}

/// Exactly one ARCHIVED pack, it is the only object of the study in the bucket, no
/// unfinished multipart upload is left, and it matches the ONLINE files.
async fn assert_one_live_copy(index: &Index, place: &S3Place, study: &str) {
    let live: Vec<PackRow> = packs(index, study)
        .await
        .into_iter()
        .filter(|p| p.status == PackStatus::Archived)
        .collect();
    assert_eq!(live.len(), 1, "{live:?}");
    let keys = place.keys(study);
    assert_eq!(
        keys,
        vec![format!("{}{}", place.prefix, live[0].object_key)]
    );
    assert_eq!(
        place.open_uploads(),
        0,
        "no unfinished multipart upload is left behind"
    );
    assert_pack_matches(
        &place.read_pack(&keys[0]),
        &online_members(index, study).await,
    );
}

on_both_backends!(
    copies_by_schedule_to_s3_and_verifies,
    copies_by_cli_to_a_directory_and_verifies_only_when_asked,
    a_pack_damaged_in_the_bucket_fails_verification_and_is_copied_again,
    an_s3_outage_during_an_upload_is_retried_until_it_succeeds,
    kill_9_mid_upload_resumes_without_duplicate_packs,
);

/// Two nodes on one PostgreSQL, both running the same copy rule: every study is copied
/// exactly once, and both list the same jobs.
#[tokio::test(flavor = "multi_thread")]
async fn two_nodes_on_one_postgres_copy_each_study_once() {
    let place = S3Place::shared();
    let scratch = tempfile::tempdir().expect("tempdir");
    let config = format!(
        "{}{}",
        place.target_toml("cloud", scratch.path(), ""),
        lifecycle_toml("* * * * * *", &copy_rule("cloud"))
    );
    // The rule only starts once all 50 studies are in: node A ingests with the rule disabled.
    let mut a = Strata::start(
        Backend::Postgres,
        &format!(
            "{}\n[dicom]\nmax_associations = 64\n",
            with_copy_rules_paused(&config)
        ),
    )
    .await;
    let studies = ingest(&a, 50, 1, 32).await;
    enable_copy_rules(&mut a, &config);
    let b = Strata::start_on(&a.database_url, &config);
    let index = a.index().await;
    wait_for(
        "50 ARCHIVED studies",
        Duration::from_secs(180),
        &a,
        || async {
            let mut archived = 0;
            for study in &studies {
                archived += usize::from(
                    packs(&index, study)
                        .await
                        .iter()
                        .any(|p| p.status == PackStatus::Archived),
                );
            }
            archived == studies.len()
        },
    )
    .await;
    let mut owners = HashSet::new();
    for study in &studies {
        let study_packs = packs(&index, study).await;
        assert_eq!(
            study_packs.len(),
            1,
            "study copied exactly once: {study_packs:?}"
        );
        let copies = jobs_of(&index, study, JobType::Copy).await;
        assert_eq!(copies.len(), 1, "{copies:?}");
        owners.insert(copies[0].owner_node.clone());
    }
    assert_eq!(
        place.keys("").len(),
        50,
        "50 packs in the bucket, no duplicates"
    );
    let from_a = a.cli_ok(&["jobs", "list", "--json", "--limit", "1000"]);
    let from_b = b.cli_ok(&["jobs", "list", "--json", "--limit", "1000"]);
    let ids = |text: &str| -> Vec<i64> {
        text.lines()
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l).expect("json")["id"]
                    .as_i64()
                    .expect("id")
            })
            .collect()
    };
    assert_eq!(ids(&from_a), ids(&from_b), "both nodes list the same jobs");
    assert!(ids(&from_a).len() >= 100, "50 copies and 50 verifications");
    eprintln!("copy jobs ran on nodes: {owners:?}");
}
