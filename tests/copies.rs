//! More than one copy: a copy rule naming two targets, `lifecycle.min_archived_copies = 2`
//! holding ONLINE deletion back until both hold a verified copy, and retrieval falling back
//! to the second target (by priority) when the first cannot be read.

#[macro_use]
mod common;

use archive_core::jobs::JobType;
use common::dcmtk::Storescp;
use common::lifecycle::*;
use common::s3::Garage;
use common::{data_set_sha256, dcmtk, files_below, sop_instance_uid, Backend, Strata};
use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

fn online_files(strata: &Strata) -> Vec<PathBuf> {
    files_below(&strata.online_dir())
        .into_iter()
        .filter(|p| !p.components().any(|c| c.as_os_str() == ".incoming"))
        .collect()
}

async fn two_copies_before_deletion_and_retrieval_survives_a_target_down(backend: Backend) {
    let mut garage = Garage::start();
    let place = garage.place();
    let scratch = tempfile::tempdir().expect("tempdir");
    let vault = scratch.path().join("vault");
    // S3 is preferred for reads (priority 0), the directory is the fallback (priority 5).
    let config = format!(
        "{}[[nearline.targets]]\nname = \"vault\"\nkind = \"filesystem\"\npath = \"{}\"\npriority = 5\n\
         {}\nmin_archived_copies = 2\n\
         [[lifecycle.copy_rules]]\nname = \"both\"\ntargets = [\"cloud\", \"vault\"]\n\
         schedule = \"* * * * * *\"\nstable_minutes = 0\nenabled = false\n\
         [[lifecycle.retention_rules]]\nname = \"idle\"\nschedule = \"* * * * * *\"\n\
         not_accessed_days = 0\n",
        place.target_toml("cloud", scratch.path(), "priority = 0"),
        vault.display(),
        lifecycle_toml("", "")
    );
    let mut strata = Strata::start(backend, &config).await;
    let study = ingest(&strata, 1, 3, 64).await.remove(0);
    let sent: HashMap<String, String> = files_below(&corpus_of(&strata, 1, 3, 64))
        .into_iter()
        .map(|f| (sop_instance_uid(&f), data_set_sha256(&f)))
        .collect();
    // The rule, enabled now that the study is in, queues a copy to each of its targets.
    std::fs::write(
        &strata.config_path,
        std::fs::read_to_string(&strata.config_path)
            .expect("config")
            .replace("enabled = false\n", ""),
    )
    .expect("enable the rule");
    strata.restart();
    let index = strata.index().await;
    wait_for(
        "a copy job per target",
        Duration::from_secs(60),
        &strata,
        || async {
            let copies = jobs_of(&index, &study, JobType::Copy).await;
            let mut targets: Vec<String> = copies.iter().map(|j| j.target_name.clone()).collect();
            targets.sort();
            targets == ["cloud", "vault"] && copies.iter().all(|j| j.state == "DONE")
        },
    )
    .await;

    // One verified copy is not enough: the retention rule (every second) waits.
    strata.cli_ok(&["verify", "--study", &study, "--target", "cloud", "--wait"]);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(
        online_files(&strata).len(),
        6,
        "nothing deleted with one copy"
    );
    let preview = strata.cli_ok(&["retention", "preview", "--json"]);
    assert!(
        preview.contains("fewer than 2 verified NEARLINE copies"),
        "{preview}"
    );

    // The second verified copy: now the ONLINE files go.
    strata.cli_ok(&["verify", "--study", &study, "--target", "vault", "--wait"]);
    wait_for(
        "the ONLINE files to go",
        Duration::from_secs(60),
        &strata,
        || async { online_files(&strata).is_empty() },
    )
    .await;

    // S3 down: C-MOVE and a single-instance C-GET are served from the directory target.
    garage.stop();
    let fallbacks = strata.metric("strata_nearline_fallbacks_total");
    let destination = Storescp::start(&scratch.path().join("moved"), "RECV", true);
    strata.cli_ok(&[
        "ae",
        "add",
        "RECV",
        "127.0.0.1",
        &destination.port.to_string(),
    ]);
    dcmtk::move_study(strata.dicom_port, "RECV", &study, &|| strata.log());
    let port = strata.dicom_port.to_string();
    let key = format!("StudyInstanceUID={study}");
    let moved = destination.received(6);
    assert_eq!(moved.len(), 6);
    for (uid, file) in &moved {
        assert_eq!(&data_set_sha256(file), &sent[uid], "{uid} byte-identical");
    }
    assert!(
        strata.metric("strata_nearline_fallbacks_total") > fallbacks,
        "the S3 copy was tried first, then the directory's"
    );
    let (uid, _) = sent.iter().next().expect("an instance");
    let got = scratch.path().join("got");
    std::fs::create_dir_all(&got).expect("mkdir");
    let got_text = got.display().to_string();
    let image = format!("SOPInstanceUID={uid}");
    let output = dcmtk::run(
        "getscu",
        &[
            "-S",
            "-aec",
            "STRATA",
            "-od",
            &got_text,
            "-k",
            "QueryRetrieveLevel=IMAGE",
            "-k",
            &key,
            "-k",
            &image,
            "127.0.0.1",
            &port,
        ],
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let received = files_below(&got);
    assert_eq!(received.len(), 1);
    assert_eq!(&data_set_sha256(&received[0]), &sent[uid.as_str()]);
    garage.resume();
}

on_both_backends!(two_copies_before_deletion_and_retrieval_survives_a_target_down);
