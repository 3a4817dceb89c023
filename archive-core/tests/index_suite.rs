//! One backend-neutral suite for the index, run on SQLite and on PostgreSQL.

use archive_core::config::{DuplicatePolicy, FilesystemConfig, FilesystemMode};
use archive_core::index::{Held, Index, NewInstance};
use archive_core::model::*;
use archive_core::testing::fresh_postgres_database;

mod suite_nearline;
mod suite_two_nodes;
use suite_nearline::{
    copy_rules_see_instances_not_yet_folded, jobs_are_claimed_once_and_leases_expire,
    packs_track_what_is_copied, rule_copies_are_queued_only_for_uncopied_studies,
};

async fn sqlite_index() -> (Index, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}/index.db", dir.path().display());
    let index = Index::open(&url).await.expect("open sqlite");
    index.migrate().await.expect("migrate");
    (index, dir)
}

async fn postgres_index() -> Index {
    let url = fresh_postgres_database().await;
    let index = Index::open(&url).await.expect("open postgres");
    index.migrate().await.expect("migrate");
    index
}

fn record(patient: &str, study: &str, series: &str, sop: &str, modality: &str) -> InstanceRecord {
    InstanceRecord {
        patient: PatientAttrs {
            patient_id: patient.into(),
            issuer_of_patient_id: String::new(),
            patient_name: format!("Doe^{patient}"),
            birth_date: "19700101".into(),
            sex: "O".into(),
        },
        study: StudyAttrs {
            study_uid: study.into(),
            study_date: "20240315".into(),
            study_time: "101500".into(),
            accession_number: format!("ACC-{study}"),
            study_id: "1".into(),
            description: "Chest".into(),
            referring_physician: "Smith^John".into(),
        },
        series: SeriesAttrs {
            series_uid: series.into(),
            modality: modality.into(),
            series_number: Some(3),
            description: "Axial".into(),
            body_part: "CHEST".into(),
        },
        instance: InstanceAttrs {
            sop_instance_uid: sop.into(),
            sop_class_uid: "1.2.840.10008.5.1.4.1.1.2".into(),
            instance_number: Some(7),
            transfer_syntax: "1.2.840.10008.1.2.1".into(),
            number_of_frames: None,
        },
        source_ae: "MODALITY".into(),
    }
}

fn new_instance(
    record: InstanceRecord,
    fs: i64,
    path: &str,
    size: u64,
    policy: DuplicatePolicy,
) -> NewInstance {
    NewInstance {
        record,
        held: Held::Online(StoredFile {
            filesystem_id: fs,
            rel_path: path.into(),
            size,
            sha256: format!("{:064x}", size),
        }),
        policy,
        received_at: 1_700_000_000_000,
        metadata: None,
    }
}

async fn one(index: &Index, new: NewInstance) -> StoreOutcome {
    let mut results = index.store_batch(&[new]).await;
    results.remove(0).expect("store succeeds")
}

/// (series UID, instances, bytes) of each series of a study, in UID order.
async fn series_counts(index: &Index, study: &str) -> Vec<(String, i64, i64)> {
    let mut series: Vec<(String, i64, i64)> = index
        .series_of_study(study)
        .await
        .expect("series")
        .into_iter()
        .map(|s| (s.series_uid, s.num_instances, s.size_bytes))
        .collect();
    series.sort();
    series
}

async fn filesystem_id(index: &Index) -> i64 {
    let rows = index
        .sync_filesystems(&[FilesystemConfig {
            group: "ONLINE_STORAGE".into(),
            path: "/data/fs1".into(),
            mode: FilesystemMode::Rw,
            min_free: archive_core::config::ByteSize(1000),
        }])
        .await
        .expect("sync filesystems");
    rows[0].id
}

async fn stores_and_describes_a_study(index: Index) {
    let fs = filesystem_id(&index).await;
    let keep = DuplicatePolicy::KeepFirst;
    assert_eq!(
        one(
            &index,
            new_instance(
                record("P1", "1.1", "1.1.1", "1.1.1.1", "CT"),
                fs,
                "a/1.dcm",
                100,
                keep
            )
        )
        .await,
        StoreOutcome::Stored
    );
    assert_eq!(
        one(
            &index,
            new_instance(
                record("P1", "1.1", "1.1.1", "1.1.1.2", "CT"),
                fs,
                "a/2.dcm",
                50,
                keep
            )
        )
        .await,
        StoreOutcome::Stored
    );
    assert_eq!(
        one(
            &index,
            new_instance(
                record("P1", "1.1", "1.1.2", "1.1.2.1", "SR"),
                fs,
                "a/3.dcm",
                7,
                keep
            )
        )
        .await,
        StoreOutcome::Stored
    );

    let study = index
        .study("1.1")
        .await
        .expect("query")
        .expect("study exists");
    assert_eq!(study.patient_id, "P1");
    assert_eq!(study.patient_name, "Doe^P1");
    assert_eq!(study.birth_date, "19700101");
    assert_eq!(study.sex, "O");
    assert_eq!(study.study_date, "20240315");
    assert_eq!(study.study_time, "101500");
    assert_eq!(study.accession_number, "ACC-1.1");
    assert_eq!(study.referring_physician, "Smith^John");
    assert_eq!(study.modalities, "CT\\SR");
    assert_eq!(study.num_series, 2);
    assert_eq!(study.num_instances, 3);
    assert_eq!(study.size_bytes, 157);
    assert_eq!(study.availability, "ONLINE");
    assert_eq!(study.received_at, 1_700_000_000_000);

    let series = index.series_of_study("1.1").await.expect("series");
    assert_eq!(series.len(), 2);
    let ct = series
        .iter()
        .find(|s| s.series_uid == "1.1.1")
        .expect("CT series");
    assert_eq!(
        (ct.modality.as_str(), ct.num_instances, ct.size_bytes),
        ("CT", 2, 150)
    );
    assert_eq!(ct.series_number, Some(3));
    assert_eq!(ct.body_part, "CHEST");
    assert_eq!(ct.source_ae, "MODALITY");

    let location = index
        .instance_location("1.1.1.2")
        .await
        .expect("query")
        .expect("located");
    assert_eq!(location.rel_path, "a/2.dcm");
    assert_eq!(location.filesystem_path, "/data/fs1");
    assert_eq!(location.study_uid, "1.1");
    assert_eq!(location.instance_number, Some(7));
    assert_eq!(location.transfer_syntax, "1.2.840.10008.1.2.1");
    assert_eq!(
        index.study_locations("1.1").await.expect("locations").len(),
        3
    );

    let counts = index.counts().await.expect("counts");
    assert_eq!(
        (
            counts.patients,
            counts.studies,
            counts.series,
            counts.instances,
            counts.files
        ),
        (1, 1, 2, 3, 3)
    );
    assert!(index.study("9.9").await.expect("query").is_none());
}

async fn duplicates_follow_the_policy(index: Index) {
    let fs = filesystem_id(&index).await;
    let r = || record("P1", "2.1", "2.1.1", "2.1.1.1", "MR");
    assert_eq!(
        one(
            &index,
            new_instance(r(), fs, "first.dcm", 100, DuplicatePolicy::KeepFirst)
        )
        .await,
        StoreOutcome::Stored
    );
    assert_eq!(
        one(
            &index,
            new_instance(r(), fs, "second.dcm", 100, DuplicatePolicy::KeepFirst)
        )
        .await,
        StoreOutcome::DuplicateKept
    );
    assert_eq!(
        one(
            &index,
            new_instance(r(), fs, "third.dcm", 100, DuplicatePolicy::Reject)
        )
        .await,
        StoreOutcome::DuplicateRejected
    );
    let location = index
        .instance_location("2.1.1.1")
        .await
        .expect("q")
        .expect("located");
    assert_eq!(
        location.rel_path, "first.dcm",
        "keep-first and reject keep the stored copy"
    );

    let outcome = one(
        &index,
        new_instance(r(), fs, "fourth.dcm", 130, DuplicatePolicy::Replace),
    )
    .await;
    match outcome {
        StoreOutcome::Replaced { old_file } => assert_eq!(old_file.rel_path, "first.dcm"),
        other => panic!("expected Replaced, got {other:?}"),
    }
    let location = index
        .instance_location("2.1.1.1")
        .await
        .expect("q")
        .expect("located");
    assert_eq!(location.rel_path, "fourth.dcm");
    let study = index.study("2.1").await.expect("q").expect("study");
    assert_eq!(
        (study.num_instances, study.size_bytes),
        (1, 130),
        "replace adjusts the size, not the count"
    );
}

/// Two copies of one SOP instance in the same batch (two associations sending it at once):
/// under `replace` the second replaces the first, and the instance keeps exactly one file.
async fn a_duplicate_within_one_batch_replaces_the_first(index: Index) {
    let fs = filesystem_id(&index).await;
    let copy = |path: &str, size: u64| {
        let r = record("P7", "7.1", "7.1.1", "7.1.1.1", "CT");
        new_instance(r, fs, path, size, DuplicatePolicy::Replace)
    };
    let results = index
        .store_batch(&[copy("a.dcm", 100), copy("b.dcm", 140)])
        .await;
    assert!(matches!(results[0], Ok(StoreOutcome::Stored)));
    match &results[1] {
        Ok(StoreOutcome::Replaced { old_file }) => assert_eq!(old_file.rel_path, "a.dcm"),
        other => panic!("expected Replaced, got {other:?}"),
    }
    let location = index
        .instance_location("7.1.1.1")
        .await
        .expect("q")
        .expect("located");
    assert_eq!(location.rel_path, "b.dcm");
    assert_eq!(index.counts().await.expect("counts").files, 1);
    let study = index.study("7.1").await.expect("q").expect("study");
    assert_eq!((study.num_instances, study.size_bytes), (1, 140));
}

/// `fill-missing` (imports, rebuild-index): an instance held only in a pack takes the file
/// found for it, once; an instance with a file keeps it, like keep-first.
async fn fill_missing_gives_a_file_only_where_there_is_none(index: Index) {
    let fs = filesystem_id(&index).await;
    let r = || record("P8", "8.1", "8.1.1", "8.1.1.1", "CT");
    let in_pack = NewInstance {
        held: Held::InPackOnly { size: 100 },
        ..new_instance(r(), fs, "", 100, DuplicatePolicy::KeepFirst)
    };
    assert_eq!(one(&index, in_pack).await, StoreOutcome::Stored);
    assert!(index.study_locations("8.1").await.expect("q").is_empty());
    let fill = |path: &str| new_instance(r(), fs, path, 100, DuplicatePolicy::FillMissing);
    let results = index.store_batch(&[fill("a.dcm"), fill("b.dcm")]).await;
    assert!(
        matches!(results[0], Ok(StoreOutcome::Stored)),
        "{results:?}"
    );
    assert!(
        matches!(results[1], Ok(StoreOutcome::DuplicateKept)),
        "the second copy in the batch finds the first: {results:?}"
    );
    let location = index
        .instance_location("8.1.1.1")
        .await
        .expect("q")
        .expect("located");
    assert_eq!(location.rel_path, "a.dcm");
    assert_eq!(
        one(&index, fill("c.dcm")).await,
        StoreOutcome::DuplicateKept,
        "a file is never replaced"
    );
    assert_eq!(index.study_locations("8.1").await.expect("q").len(), 1);
    let study = index.study("8.1").await.expect("q").expect("study");
    assert_eq!(
        (study.num_instances, study.size_bytes),
        (1, 100),
        "the object was counted once, when it was indexed from its pack"
    );
    // A restore that finishes after a received copy gave the instance its file adds none.
    let restored = StoredFile {
        filesystem_id: fs,
        rel_path: "restored.dcm".into(),
        size: 100,
        sha256: format!("{:064x}", 100),
    };
    assert!(!index
        .add_online_file("8.1.1.1", &restored, 1)
        .await
        .expect("add"));
    assert_eq!(index.study_locations("8.1").await.expect("q").len(), 1);
}

/// After a replacing duplicate (new.dcm, 120 bytes) met a file being deleted (old.dcm, 100
/// bytes): both rows are there, each with its own status, and the study counts the new copy.
async fn new_file_beside_the_deleting_one(index: &Index, study_uid: &str) {
    let files: Vec<(String, String)> =
        sqlx::query_as("SELECT path, status FROM file ORDER BY path")
            .fetch_all(index.pool_for_tests())
            .await
            .expect("files");
    let row = |path: &str, status: &str| (path.to_string(), status.to_string());
    assert_eq!(
        files,
        vec![row("new.dcm", "OK"), row("old.dcm", "DELETING")]
    );
    let study = index.study(study_uid).await.expect("q").expect("study");
    assert_eq!((study.num_instances, study.size_bytes), (1, 120));
}

/// A file retention has marked DELETING is unlinked by its recorded path next: a replacing
/// duplicate arriving after that gets a file row of its own. (The race with retention's
/// uncommitted mark is `postgres_nodes::a_replace_racing_retention_gets_its_own_file`.)
async fn a_replace_never_takes_over_a_file_being_deleted(index: Index) {
    let fs = filesystem_id(&index).await;
    let r = || record("P11", "11.1", "11.1.1", "11.1.1.1", "CT");
    let keep = DuplicatePolicy::KeepFirst;
    one(&index, new_instance(r(), fs, "old.dcm", 100, keep)).await;
    sqlx::query("UPDATE file SET status = 'DELETING' WHERE path = 'old.dcm'")
        .execute(index.pool_for_tests())
        .await
        .expect("mark deleting");
    let outcome = one(
        &index,
        new_instance(r(), fs, "new.dcm", 120, DuplicatePolicy::Replace),
    )
    .await;
    assert_eq!(outcome, StoreOutcome::Stored, "nothing was replaced");
    new_file_beside_the_deleting_one(&index, "11.1").await;
}

/// A delete job that stopped after unlinking its DELETING files runs again and unlinks the
/// same paths again. A copy of the instance received the same day in between is placed at
/// the same path (the layout's, now free on disk); it must not be indexed there while the
/// DELETING row holds the path, or the retried job would unlink a stored object. Every way a
/// new copy gets a row is refused (the accept path then removes the new file and the sender
/// is told to try again); once the job dropped its rows the path is free again.
async fn a_path_being_deleted_is_given_to_no_other_file(index: Index) {
    let fs = filesystem_id(&index).await;
    let r = || record("P15", "15.1", "15.1.1", "15.1.1.1", "CT");
    one(
        &index,
        new_instance(r(), fs, "p.dcm", 100, DuplicatePolicy::KeepFirst),
    )
    .await;
    sqlx::query("UPDATE file SET status = 'DELETING' WHERE path = 'p.dcm'")
        .execute(index.pool_for_tests())
        .await
        .expect("mark deleting");
    for policy in [DuplicatePolicy::Replace, DuplicatePolicy::FillMissing] {
        let result = index
            .store_batch(&[new_instance(r(), fs, "p.dcm", 120, policy)])
            .await
            .remove(0);
        assert!(
            result.is_err(),
            "{policy:?}: indexed at a DELETING path: {result:?}"
        );
    }
    let restored = StoredFile {
        filesystem_id: fs,
        rel_path: "p.dcm".into(),
        size: 100,
        sha256: "00".repeat(32),
    };
    assert!(
        index
            .add_online_file("15.1.1.1", &restored, 1)
            .await
            .is_err(),
        "a restore recorded its file at a DELETING path"
    );
    let files: Vec<(String, String)> = sqlx::query_as("SELECT path, status FROM file")
        .fetch_all(index.pool_for_tests())
        .await
        .expect("files");
    assert_eq!(files, vec![("p.dcm".to_string(), "DELETING".to_string())]);
    let study = index.study("15.1").await.expect("q").expect("study");
    assert_eq!((study.num_instances, study.size_bytes), (1, 100));
    // The job's last step; then a new copy may have the path.
    let ids: Vec<i64> = index
        .deleting_files("15.1")
        .await
        .expect("deleting")
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    index.remove_file_rows(&ids).await.expect("drop rows");
    let outcome = one(
        &index,
        new_instance(r(), fs, "p.dcm", 120, DuplicatePolicy::FillMissing),
    )
    .await;
    assert_eq!(outcome, StoreOutcome::Stored);
}

async fn conflicts_are_refused_without_side_effects(index: Index) {
    let fs = filesystem_id(&index).await;
    let keep = DuplicatePolicy::KeepFirst;
    one(
        &index,
        new_instance(
            record("P1", "3.1", "3.1.1", "3.1.1.1", "CT"),
            fs,
            "x/1.dcm",
            10,
            keep,
        ),
    )
    .await;
    let before = index.counts().await.expect("counts");

    // Series 3.1.1 arrives claiming to be in a new study 3.2.
    let outcome = one(
        &index,
        new_instance(
            record("P1", "3.2", "3.1.1", "3.1.1.2", "CT"),
            fs,
            "x/2.dcm",
            10,
            keep,
        ),
    )
    .await;
    let StoreOutcome::Conflict(conflict) = outcome else {
        panic!("expected conflict, got {outcome:?}")
    };
    let message = conflict.to_string();
    assert!(
        message.contains("3.1.1") && message.contains("3.1") && message.contains("3.2"),
        "{message}"
    );
    assert!(matches!(
        conflict,
        IntegrityConflict::SeriesInOtherStudy { .. }
    ));

    // Study 3.1 arrives under another patient ID.
    let outcome = one(
        &index,
        new_instance(
            record("P2", "3.1", "3.1.9", "3.1.9.1", "CT"),
            fs,
            "x/3.dcm",
            10,
            keep,
        ),
    )
    .await;
    let StoreOutcome::Conflict(conflict) = outcome else {
        panic!("expected conflict, got {outcome:?}")
    };
    assert!(matches!(
        conflict,
        IntegrityConflict::StudyOfOtherPatient { .. }
    ));
    let message = conflict.to_string();
    assert!(
        message.contains("P1") && message.contains("P2") && message.contains("3.1"),
        "{message}"
    );

    assert_eq!(
        index.counts().await.expect("counts"),
        before,
        "a refused instance leaves no rows"
    );
    assert!(index.study("3.2").await.expect("q").is_none());
}

async fn a_batch_survives_one_bad_member(index: Index) {
    let fs = filesystem_id(&index).await;
    let keep = DuplicatePolicy::KeepFirst;
    one(
        &index,
        new_instance(
            record("P1", "4.1", "4.1.1", "4.1.1.1", "CT"),
            fs,
            "b/1.dcm",
            10,
            keep,
        ),
    )
    .await;
    let batch = vec![
        new_instance(
            record("P1", "4.1", "4.1.1", "4.1.1.2", "CT"),
            fs,
            "b/2.dcm",
            10,
            keep,
        ),
        new_instance(
            record("P1", "4.9", "4.1.1", "4.1.1.3", "CT"),
            fs,
            "b/3.dcm",
            10,
            keep,
        ),
        // Same path as an existing file row: violates UNIQUE(filesystem, path), a DB error.
        new_instance(
            record("P1", "4.1", "4.1.1", "4.1.1.4", "CT"),
            fs,
            "b/1.dcm",
            10,
            keep,
        ),
        new_instance(
            record("P1", "4.1", "4.1.1", "4.1.1.5", "CT"),
            fs,
            "b/5.dcm",
            10,
            keep,
        ),
    ];
    let results = index.store_batch(&batch).await;
    assert_eq!(results.len(), 4);
    assert!(matches!(results[0], Ok(StoreOutcome::Stored)));
    assert!(matches!(results[1], Ok(StoreOutcome::Conflict(_))));
    assert!(
        results[2].is_err(),
        "database error reported for that member only"
    );
    assert!(matches!(results[3], Ok(StoreOutcome::Stored)));
    let study = index.study("4.1").await.expect("q").expect("study");
    assert_eq!(study.num_instances, 3);
}

/// The counters of every series and study a batch touches, added up in one statement per
/// table: each row gets its own sums, and a second batch adds to them.
async fn one_batch_counts_each_series_and_study(index: Index) {
    let fs = filesystem_id(&index).await;
    let keep = DuplicatePolicy::KeepFirst;
    let member = |study: &str, series: &str, sop: &str, size: u64| {
        let path = format!("c/{sop}.dcm");
        new_instance(
            record("P6", study, series, sop, "CT"),
            fs,
            &path,
            size,
            keep,
        )
    };
    let first = [
        member("6.1", "6.1.1", "6.1.1.1", 100),
        member("6.1", "6.1.1", "6.1.1.2", 20),
        member("6.1", "6.1.2", "6.1.2.1", 3),
        member("6.2", "6.2.1", "6.2.1.1", 4000),
    ];
    let second = [
        member("6.1", "6.1.2", "6.1.2.2", 50000),
        member("6.2", "6.2.1", "6.2.1.2", 600000),
    ];
    for batch in [&first[..], &second[..]] {
        let results = index.store_batch(batch).await;
        assert!(results
            .iter()
            .all(|r| matches!(r, Ok(StoreOutcome::Stored))));
    }
    for (uid, counts) in [("6.1", (4, 50123)), ("6.2", (2, 604000))] {
        let study = index.study(uid).await.expect("query").expect("study");
        assert_eq!(
            (study.num_instances, study.size_bytes),
            counts,
            "study {uid}"
        );
    }
    assert_eq!(
        series_counts(&index, "6.1").await,
        vec![("6.1.1".into(), 2, 120), ("6.1.2".into(), 2, 50003)]
    );
}

async fn filesystems_sync_by_path(index: Index) {
    let mut wanted = vec![
        FilesystemConfig {
            group: "ONLINE_STORAGE".into(),
            path: "/a".into(),
            mode: FilesystemMode::Rw,
            min_free: archive_core::config::ByteSize(5),
        },
        FilesystemConfig {
            group: "ONLINE_STORAGE".into(),
            path: "/b".into(),
            mode: FilesystemMode::Rw,
            min_free: archive_core::config::ByteSize(6),
        },
    ];
    let first = index.sync_filesystems(&wanted).await.expect("sync");
    assert_eq!(first.len(), 2);
    wanted[0].mode = FilesystemMode::Ro;
    let second = index.sync_filesystems(&wanted).await.expect("sync again");
    assert_eq!(second.len(), 2, "no duplicates on restart");
    assert_eq!(
        second[0].id, first[0].id,
        "ids are stable: file rows point at them"
    );
    assert_eq!(second[0].mode, "ro");
    assert!(!second[0].is_writable());
    index.migrate().await.expect("migrating twice is harmless");
}

/// The C-FIND matching kinds against a small known set of studies.
async fn find_matches_like_pacs_users_expect(index: Index) {
    use archive_core::query::{Attr, FindQuery, Level, Matcher, QueryKey, ValueKind};
    let fs = filesystem_id(&index).await;
    let keep = DuplicatePolicy::KeepFirst;
    let make = |patient: &str,
                name: &str,
                study: &str,
                date: &str,
                series: &str,
                sop: &str,
                modality: &str| {
        let mut r = record(patient, study, series, sop, modality);
        r.patient.patient_name = name.into();
        r.study.study_date = date.into();
        new_instance(r, fs, &format!("f/{sop}.dcm"), 10, keep)
    };
    let batch = vec![
        make(
            "P1", "Doe^John", "5.1", "20240115", "5.1.1", "5.1.1.1", "CT",
        ),
        make(
            "P1", "Doe^John", "5.1", "20240115", "5.1.1", "5.1.1.2", "CT",
        ),
        make(
            "P1", "Doe^John", "5.1", "20240115", "5.1.2", "5.1.2.1", "SR",
        ),
        make(
            "P2",
            "Smith^Anna",
            "5.2",
            "20240301",
            "5.2.1",
            "5.2.1.1",
            "MR",
        ),
        make(
            "P3", "doe^jane", "5.3", "20231231", "5.3.1", "5.3.1.1", "CT",
        ),
    ];
    assert!(index
        .store_batch(&batch)
        .await
        .iter()
        .all(|r| matches!(r, Ok(StoreOutcome::Stored))));

    let find = |level: Level, keys: Vec<(Attr, &str)>| {
        let keys = keys
            .into_iter()
            .map(|(attr, value)| QueryKey {
                attr,
                matcher: Matcher::parse(value, attr.kind()).expect("valid key"),
            })
            .collect();
        FindQuery {
            level,
            keys,
            limit: 100,
            offset: None,
        }
    };
    let study_uids = |rows: Vec<archive_core::query::FindRow>| {
        let mut uids: Vec<String> = rows
            .iter()
            .map(|r| r[&Attr::StudyInstanceUid].clone())
            .collect();
        uids.sort();
        uids
    };
    let studies = |keys: Vec<(Attr, &str)>| {
        let query = find(Level::Study, keys);
        let index = index.clone();
        async move { study_uids(index.find(&query).await.expect("find")) }
    };

    assert_eq!(
        studies(vec![(Attr::PatientName, "doe*")]).await,
        ["5.1", "5.3"],
        "names match case-insensitively"
    );
    assert_eq!(
        studies(vec![(Attr::PatientName, "DOE^JOHN")]).await,
        ["5.1"]
    );
    assert_eq!(
        studies(vec![(Attr::PatientName, "")]).await,
        ["5.1", "5.2", "5.3"],
        "universal"
    );
    assert_eq!(
        studies(vec![(Attr::StudyDate, "20240101-")]).await,
        ["5.1", "5.2"]
    );
    assert_eq!(studies(vec![(Attr::StudyDate, "-20231231")]).await, ["5.3"]);
    assert_eq!(
        studies(vec![(Attr::StudyDate, "20240101-20240131")]).await,
        ["5.1"]
    );
    assert_eq!(studies(vec![(Attr::StudyDate, "20240301")]).await, ["5.2"]);
    assert_eq!(
        studies(vec![(Attr::AccessionNumber, "ACC-5.?")]).await,
        ["5.1", "5.2", "5.3"]
    );
    assert_eq!(
        studies(vec![(Attr::AccessionNumber, "ACC-5.2")]).await,
        ["5.2"]
    );
    assert_eq!(
        studies(vec![(Attr::StudyInstanceUid, "5.1\\5.3")]).await,
        ["5.1", "5.3"],
        "UID list"
    );
    assert_eq!(
        studies(vec![(Attr::ModalitiesInStudy, "SR")]).await,
        ["5.1"]
    );
    assert_eq!(
        studies(vec![(Attr::ModalitiesInStudy, "MR\\SR")]).await,
        ["5.1", "5.2"]
    );
    assert_eq!(
        studies(vec![(Attr::StudyDescription, "ch*")]).await,
        Vec::<String>::new(),
        "text is case-sensitive"
    );
    assert_eq!(
        studies(vec![(Attr::StudyDescription, "Ch*")]).await,
        ["5.1", "5.2", "5.3"]
    );
    assert_eq!(
        studies(vec![
            (Attr::PatientId, "P1"),
            (Attr::StudyDate, "-20231231")
        ])
        .await,
        Vec::<String>::new(),
        "keys combine with AND"
    );

    let rows = index
        .find(&find(
            Level::Study,
            vec![
                (Attr::StudyInstanceUid, "5.1"),
                (Attr::NumberOfStudyRelatedInstances, ""),
                (Attr::NumberOfStudyRelatedSeries, ""),
                (Attr::ModalitiesInStudy, ""),
                (Attr::InstanceAvailability, ""),
                (Attr::PatientName, ""),
            ],
        ))
        .await
        .expect("find");
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0][&Attr::NumberOfStudyRelatedInstances], "3");
    assert_eq!(rows[0][&Attr::NumberOfStudyRelatedSeries], "2");
    assert_eq!(rows[0][&Attr::ModalitiesInStudy], "CT\\SR");
    assert_eq!(rows[0][&Attr::InstanceAvailability], "ONLINE");
    assert_eq!(
        rows[0][&Attr::PatientName],
        "Doe^John",
        "values come back as stored"
    );

    let series = index
        .find(&find(
            Level::Series,
            vec![
                (Attr::StudyInstanceUid, "5.1"),
                (Attr::Modality, "CT"),
                (Attr::NumberOfSeriesRelatedInstances, ""),
            ],
        ))
        .await
        .expect("find");
    assert_eq!(series.len(), 1);
    assert_eq!(series[0][&Attr::SeriesInstanceUid], "5.1.1");
    assert_eq!(series[0][&Attr::NumberOfSeriesRelatedInstances], "2");
    assert_eq!(
        series[0][&Attr::StudyInstanceUid],
        "5.1",
        "higher unique keys come back"
    );

    let images = index
        .find(&find(
            Level::Image,
            vec![
                (Attr::SeriesInstanceUid, "5.1.1"),
                (Attr::InstanceNumber, ""),
            ],
        ))
        .await
        .expect("find");
    assert_eq!(images.len(), 2);
    assert_eq!(images[0][&Attr::InstanceNumber], "7");
    let one = index
        .find(&find(Level::Image, vec![(Attr::SopInstanceUid, "5.1.2.1")]))
        .await
        .expect("find");
    assert_eq!(one.len(), 1);

    let patients = index
        .find(&find(
            Level::Patient,
            vec![
                (Attr::PatientId, "P1"),
                (Attr::NumberOfPatientRelatedStudies, ""),
                (Attr::NumberOfPatientRelatedSeries, ""),
                (Attr::NumberOfPatientRelatedInstances, ""),
            ],
        ))
        .await
        .expect("find");
    assert_eq!(patients.len(), 1);
    assert_eq!(patients[0][&Attr::NumberOfPatientRelatedStudies], "1");
    assert_eq!(patients[0][&Attr::NumberOfPatientRelatedSeries], "2");
    assert_eq!(patients[0][&Attr::NumberOfPatientRelatedInstances], "3");

    let mut limited = find(Level::Study, vec![]);
    limited.limit = 1;
    assert_eq!(
        index.find(&limited).await.expect("find").len(),
        2,
        "limit + 1 rows tell the caller it was cut"
    );
    assert_eq!(Attr::StudyDate.kind(), ValueKind::Date);
}

/// Series, study and patient counts are exact whether or not the instances have been folded
/// into the counters yet (`index/counts.rs`), for every reader: the API's rows, C-FIND's
/// attributes, the dashboard totals. A fold moves the counts into the rows (read raw here,
/// so a fold that did nothing would fail), and a duplicate replacing a file adjusts the bytes
/// on either side of the mark exactly once.
async fn counts_are_exact_before_and_after_a_fold(index: Index) {
    use archive_core::query::{Attr, FindQuery, Level, Matcher, QueryKey};
    index.hold_folds_for_tests().await;
    let fs = filesystem_id(&index).await;
    let keep = DuplicatePolicy::KeepFirst;
    let member = |series: &str, sop: &str, size: u64, policy: DuplicatePolicy| {
        let path = format!("k/{sop}-{size}.dcm");
        new_instance(
            record("P8", "8.1", series, sop, "CT"),
            fs,
            &path,
            size,
            policy,
        )
    };
    let find_counts = |level: Level| {
        let keys = [
            Attr::StudyInstanceUid,
            Attr::NumberOfPatientRelatedInstances,
            Attr::NumberOfStudyRelatedInstances,
            Attr::NumberOfSeriesRelatedInstances,
        ]
        .into_iter()
        .filter(|attr| level != Level::Study || *attr != Attr::NumberOfSeriesRelatedInstances)
        .map(|attr| QueryKey {
            attr,
            matcher: Matcher::parse(
                if attr == Attr::StudyInstanceUid {
                    "8.1"
                } else {
                    ""
                },
                attr.kind(),
            )
            .expect("key"),
        })
        .collect();
        FindQuery {
            level,
            keys,
            limit: 10,
            offset: None,
        }
    };
    // (study instances, study bytes, [series (uid, instances, bytes)], C-FIND's numbers)
    let describe = |index: Index| async move {
        let study = index.study("8.1").await.expect("study").expect("exists");
        let series = series_counts(&index, "8.1").await;
        let study_row = &index.find(&find_counts(Level::Study)).await.expect("find")[0];
        let mut series_rows: Vec<String> = index
            .find(&find_counts(Level::Series))
            .await
            .expect("find")
            .iter()
            .map(|r| r[&Attr::NumberOfSeriesRelatedInstances].clone())
            .collect();
        series_rows.sort();
        let totals = index.availability_totals().await.expect("totals");
        (
            (study.num_instances, study.size_bytes),
            series,
            (
                study_row[&Attr::NumberOfPatientRelatedInstances].clone(),
                study_row[&Attr::NumberOfStudyRelatedInstances].clone(),
                series_rows,
            ),
            totals
                .iter()
                .map(|t| (t.studies, t.instances, t.bytes))
                .collect::<Vec<_>>(),
        )
    };
    let raw = |index: Index| async move {
        let row: (i64, i64) =
            sqlx::query_as("SELECT num_instances, size_bytes FROM study WHERE study_uid = '8.1'")
                .fetch_one(index.pool_for_tests())
                .await
                .expect("raw counters");
        row
    };
    let stored = |results: Vec<Result<StoreOutcome, archive_core::index::IndexError>>| {
        assert!(results.iter().all(|r| r.is_ok()), "{results:?}");
    };

    stored(
        index
            .store_batch(&[
                member("8.1.1", "8.1.1.1", 100, keep),
                member("8.1.1", "8.1.1.2", 20, keep),
            ])
            .await,
    );
    index.fold_counts().await.expect("fold");
    stored(
        index
            .store_batch(&[
                member("8.1.1", "8.1.1.3", 3, keep),
                member("8.1.2", "8.1.2.1", 4000, keep),
            ])
            .await,
    );
    let expected = (
        (4, 4123),
        vec![
            ("8.1.1".to_string(), 3, 123),
            ("8.1.2".to_string(), 1, 4000),
        ],
        (
            "4".to_string(),
            "4".to_string(),
            vec!["1".to_string(), "3".to_string()],
        ),
        vec![(1, 4, 4123)],
    );
    assert_eq!(
        describe(index.clone()).await,
        expected,
        "two instances not folded yet"
    );
    assert_eq!(
        raw(index.clone()).await,
        (2, 120),
        "the rows hold the folded part only"
    );

    // A replaced file: one instance below the mark, one above it.
    let replace = DuplicatePolicy::Replace;
    for new in [
        member("8.1.1", "8.1.1.1", 150, replace),
        member("8.1.2", "8.1.2.1", 4100, replace),
    ] {
        assert!(matches!(
            one(&index, new).await,
            StoreOutcome::Replaced { .. }
        ));
    }
    let expected = (
        (4, 4273),
        vec![
            ("8.1.1".to_string(), 3, 173),
            ("8.1.2".to_string(), 1, 4100),
        ],
        expected.2,
        vec![(1, 4, 4273)],
    );
    assert_eq!(
        describe(index.clone()).await,
        expected,
        "replaced on both sides of the mark"
    );

    assert_eq!(index.fold_counts().await.expect("fold"), 2);
    assert_eq!(
        raw(index.clone()).await,
        (4, 4273),
        "the fold moved the counts into the row"
    );
    assert_eq!(
        describe(index.clone()).await,
        expected,
        "a fold changes no count"
    );
    assert_eq!(
        index.fold_counts().await.expect("fold"),
        0,
        "nothing left to fold"
    );
    assert_eq!(describe(index.clone()).await, expected);

    if index.dialect() == archive_core::index::Dialect::Postgres {
        // An open ingest batch holds the ingest lock in shared mode from its BEGIN: the fold
        // waits for it (and gives up after its lock timeout) rather than move the mark past
        // ids that may still commit.
        let mut batch = index.pool_for_tests().acquire().await.expect("connection");
        sqlx::raw_sql("BEGIN; SELECT pg_advisory_xact_lock_shared(6004514643731611649)")
            .execute(&mut *batch)
            .await
            .expect("batch lock");
        one(&index, member("8.1.2", "8.1.2.9", 7, keep)).await;
        assert!(
            index.fold_counts().await.is_err(),
            "the fold must wait for open batches"
        );
        sqlx::raw_sql("ROLLBACK")
            .execute(&mut *batch)
            .await
            .expect("end batch");
        assert_eq!(index.fold_counts().await.expect("fold"), 1);
        let study = index.study("8.1").await.expect("study").expect("exists");
        assert_eq!((study.num_instances, study.size_bytes), (5, 4280));
    }

    // A study that went NEARLINE is ONLINE again when a new instance arrives.
    sqlx::query("UPDATE study SET availability = 'NEARLINE' WHERE study_uid = '8.1'")
        .execute(index.pool_for_tests())
        .await
        .expect("mark nearline");
    let before = index.study("8.1").await.expect("study").expect("exists");
    assert_eq!(
        one(&index, member("8.1.2", "8.1.2.2", 1, keep)).await,
        StoreOutcome::Stored
    );
    let study = index.study("8.1").await.expect("study").expect("exists");
    assert_eq!(
        (study.availability, study.num_instances, study.size_bytes),
        (
            Availability::Online,
            before.num_instances + 1,
            before.size_bytes + 1
        )
    );
}

macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(#[tokio::test] async fn $name() { let (index, _dir) = super::sqlite_index().await; super::$name(index).await; })*
        }
        mod postgres {
            $(#[tokio::test] async fn $name() { super::$name(super::postgres_index().await).await; })*
        }
    };
}

on_both_backends!(
    stores_and_describes_a_study,
    duplicates_follow_the_policy,
    a_duplicate_within_one_batch_replaces_the_first,
    fill_missing_gives_a_file_only_where_there_is_none,
    a_replace_never_takes_over_a_file_being_deleted,
    a_path_being_deleted_is_given_to_no_other_file,
    conflicts_are_refused_without_side_effects,
    a_batch_survives_one_bad_member,
    one_batch_counts_each_series_and_study,
    counts_are_exact_before_and_after_a_fold,
    filesystems_sync_by_path,
    find_matches_like_pacs_users_expect,
    jobs_are_claimed_once_and_leases_expire,
    packs_track_what_is_copied,
    rule_copies_are_queued_only_for_uncopied_studies,
    copy_rules_see_instances_not_yet_folded,
    audit_events_are_appended_filtered_and_never_changed,
);

async fn audit_events_are_appended_filtered_and_never_changed(index: Index) {
    use archive_core::audit::{AuditAction, AuditFilter, AuditOutcome, Auditor, NewAuditEvent};
    let auditor = Auditor::start(index.clone(), "node-a".into(), None);
    for n in 0..1200 {
        let outcome = AuditOutcome::of(n % 100 != 0);
        let event = NewAuditEvent::new(AuditAction::Store, outcome, format!("CT{}", n % 3))
            .peer("10.1.2.3")
            .study(format!("1.2.{}", n % 7))
            .patient("PAT'1")
            .detail("C-STORE: 1 stored, 0 refused");
        auditor.record(event).await;
    }
    auditor
        .record(NewAuditEvent::new(
            AuditAction::Login,
            AuditOutcome::Failure,
            "admin-ui",
        ))
        .await;
    auditor.flush().await;
    assert_eq!(auditor.dropped(), 0);

    let all = |filter: AuditFilter| {
        let index = index.clone();
        async move { index.list_audit_events(&filter).await.expect("list") }
    };
    let newest = all(AuditFilter::default()).await;
    assert_eq!(newest.len(), 100, "100 unless asked");
    assert_eq!(newest[0].action, AuditAction::Login, "newest first");
    assert_eq!(newest[0].node, "node-a");
    let failures = all(AuditFilter {
        action: Some(AuditAction::Store),
        outcome: Some(AuditOutcome::Failure),
        limit: 1000,
        ..Default::default()
    })
    .await;
    assert_eq!(failures.len(), 12);
    let study = all(AuditFilter {
        study_uid: Some("1.2.3".into()),
        actor: Some("CT0".into()),
        limit: 1000,
        ..Default::default()
    })
    .await;
    // n ≡ 3 (mod 7) and n ≡ 0 (mod 3): n ≡ 3 (mod 21), 57 of 0..1200.
    assert_eq!(study.len(), 57);
    assert!(study
        .iter()
        .all(|e| e.patient_id == "PAT'1" && e.peer == "10.1.2.3"));
    let page = all(AuditFilter {
        before_id: Some(newest[99].id),
        limit: 5000,
        ..Default::default()
    })
    .await;
    assert_eq!(page.len(), 1000, "capped at 1,000");
    assert!(page[0].id < newest[99].id);
    let window = all(AuditFilter {
        since: Some(newest[0].at),
        until: Some(newest[0].at + 1),
        ..Default::default()
    })
    .await;
    assert!(window.iter().any(|e| e.id == newest[0].id));

    // The table refuses changes, whoever asks.
    let pool = index.pool_for_tests();
    assert!(sqlx::query("UPDATE audit_event SET outcome = 'SUCCESS'")
        .execute(pool)
        .await
        .is_err());
    assert!(sqlx::query("DELETE FROM audit_event")
        .execute(pool)
        .await
        .is_err());
    assert_eq!(all(AuditFilter::default()).await[0].id, newest[0].id);

    // Without a flush, a lone event is still written once the writer's gathering ends.
    auditor
        .record(NewAuditEvent::new(
            AuditAction::Query,
            AuditOutcome::Success,
            "lone-event",
        ))
        .await;
    let lone = AuditFilter {
        actor: Some("lone-event".into()),
        ..Default::default()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while all(lone.clone()).await.is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "an event recorded without a flush was not written within 10 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// Tests of several nodes on one index: PostgreSQL only.
mod postgres_nodes {
    #[tokio::test]
    async fn batches_of_duplicates_do_not_deadlock() {
        super::suite_two_nodes::postgres_batches_of_duplicates_do_not_deadlock().await;
    }

    #[tokio::test]
    async fn two_nodes_replace_one_instance_in_turn() {
        super::suite_two_nodes::postgres_two_nodes_replace_one_instance_in_turn().await;
    }

    #[tokio::test]
    async fn two_nodes_fill_one_missing_file_once() {
        super::suite_two_nodes::postgres_two_nodes_fill_one_missing_file_once().await;
    }

    #[tokio::test]
    async fn retention_never_marks_bytes_replaced_meanwhile() {
        super::suite_two_nodes::postgres_retention_never_marks_bytes_replaced_meanwhile().await;
    }

    #[tokio::test]
    async fn a_replace_racing_retention_gets_its_own_file() {
        super::suite_two_nodes::postgres_a_replace_racing_retention_gets_its_own_file().await;
    }
}
