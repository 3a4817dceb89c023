//! The fixity service: a daily byte budget it keeps, and a pack corrupted in the bucket and
//! an ONLINE file changed on disk both found by one scheduled run and repaired from the
//! other copy (a new pack from ONLINE; the file restored from its pack). A pack larger than
//! the budget left is checked a few members a day by range, and a member damaged at its end
//! is found on the day the sampling reaches it.

#[macro_use]
mod common;

use archive_core::audit::{AuditAction, AuditFilter};
use archive_core::jobs::JobType;
use archive_core::nearline::PackStatus;
use common::lifecycle::*;
use common::s3::S3Place;
use common::{http_json, Backend, Strata};
use sha2::{Digest, Sha256};
use std::time::Duration;

fn fixity_settings(schedule: &str, budget: &str) -> String {
    format!(
        "fixity_schedule = \"{schedule}\"\nfixity_cycle_days = 0\n\
         fixity_max_bytes_per_day = \"{budget}\"\n"
    )
}

async fn fixity_keeps_its_budget_and_repairs_what_it_finds(backend: Backend) {
    let place = S3Place::shared();
    let scratch = tempfile::tempdir().expect("tempdir");
    let vault = scratch.path().join("vault");
    let targets = format!(
        "{}[[nearline.targets]]\nname = \"vault\"\nkind = \"filesystem\"\npath = \"{}\"\n",
        place.target_toml("cloud", scratch.path(), ""),
        vault.display()
    );
    // No schedule yet: one run on request, with a budget of about half of what is stored.
    let budget = 120 * 1024;
    let first = lifecycle_toml("", &fixity_settings("", "120KiB"));
    let mut strata = Strata::start(backend, &format!("{targets}{first}")).await;
    let studies = ingest(&strata, 2, 2, 64).await;
    for study in &studies {
        for target in ["cloud", "vault"] {
            strata.cli_ok(&["copy", "--study", study, "--target", target, "--wait"]);
            strata.cli_ok(&["verify", "--study", study, "--target", target, "--wait"]);
        }
    }
    let index = strata.index().await;
    strata.cli_ok(&["fixity", "--wait"]);
    let read = strata.metric("strata_fixity_bytes_read_total");
    let checks = strata.metric("strata_fixity_checks_total");
    assert!(
        read > 0 && read <= budget,
        "read {read} bytes, budget {budget}"
    );
    assert!(
        checks > 0 && checks < 4 + 8,
        "{checks} of 12 copies checked within the budget"
    );
    assert_eq!(strata.metric("strata_fixity_failures_total"), 0);

    // Damage: the S3 pack of the first study, and an ONLINE file of the second.
    let (a, b) = (&studies[0], &studies[1]);
    let cloud_pack = packs(&index, a)
        .await
        .into_iter()
        .find(|p| p.target_name == "cloud")
        .expect("cloud pack");
    place.corrupt(&format!("{}{}", place.prefix, cloud_pack.object_key));
    let victim = index.study_locations(b).await.expect("locations").remove(0);
    let original = std::fs::read(victim.full_path()).expect("online file");
    let mut changed = original.clone();
    let middle = changed.len() / 2;
    changed[middle] ^= 0xFF;
    std::fs::write(victim.full_path(), &changed).expect("change the file");

    // Scheduled every two seconds with room in the budget: one run finds both.
    let text = std::fs::read_to_string(&strata.config_path).expect("config");
    std::fs::write(
        &strata.config_path,
        text.replace(
            &fixity_settings("", "120KiB"),
            &fixity_settings("*/2 * * * * *", "100MiB"),
        ),
    )
    .expect("config");
    strata.restart();
    wait_for("both found", Duration::from_secs(60), &strata, || async {
        strata.metric("strata_fixity_failures_total") >= 2
    })
    .await;
    let damaged_pack = packs(&index, a)
        .await
        .into_iter()
        .find(|p| p.id == cloud_pack.id)
        .expect("pack");
    assert_eq!(damaged_pack.status, PackStatus::VerifyFailed);
    // Audit events are written by a background writer in batches (within about a second).
    let fixity_events = || async {
        index
            .list_audit_events(&AuditFilter {
                action: Some(AuditAction::Fixity),
                ..Default::default()
            })
            .await
            .expect("audit")
    };
    wait_for(
        "the fixity audit events",
        Duration::from_secs(10),
        &strata,
        || async { fixity_events().await.len() >= 2 },
    )
    .await;
    let events = fixity_events().await;
    assert_eq!(events.len(), 2, "{events:?}");

    // Repairs: a new S3 pack of the first study from ONLINE; the file restored from a pack.
    wait_for("the repairs", Duration::from_secs(120), &strata, || async {
        let copies = jobs_of(&index, a, JobType::Copy).await;
        let restores = jobs_of(&index, b, JobType::Restore).await;
        copies
            .iter()
            .any(|j| j.created_by == "fixity" && j.state == "DONE")
            && restores
                .iter()
                .any(|j| j.created_by == "fixity" && j.state == "DONE")
    })
    .await;
    strata.cli_ok(&["verify", "--study", a, "--target", "cloud", "--wait"]);
    let cloud_now: Vec<PackStatus> = packs(&index, a)
        .await
        .into_iter()
        .filter(|p| p.target_name == "cloud")
        .map(|p| p.status)
        .collect();
    assert_eq!(
        cloud_now,
        vec![PackStatus::VerifyFailed, PackStatus::Archived],
        "the damaged pack stays on record, a new one replaces it"
    );
    let restored = index
        .study_locations(b)
        .await
        .expect("locations")
        .into_iter()
        .find(|l| l.sop_uid == victim.sop_uid)
        .expect("the instance is ONLINE again");
    assert_ne!(
        restored.rel_path, victim.rel_path,
        "a new file, not the damaged one"
    );
    let bytes = std::fs::read(restored.full_path()).expect("restored file");
    assert_eq!(bytes, original, "restored byte for byte");
    assert_eq!(
        hex::encode(Sha256::digest(&bytes)),
        restored.sha256,
        "and it matches its index row"
    );

    // The study's copies carry their last fixity check (REST API; the UI shows the same).
    let (status, detail) = http_json(
        &strata,
        "GET",
        &format!("/api/studies/{a}"),
        Some(&strata.api_token()),
        None,
    );
    assert_eq!(status, 200);
    let nearline = detail["copies"]["nearline"].as_array().expect("packs");
    assert!(
        nearline
            .iter()
            .any(|p| p["fixity"]["failures"].as_i64() == Some(1)),
        "{detail}"
    );
    assert!(
        detail["copies"]["online_fixity"]["checked_at"]
            .as_i64()
            .is_some(),
        "{detail}"
    );
}

async fn a_pack_larger_than_the_budget_is_checked_member_by_member(backend: Backend) {
    let scratch = tempfile::tempdir().expect("tempdir");
    let vault = scratch.path().join("vault");
    let targets = format!(
        "[[nearline.targets]]\nname = \"vault\"\nkind = \"filesystem\"\npath = \"{}\"\n",
        vault.display()
    );
    let roomy = lifecycle_toml("", &fixity_settings("", "1GiB"));
    let mut strata = Strata::start(backend, &format!("{targets}{roomy}")).await;
    let studies = ingest(&strata, 1, 3, 64).await;
    let study = &studies[0];
    strata.cli_ok(&["copy", "--study", study, "--target", "vault", "--wait"]);
    strata.cli_ok(&["verify", "--study", study, "--target", "vault", "--wait"]);
    let index = strata.index().await;
    let pack = packs(&index, study).await.remove(0);
    let mut members = index.pack_members(pack.id).await.expect("members");
    members.sort_by_key(|m| m.data_offset);
    assert_eq!(members.len(), 6);
    let files: u64 = index
        .study_locations(study)
        .await
        .expect("locations")
        .iter()
        .map(|l| l.size_bytes as u64)
        .sum();
    // Files go first (their last check is older); then room for half of the members.
    let bytes_of = |members: &[archive_core::nearline::PackMemberRow]| -> u64 {
        members.iter().map(|m| m.size_bytes as u64).sum()
    };
    let (first_half, second_half) = (bytes_of(&members[..3]), bytes_of(&members[3..]));
    let budget = files + first_half.max(second_half) + 100;
    assert!(
        budget < files + pack.size_bytes as u64,
        "the pack cannot fit whole"
    );
    let text = std::fs::read_to_string(&strata.config_path).expect("config");
    std::fs::write(
        &strata.config_path,
        text.replace(
            &fixity_settings("", "1GiB"),
            &fixity_settings("", &budget.to_string()),
        ),
    )
    .expect("config");
    strata.restart();

    strata.cli_ok(&["fixity", "--wait"]);
    let read = strata.metric("strata_fixity_bytes_read_total");
    assert!(read <= budget, "read {read} bytes, budget {budget}");
    assert_eq!(read, files + first_half, "the files and three members");
    let rows = pack_checks(&index, pack.id).await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0], (3, first_half as i64), "{rows:?}");

    // The last member is damaged in the pack; the next day's run reaches it.
    let last = &members[5];
    let path = vault.join(&pack.object_key);
    let mut bytes = std::fs::read(&path).expect("pack");
    bytes[(last.data_offset + last.size_bytes / 2) as usize] ^= 0xFF;
    std::fs::write(&path, &bytes).expect("damage the pack");
    a_day_passes(&index).await;
    let run = strata.cli(&["fixity", "--wait"]);
    let said = String::from_utf8_lossy(&run.stderr).into_owned();
    assert!(!run.status.success(), "a finding fails the job");
    assert!(said.contains("1 damaged: pack"), "{said}");
    let now = packs(&index, study)
        .await
        .into_iter()
        .find(|p| p.id == pack.id)
        .expect("pack");
    assert_eq!(now.status, PackStatus::VerifyFailed);
    assert!(now.error.contains(&last.member_path), "{}", now.error);
    let rows = pack_checks(&index, pack.id).await;
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert_eq!(rows[1].0, 0, "a finding ends the check: {rows:?}");
    assert_eq!(strata.metric("strata_fixity_failures_total"), 1);
    assert!(strata.metric("strata_fixity_bytes_read_total") <= read + budget);
}

/// (next_member, bytes) of each fixity check of the pack, oldest first.
async fn pack_checks(index: &archive_core::index::Index, pack_id: i64) -> Vec<(i64, i64)> {
    sqlx::query_as::<_, (i64, i64)>(
        "SELECT next_member, bytes FROM fixity_check WHERE pack_fk = $1 ORDER BY id",
    )
    .bind(pack_id)
    .fetch_all(index.pool_for_tests())
    .await
    .expect("fixity checks")
}

/// Moves every recorded check a day back, so the daily budget is whole again.
async fn a_day_passes(index: &archive_core::index::Index) {
    sqlx::query("UPDATE fixity_check SET checked_at = checked_at - 86400000")
        .execute(index.pool_for_tests())
        .await
        .expect("a day passes");
}

on_both_backends!(
    fixity_keeps_its_budget_and_repairs_what_it_finds,
    a_pack_larger_than_the_budget_is_checked_member_by_member
);
