//! Helpers for the lifecycle tests (NEARLINE copies, retention, retrieval from NEARLINE).

use super::{dcmtk, Strata};
use archive_core::index::Index;
use archive_core::jobs::{Job, JobFilter, JobType};
use archive_core::nearline::PackRow;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Fast lifecycle for tests: short polls, leases and backoff; verify-sync only if asked.
pub fn lifecycle_toml(verify_schedule: &str, rules: &str) -> String {
    format!(
        "[lifecycle]\nworkers = 2\npoll_interval_ms = 100\nlease_secs = 3\nbackoff_base_secs = 1\n\
         backoff_max_secs = 2\nverify_schedule = \"{verify_schedule}\"\n{rules}\n"
    )
}

pub fn copy_rule(target: &str) -> String {
    format!(
        "[[lifecycle.copy_rules]]\nname = \"everything\"\ntarget = \"{target}\"\n\
         schedule = \"* * * * * *\"\nstable_minutes = 0\n"
    )
}

/// `config` with every copy rule disabled: a test ingests under it, then calls
/// [`enable_copy_rules`], so a rule firing every second cannot copy a study half-received
/// (with `stable_minutes = 0` that would rightly give a second pack for the late instances).
pub fn with_copy_rules_paused(config: &str) -> String {
    config.replace(
        "stable_minutes = 0\n",
        "stable_minutes = 0\nenabled = false\n",
    )
}

/// Restarts `strata` with the rules of `config` enabled (see [`with_copy_rules_paused`]).
pub fn enable_copy_rules(strata: &mut Strata, config: &str) {
    let paused = with_copy_rules_paused(config);
    let current = std::fs::read_to_string(&strata.config_path).expect("config");
    assert!(current.contains(&paused), "started with the rules paused");
    std::fs::write(&strata.config_path, current.replace(&paused, config)).expect("enable rules");
    strata.restart();
}

/// Where [`ingest`] writes the corpus it sends.
pub fn corpus_of(
    strata: &Strata,
    patients: u32,
    instances: u32,
    matrix: u32,
) -> std::path::PathBuf {
    strata
        .dir
        .path()
        .join(format!("corpus-{patients}-{instances}-{matrix}"))
}

/// Generates `patients` studies (2 series of `instances` each) and sends them with storescu;
/// returns the study UIDs.
pub async fn ingest(strata: &Strata, patients: u32, instances: u32, matrix: u32) -> Vec<String> {
    let corpus = corpus_of(strata, patients, instances, matrix);
    strata.cli_ok(&[
        "generate",
        "--out",
        &corpus.display().to_string(),
        "--patients",
        &patients.to_string(),
        "--instances-per-series",
        &instances.to_string(),
        "--series-per-study",
        "2",
        "--matrix",
        &matrix.to_string(),
        "--seed",
        &strata.dicom_port.to_string(),
    ]);
    let output = dcmtk::storescu_dir(strata.dicom_port, &corpus, &[]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let index = strata.index().await;
    let found = index
        .find(&study_level_query())
        .await
        .expect("find studies");
    let uids: Vec<String> = found
        .iter()
        .map(|row| {
            row.get(&archive_core::query::Attr::StudyInstanceUid)
                .cloned()
                .unwrap_or_default()
        })
        .collect();
    assert_eq!(uids.len(), patients as usize, "every study indexed");
    uids
}

pub fn study_level_query() -> archive_core::query::FindQuery {
    use archive_core::query::{Attr, FindQuery, Level, Matcher, QueryKey};
    FindQuery {
        level: Level::Study,
        keys: vec![QueryKey {
            attr: Attr::StudyInstanceUid,
            matcher: Matcher::Universal,
        }],
        limit: 10_000,
        offset: None,
    }
}

pub async fn packs(index: &Index, study: &str) -> Vec<PackRow> {
    index.packs_of_study(study).await.expect("packs")
}

pub async fn wait_for<F, Fut>(what: &str, timeout: Duration, strata: &Strata, mut done: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while !done().await {
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}\n{}",
            strata.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub async fn jobs_of(index: &Index, study: &str, kind: JobType) -> Vec<Job> {
    index
        .list_jobs(&JobFilter {
            study_uid: Some(study.into()),
            job_type: Some(kind),
            ..Default::default()
        })
        .await
        .expect("jobs")
}

/// Member path → (size, SHA-256) of the study's ONLINE files, hashed from the files themselves.
pub async fn online_members(index: &Index, study: &str) -> BTreeMap<String, (u64, String)> {
    index
        .study_locations(study)
        .await
        .expect("locations")
        .into_iter()
        .map(|l| {
            let bytes = std::fs::read(l.full_path()).expect("online file");
            (
                format!("{}/{}.dcm", l.series_uid, l.sop_uid),
                (bytes.len() as u64, hex::encode(Sha256::digest(&bytes))),
            )
        })
        .collect()
}
