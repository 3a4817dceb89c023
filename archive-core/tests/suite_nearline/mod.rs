//! The jobs table and NEARLINE bookkeeping, on both backends (included by index_suite.rs).

use super::{filesystem_id, new_instance, one, record};
use archive_core::config::{CopyRuleConfig, DuplicatePolicy, TargetSpec};
use archive_core::index::Index;
use archive_core::jobs::{HandBack, JobOutcome, JobProgress, JobState, JobType, NewJob};
use archive_core::nearline::TargetRow;
use archive_core::nearline::{MemberPlacement, PackStatus};
use std::collections::HashSet;

fn copy_job(study: &str) -> NewJob {
    NewJob {
        job_type: JobType::Copy,
        study_uid: study.into(),
        target_name: "local".into(),
        created_by: "test".into(),
        max_attempts: 3,
    }
}

/// Stores instance `3.{n}` of study 1.9 (patient P1) in `series`; it must be new.
async fn store_instance(index: &Index, fs: i64, series: &str, n: u64, modality: &str, size: u64) {
    let outcome = one(
        index,
        new_instance(
            record("P1", "1.9", series, &format!("3.{n}"), modality),
            fs,
            &format!("a/{n}"),
            size,
            DuplicatePolicy::KeepFirst,
        ),
    )
    .await;
    assert_eq!(outcome, archive_core::model::StoreOutcome::Stored);
}

/// Copy rule "ct" to `local`: studies stable for ten minutes, of the given modalities (all
/// when empty).
fn ten_minute_rule(modalities: Vec<String>) -> CopyRuleConfig {
    CopyRuleConfig {
        name: "ct".into(),
        target: "local".into(),
        targets: vec![],
        schedule: "0 * * * * *".into(),
        stable_minutes: 10,
        min_age_days: 0,
        modalities,
        calling_aes: vec![],
        enabled: true,
    }
}

/// Defines the config target `local` (a directory) and returns its spec and row.
pub async fn local_target(index: &Index) -> (TargetSpec, TargetRow) {
    let spec = TargetSpec::filesystem("local", "/nearline".into());
    index
        .sync_targets(std::slice::from_ref(&spec), 1)
        .await
        .expect("targets");
    let target = index
        .target("local")
        .await
        .expect("target")
        .expect("exists");
    (spec, target)
}

pub async fn jobs_are_claimed_once_and_leases_expire(index: Index) {
    let now = 1_000_000;
    let mut ids = HashSet::new();
    for n in 0..20 {
        let queued = index
            .enqueue_job(&copy_job(&format!("1.{n}")), now)
            .await
            .expect("enqueue");
        assert!(queued.created);
        ids.insert(queued.job_id);
    }
    // A live job for the same work is not queued twice.
    let again = index
        .enqueue_job(&copy_job("1.0"), now)
        .await
        .expect("enqueue");
    assert!(!again.created);
    assert!(ids.contains(&again.job_id));

    // Two nodes claiming at once never get the same job.
    let claim_all = |node: &'static str| {
        let index = index.clone();
        tokio::spawn(async move {
            let mut mine = Vec::new();
            while let Some(job) = index.claim_job(node, now, 60_000).await.expect("claim") {
                assert_eq!(job.state, JobState::Running);
                assert_eq!(job.owner_node, node);
                mine.push(job.id);
            }
            mine
        })
    };
    let (a, b) = (claim_all("node-a"), claim_all("node-b"));
    let (a, b) = (a.await.expect("join"), b.await.expect("join"));
    let claimed: HashSet<i64> = a.iter().chain(&b).copied().collect();
    assert_eq!(a.len() + b.len(), 20, "each job claimed exactly once");
    assert_eq!(claimed, ids);

    // node-a dies: once its leases expire, node-b takes its jobs over and node-a's renewals fail.
    let Some(&taken) = a.first().or(b.first()) else {
        panic!("no jobs")
    };
    let owner = if a.contains(&taken) {
        "node-a"
    } else {
        "node-b"
    };
    let later = now + 60_001;
    let job = index
        .claim_job("node-c", later, 60_000)
        .await
        .expect("claim")
        .expect("expired lease");
    assert_eq!(job.attempts, 2, "a takeover counts as an attempt");
    let renewed = index
        .renew_job(job.id, owner, later, 60_000, JobProgress::default())
        .await
        .expect("renew");
    if job.id == taken {
        assert!(!renewed, "the old owner lost the job");
    }
    assert!(index
        .renew_job(
            job.id,
            "node-c",
            later,
            60_000,
            JobProgress {
                done_items: 2,
                total_items: 4,
                done_bytes: 10,
                total_bytes: 20
            }
        )
        .await
        .expect("renew"));
    assert_eq!(
        index
            .job(job.id)
            .await
            .expect("job")
            .expect("exists")
            .done_items,
        2
    );

    // Retry later: not claimable before its time, then claimable with one more attempt.
    let retry = JobOutcome::Retry {
        at: later + 5000,
        error: "S3 unavailable".into(),
    };
    assert!(index
        .finish_job(job.id, "node-c", later, &retry)
        .await
        .expect("finish"));
    let stored = index.job(job.id).await.expect("job").expect("exists");
    assert_eq!(
        (stored.state, stored.last_error.as_str()),
        (JobState::Queued, "S3 unavailable")
    );
    // Other expired jobs may be claimed first; none of them is this one before its time.
    while let Some(other) = index
        .claim_job("node-c", later + 1000, 1)
        .await
        .expect("claim")
    {
        assert_ne!(other.id, job.id);
        index
            .finish_job(other.id, "node-c", later + 1000, &JobOutcome::Done)
            .await
            .expect("finish");
    }
    let again = index
        .claim_job("node-c", later + 5000, 60_000)
        .await
        .expect("claim")
        .expect("due");
    assert_eq!((again.id, again.attempts), (job.id, 3));

    // Cancelling a running job makes its owner's next renewal fail.
    assert!(index
        .cancel_job(job.id, later + 5001)
        .await
        .expect("cancel"));
    assert!(!index
        .renew_job(
            job.id,
            "node-c",
            later + 5002,
            60_000,
            JobProgress::default()
        )
        .await
        .expect("renew"));
    assert!(!index
        .finish_job(job.id, "node-c", later + 5002, &JobOutcome::Done)
        .await
        .expect("finish"));
    assert_eq!(
        index.job(job.id).await.expect("job").expect("exists").state,
        JobState::Cancelled
    );

    // A node that shuts down hands back what it was running; that run is not counted.
    let queued = index
        .enqueue_job(&copy_job("9.9"), later)
        .await
        .expect("enqueue");
    let mut clock = later + 6000;
    let running = index
        .claim_job("node-d", clock, 60_000)
        .await
        .expect("claim")
        .expect("job");
    assert_eq!((running.id, running.attempts), (queued.job_id, 1));
    assert_eq!(
        index
            .requeue_jobs_of_node("node-d", clock + 1, HandBack::Shutdown)
            .await
            .expect("requeue"),
        1
    );
    let stored = index.job(running.id).await.expect("job").expect("exists");
    assert_eq!((stored.state, stored.attempts), (JobState::Queued, 0));

    // A node that died while running it (found at its restart) counts the run: after
    // max_attempts (3) such deaths the job fails instead of killing the node forever.
    for attempt in 1..=3 {
        clock += 10;
        let again = index
            .claim_job("node-d", clock, 60_000)
            .await
            .expect("claim")
            .expect("queued job is due");
        assert_eq!((again.id, again.attempts), (running.id, attempt));
        index
            .requeue_jobs_of_node("node-d", clock + 1, HandBack::AfterCrash)
            .await
            .expect("requeue");
        let stored = index.job(running.id).await.expect("job").expect("exists");
        let expected = if attempt < 3 {
            JobState::Queued
        } else {
            JobState::Failed
        };
        assert_eq!(stored.state, expected, "after crash {attempt}");
    }
    let failed = index.job(running.id).await.expect("job").expect("exists");
    assert!(failed.last_error.contains("during every attempt"));
    assert_eq!(failed.finished_at, Some(clock + 1));

    // The same when the node never comes back: another node finds the expired lease.
    let orphan = index
        .enqueue_job(&copy_job("9.10"), clock)
        .await
        .expect("enqueue");
    for attempt in 1..=3 {
        clock += 10;
        let taken = index
            .claim_job("node-e", clock, 5)
            .await
            .expect("claim")
            .expect("due or expired");
        assert_eq!((taken.id, taken.attempts), (orphan.job_id, attempt));
    }
    clock += 10;
    assert!(index
        .claim_job("node-f", clock, 60_000)
        .await
        .expect("claim")
        .is_none());
    let stored = index
        .job(orphan.job_id)
        .await
        .expect("job")
        .expect("exists");
    assert_eq!(stored.state, JobState::Failed);

    let listed = index
        .list_jobs(&archive_core::jobs::JobFilter {
            state: Some(JobState::Cancelled),
            ..Default::default()
        })
        .await
        .expect("list");
    assert_eq!(
        listed.iter().map(|j| j.id).collect::<Vec<_>>(),
        vec![job.id]
    );

    // One schedule firing is claimed by one node only.
    assert!(index
        .claim_schedule_fire("copy:r", 42, "node-a")
        .await
        .expect("fire"));
    assert!(!index
        .claim_schedule_fire("copy:r", 42, "node-b")
        .await
        .expect("fire"));
    assert!(index
        .claim_schedule_fire("copy:r", 43, "node-b")
        .await
        .expect("fire"));
}

pub async fn packs_track_what_is_copied(index: Index) {
    let fs = filesystem_id(&index).await;
    for (n, modality) in [(1, "CT"), (2, "CT"), (3, "SR")] {
        let series = if modality == "CT" { "2.1" } else { "2.2" };
        store_instance(&index, fs, series, n, modality, 100 * n).await;
    }
    let (spec, target) = local_target(&index).await;
    assert_eq!(target.spec, spec);
    assert!(target.from_config);

    let rule = ten_minute_rule(vec!["CT".into()]);
    index
        .sync_copy_rules(std::slice::from_ref(&rule), 1)
        .await
        .expect("rules");
    assert_eq!(index.copy_rules().await.expect("rules")[0].rule, rule);
    // A rule naming several targets keeps them (stored as one list).
    let both = CopyRuleConfig {
        name: "both".into(),
        target: String::new(),
        targets: vec!["local".into(), "tape".into()],
        ..rule.clone()
    };
    index.save_copy_rule(&both, 2).await.expect("save");
    let saved = index.copy_rules().await.expect("rules");
    let found = saved.iter().find(|r| r.rule.name == "both").expect("saved");
    assert_eq!(found.rule.target_names(), vec!["local", "tape"]);
    let received = 1_700_000_000_000;
    // Not stable yet ten minutes after the last instance; then selected. Twice: with the
    // instances not yet folded into the study row, and folded.
    for fold in [false, true] {
        if fold {
            index.fold_counts().await.expect("fold");
        }
        assert!(index
            .copy_candidates(&rule, target.id, received + 60_000, 100)
            .await
            .expect("candidates")
            .is_empty());
        assert_eq!(
            index
                .copy_candidates(&rule, target.id, received + 600_001, 100)
                .await
                .expect("candidates"),
            vec!["1.9"]
        );
    }
    let mr_only = CopyRuleConfig {
        modalities: vec!["MR".into()],
        ..rule.clone()
    };
    assert!(index
        .copy_candidates(&mr_only, target.id, received + 600_001, 100)
        .await
        .expect("candidates")
        .is_empty());

    let sources = index
        .unpacked_instances("1.9", target.id)
        .await
        .expect("unpacked");
    assert_eq!(sources.len(), 3);
    assert_eq!(sources[0].file_path, std::path::Path::new("/data/fs1/a/1"));

    let first = index
        .begin_pack("1.9", target.id, "1.9/1-1.tar", 1, 10)
        .await
        .expect("begin");
    // Members are recorded when the upload completes (one live copy job per study and
    // target keeps a second job from packing them meanwhile).
    assert_eq!(
        index
            .unpacked_instances("1.9", target.id)
            .await
            .expect("unpacked")
            .len(),
        3
    );
    let placed: Vec<_> = sources[..2]
        .iter()
        .enumerate()
        .map(|(n, s)| {
            (
                s.clone(),
                MemberPlacement {
                    member_path: format!("{}/{}.dcm", s.series_uid, s.sop_uid),
                    data_offset: 1024 * (n as u64 + 1),
                    size: s.size,
                    blake3: format!("b3-{n}"),
                },
            )
        })
        .collect();
    assert!(index
        .complete_pack(first, 4096, "ab", &placed, 11)
        .await
        .expect("complete"));
    assert!(!index
        .complete_pack(first, 4096, "ab", &placed, 12)
        .await
        .expect("complete twice"));
    let left = index
        .unpacked_instances("1.9", target.id)
        .await
        .expect("unpacked");
    assert_eq!(
        left.iter().map(|s| s.sop_uid.as_str()).collect::<Vec<_>>(),
        vec!["3.3"]
    );
    assert_eq!(
        index.packs_to_verify(10).await.expect("to verify"),
        vec![("1.9".to_string(), "local".to_string())]
    );
    let members = index.pack_members(first).await.expect("members");
    assert_eq!(
        members
            .iter()
            .map(|m| (m.sop_uid.as_str(), m.data_offset, m.blake3.as_str()))
            .collect::<Vec<_>>(),
        vec![("3.1", 1024, "b3-0"), ("3.2", 2048, "b3-1")]
    );

    // An interrupted upload is abandoned (and its key returned for clean-up) by the next attempt.
    let second = index
        .begin_pack("1.9", target.id, "1.9/2-1.tar", 2, 20)
        .await
        .expect("begin");
    let leftovers = index
        .abandon_unfinished_packs("1.9", target.id, 21)
        .await
        .expect("abandon");
    assert_eq!(leftovers, vec![(second, "1.9/2-1.tar".to_string())]);
    // Until its leftovers are removed, every attempt is told about it again.
    assert_eq!(
        index
            .abandon_unfinished_packs("1.9", target.id, 22)
            .await
            .expect("abandon"),
        leftovers
    );
    index
        .mark_pack_discarded(second, 23)
        .await
        .expect("discarded");
    assert!(index
        .abandon_unfinished_packs("1.9", target.id, 24)
        .await
        .expect("abandon")
        .is_empty());
    assert!(!index
        .complete_pack(second, 1, "cd", &[], 22)
        .await
        .expect("complete after abandon"));
    assert_eq!(
        index
            .unpacked_instances("1.9", target.id)
            .await
            .expect("unpacked")
            .len(),
        1
    );

    // A pack that failed verification no longer counts as a copy.
    index
        .set_pack_status(first, PackStatus::VerifyFailed, "bad member", 30)
        .await
        .expect("status");
    assert_eq!(
        index
            .unpacked_instances("1.9", target.id)
            .await
            .expect("unpacked")
            .len(),
        3
    );
    index
        .set_pack_status(first, PackStatus::Archived, "", 31)
        .await
        .expect("status");
    let packs = index.packs_of_study("1.9").await.expect("packs");
    let statuses: Vec<_> = packs.iter().map(|p| (p.status, p.verified_at)).collect();
    assert_eq!(
        statuses,
        vec![
            (PackStatus::Archived, Some(31)),
            (PackStatus::Abandoned, None)
        ]
    );
    assert!(index
        .packs_to_verify(10)
        .await
        .expect("to verify")
        .is_empty());
    deletion_needs_archived_copies(&index, first).await;
}

/// A copy rule's job is queued in one statement that re-checks the candidate: the race it
/// closes is a study listed while another node's copy ran, queued after that copy ended.
pub async fn rule_copies_are_queued_only_for_uncopied_studies(index: Index) {
    let fs = filesystem_id(&index).await;
    for n in 1..=2 {
        store_instance(&index, fs, "2.1", n, "CT", 100).await;
    }
    let (spec, target) = local_target(&index).await;
    let job = NewJob {
        created_by: "rule:ct".into(),
        ..copy_job("1.9")
    };

    let first = index
        .enqueue_rule_copy(&job, target.id, 10)
        .await
        .expect("enqueue")
        .expect("an uncopied study is queued");
    assert_eq!(
        index
            .enqueue_rule_copy(&job, target.id, 11)
            .await
            .expect("enqueue"),
        None,
        "a live copy job for the study and target holds a second one back"
    );
    // The live job copies both instances and ends: the stale candidate is not queued again.
    let claimed = index
        .claim_job("node-a", 12, 60_000)
        .await
        .expect("claim")
        .expect("job");
    assert_eq!(claimed.id, first);
    let pack = index
        .begin_pack("1.9", target.id, "1.9/1-1.tar", first, 13)
        .await
        .expect("begin");
    let sources = index
        .unpacked_instances("1.9", target.id)
        .await
        .expect("unpacked");
    let placed: Vec<_> = sources
        .iter()
        .map(|s| {
            let placement = MemberPlacement {
                member_path: format!("{}/{}.dcm", s.series_uid, s.sop_uid),
                data_offset: 1024,
                size: s.size,
                blake3: String::new(),
            };
            (s.clone(), placement)
        })
        .collect();
    assert!(index
        .complete_pack(pack, 4096, "ab", &placed, 14)
        .await
        .expect("complete"));
    assert!(index
        .finish_job(first, "node-a", 15, &JobOutcome::Done)
        .await
        .expect("finish"));
    assert_eq!(
        index
            .enqueue_rule_copy(&job, target.id, 16)
            .await
            .expect("enqueue"),
        None,
        "every instance has a copy on the target"
    );
    // A new instance makes the study a candidate again.
    store_instance(&index, fs, "2.1", 3, "CT", 100).await;
    let second = index
        .enqueue_rule_copy(&job, target.id, 17)
        .await
        .expect("enqueue");
    assert!(second.is_some_and(|id| id != first));
    // Another target's copies do not count for this one.
    let other = TargetSpec::filesystem("other", "/elsewhere".into());
    index
        .sync_targets(&[spec, other], 1)
        .await
        .expect("targets");
    let other = index
        .target("other")
        .await
        .expect("target")
        .expect("exists");
    let other_job = NewJob {
        target_name: "other".into(),
        ..job.clone()
    };
    assert!(index
        .enqueue_rule_copy(&other_job, other.id, 18)
        .await
        .expect("enqueue")
        .is_some());
}

/// Continues `packs_track_what_is_copied`: instances 3.1 and 3.2 are in pack `first`, 3.3 in none.
async fn deletion_needs_archived_copies(index: &Index, first: i64) {
    let rule = archive_core::config::RetentionRuleConfig {
        name: "idle".into(),
        schedule: "0 * * * * *".into(),
        not_accessed_days: Some(0),
        ..Default::default()
    };
    // A copy that failed verification protects nothing.
    index
        .set_pack_status(first, PackStatus::VerifyFailed, "bad", 40)
        .await
        .expect("status");
    let candidates = index
        .retention_candidates(&rule, 10)
        .await
        .expect("candidates");
    assert_eq!(
        (
            candidates[0].instances,
            candidates[0].verified,
            candidates[0].verify_failed,
            candidates[0].online_bytes
        ),
        (3, 0, 2, 600)
    );
    let refused = index
        .begin_online_deletion("1.9", "")
        .await
        .expect("deletion");
    assert_eq!((refused.marked, refused.kept_unverified), (0, 3));

    // ARCHIVED: exactly those two instances lose their ONLINE file; the third keeps it.
    index
        .set_pack_status(first, PackStatus::Archived, "", 41)
        .await
        .expect("status");
    // ...unless two targets must hold a verified copy (lifecycle.min_archived_copies).
    index.set_min_archived_copies(2);
    assert_eq!(
        index
            .retention_candidates(&rule, 10)
            .await
            .expect("candidates")[0]
            .verified,
        0
    );
    let held = index
        .begin_online_deletion("1.9", "")
        .await
        .expect("deletion");
    assert_eq!((held.marked, held.kept_unverified), (0, 3));
    index.set_min_archived_copies(1);
    let other_target = archive_core::config::RetentionRuleConfig {
        require_target: "tape".into(),
        ..rule.clone()
    };
    assert_eq!(
        index
            .retention_candidates(&other_target, 10)
            .await
            .expect("candidates")[0]
            .verified,
        0
    );
    let started = index
        .begin_online_deletion("1.9", "")
        .await
        .expect("deletion");
    assert_eq!((started.marked, started.kept_unverified), (2, 1));
    let deleting = index.deleting_files("1.9").await.expect("deleting");
    assert_eq!(deleting.len(), 2);
    assert_eq!(
        index.studies_with_deleting_files().await.expect("q"),
        vec!["1.9"]
    );
    // Retrievals already read the two from NEARLINE, the third from its file.
    let locations = index
        .retrieve_locations(archive_core::query::Level::Study, &["1.9".to_string()])
        .await
        .expect("locations");
    let sources: Vec<(&str, bool)> = locations
        .iter()
        .map(|l| (l.sop_uid.as_str(), l.nearline.is_some()))
        .collect();
    assert_eq!(sources, vec![("3.1", true), ("3.2", true), ("3.3", false)]);
    assert_eq!(
        locations[0].nearline.as_ref().map(|m| m.data_offset),
        Some(1024)
    );
    index
        .remove_file_rows(&deleting.iter().map(|(id, _)| *id).collect::<Vec<_>>())
        .await
        .expect("remove");
    assert!(index
        .studies_with_deleting_files()
        .await
        .expect("q")
        .is_empty());
    let study = index.study("1.9").await.expect("q").expect("study");
    assert_eq!(study.availability, "ONLINE", "one instance is still ONLINE");
    let series = index.series_of_study("1.9").await.expect("series");
    let availability: Vec<(&str, &str)> = series
        .iter()
        .map(|s| (s.series_uid.as_str(), s.availability.as_str()))
        .collect();
    assert_eq!(availability, vec![("2.1", "NEARLINE"), ("2.2", "ONLINE")]);
}

/// A copy rule's "stable for N minutes" sees an instance that is not folded into the study row
/// yet (`index/counts.rs`): the row's updated_at does not show it, the instance's arrival does.
pub async fn copy_rules_see_instances_not_yet_folded(index: Index) {
    let fs = filesystem_id(&index).await;
    store_instance(&index, fs, "2.1", 1, "CT", 100).await;
    index.fold_counts().await.expect("fold");
    let (_, target) = local_target(&index).await;
    let rule = ten_minute_rule(vec![]);
    let candidates = |now: i64| {
        let (index, rule) = (index.clone(), rule.clone());
        async move {
            index
                .copy_candidates(&rule, target.id, now, 100)
                .await
                .expect("candidates")
        }
    };
    let first = 1_700_000_000_000;
    assert_eq!(candidates(first + 600_001).await, vec!["1.9"]);
    // Twenty minutes later another instance arrives and is not folded yet.
    let later = first + 1_200_000;
    let late = archive_core::index::NewInstance {
        received_at: later,
        ..new_instance(
            record("P1", "1.9", "2.1", "3.2", "CT"),
            fs,
            "a/late",
            50,
            DuplicatePolicy::KeepFirst,
        )
    };
    assert_eq!(
        one(&index, late).await,
        archive_core::model::StoreOutcome::Stored
    );
    assert!(
        candidates(later + 60_000).await.is_empty(),
        "a minute after its last instance the study is not stable"
    );
    assert_eq!(candidates(later + 600_001).await, vec!["1.9"]);
    index.fold_counts().await.expect("fold");
    assert!(candidates(later + 60_000).await.is_empty());
}
