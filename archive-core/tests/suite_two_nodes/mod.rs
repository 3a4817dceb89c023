//! Several nodes on one PostgreSQL index (included by index_suite.rs; PostgreSQL only:
//! SQLite has one writer).

use super::suite_nearline::local_target;
use super::{filesystem_id, new_file_beside_the_deleting_one, new_instance, one, record};
use archive_core::config::DuplicatePolicy;
use archive_core::index::{Held, Index, NewInstance};
use archive_core::model::StoreOutcome;
use archive_core::nearline::{MemberPlacement, PackStatus};
use archive_core::testing::fresh_postgres_database;
use std::time::Duration;

/// Two nodes on one index, as two `serve` processes would open it.
async fn two_nodes() -> (Index, Index) {
    let url = fresh_postgres_database().await;
    let first = Index::open(&url).await.expect("open postgres");
    first.migrate().await.expect("migrate");
    let second = Index::open(&url).await.expect("open postgres again");
    (first, second)
}

/// Two nodes whose sessions wait a minute before PostgreSQL looks for a deadlock (1 s by
/// default, after which it fails one batch and the batch is retried one instance at a time,
/// which would hide the deadlock from a test): a deadlock shows as batches that never finish.
async fn two_nodes_slow_to_detect_deadlocks() -> (Index, Index) {
    let url = fresh_postgres_database().await;
    let setup = Index::open(&url).await.expect("open postgres");
    let (name,): (String,) = sqlx::query_as("SELECT current_database()::text")
        .fetch_one(setup.pool_for_tests())
        .await
        .expect("database name");
    sqlx::raw_sql(&format!(
        "ALTER DATABASE \"{name}\" SET deadlock_timeout = '60s'"
    ))
    .execute(setup.pool_for_tests())
    .await
    .expect("set deadlock_timeout (superuser)");
    setup.migrate().await.expect("migrate");
    // New nodes, so that every session they open starts with the setting.
    let first = Index::open(&url).await.expect("open postgres");
    let second = Index::open(&url).await.expect("open postgres again");
    (first, second)
}

/// Waits until `n` sessions of the test database wait on a row lock. Polled, not slept: a
/// loaded machine may take long to get there. Fails if `finished()` (a task ended, so it never
/// waited) or after 20 s.
async fn until_waiting(pool: &sqlx::AnyPool, n: usize, finished: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (waiting,): (i64,) = sqlx::query_as(
            "SELECT COUNT(*) FROM pg_stat_activity \
             WHERE datname = current_database() AND wait_event_type = 'Lock'",
        )
        .fetch_one(pool)
        .await
        .expect("pg_stat_activity");
        if waiting == n as i64 {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline && !finished(),
            "{n} sessions must end up waiting for the held rows ({waiting} waiting)"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Runs the stores (each a node and what it is given) while `hold` (SQL run in an open
/// transaction standing in for another node's batch or for retention) keeps the rows it
/// locks; waits until every store is blocked on a row lock, then ends the transaction and
/// returns the outcomes in order.
async fn stores_while_held(
    pool: &sqlx::AnyPool,
    hold: &str,
    stores: Vec<(&Index, NewInstance)>,
) -> Vec<StoreOutcome> {
    let mut holder = pool.acquire().await.expect("connection");
    sqlx::raw_sql(&format!("BEGIN; {hold}"))
        .execute(&mut *holder)
        .await
        .expect("hold the rows");
    let tasks: Vec<_> = stores
        .into_iter()
        .map(|(node, new)| {
            let node = node.clone();
            tokio::spawn(async move { node.store_batch(&[new]).await.remove(0) })
        })
        .collect();
    // Every batch must be under way (waiting for a row) before the holder commits: that is
    // the race.
    until_waiting(pool, tasks.len(), || tasks.iter().any(|t| t.is_finished())).await;
    sqlx::raw_sql("COMMIT")
        .execute(&mut *holder)
        .await
        .expect("release");
    let mut outcomes = Vec::new();
    for task in tasks {
        outcomes.push(task.await.expect("store task").expect("store succeeds"));
    }
    outcomes
}

/// Both nodes get a new copy of one stored instance at once under `replace`: they replace
/// it in turn, so the second replaces the first's file (which would otherwise stay on disk,
/// referenced by nothing) and the counters hold the size of the copy that remains.
pub async fn postgres_two_nodes_replace_one_instance_in_turn() {
    let (a, b) = two_nodes().await;
    let fs = filesystem_id(&a).await;
    let r = || record("P9", "9.1", "9.1.1", "9.1.1.1", "CT");
    let replace =
        |path: &str, size: u64| new_instance(r(), fs, path, size, DuplicatePolicy::Replace);
    assert_eq!(
        one(
            &a,
            new_instance(r(), fs, "first.dcm", 100, DuplicatePolicy::KeepFirst)
        )
        .await,
        StoreOutcome::Stored
    );
    // Folded: the counters' rows hold the first copy's bytes, which a double replacement of
    // it would have counted off.
    a.fold_counts().await.expect("fold");
    // The file row is held too: without the instance's lock both nodes would read the old
    // file and size, then queue on the file row.
    let hold = "SELECT 1 FROM instance WHERE sop_uid = '9.1.1.1' FOR UPDATE; \
                SELECT 1 FROM file WHERE path = 'first.dcm' FOR UPDATE";
    let outcomes = stores_while_held(
        a.pool_for_tests(),
        hold,
        vec![(&a, replace("a.dcm", 200)), (&b, replace("b.dcm", 300))],
    )
    .await;
    let replaced = |outcome: &StoreOutcome| match outcome {
        StoreOutcome::Replaced { old_file } => old_file.rel_path.clone(),
        other => panic!("expected Replaced, got {other:?}"),
    };
    let replaced = (replaced(&outcomes[0]), replaced(&outcomes[1]));
    let kept = a
        .instance_location("9.1.1.1")
        .await
        .expect("q")
        .expect("located");
    let (kept_size, expected) = match kept.rel_path.as_str() {
        "a.dcm" => (200, ("b.dcm".to_string(), "first.dcm".to_string())),
        "b.dcm" => (300, ("first.dcm".to_string(), "a.dcm".to_string())),
        other => panic!("the instance's file is {other}"),
    };
    assert_eq!(
        replaced, expected,
        "one node replaced the first copy, the other the copy the first node left"
    );
    assert_eq!(a.counts().await.expect("counts").files, 1);
    for index in [&a, &b] {
        let study = index.study("9.1").await.expect("q").expect("study");
        assert_eq!((study.num_instances, study.size_bytes), (1, kept_size));
    }
    a.fold_counts().await.expect("fold");
    let study = b.study("9.1").await.expect("q").expect("study");
    assert_eq!((study.num_instances, study.size_bytes), (1, kept_size));
}

/// Both nodes get a copy of an instance held only in a pack under `fill-missing`: one gives
/// it its ONLINE file, the other keeps that one (not two ONLINE files for one instance).
pub async fn postgres_two_nodes_fill_one_missing_file_once() {
    let (a, b) = two_nodes().await;
    let fs = filesystem_id(&a).await;
    let r = || record("P10", "10.1", "10.1.1", "10.1.1.1", "CT");
    let in_pack = NewInstance {
        held: Held::InPackOnly { size: 100 },
        ..new_instance(r(), fs, "", 100, DuplicatePolicy::KeepFirst)
    };
    assert_eq!(one(&a, in_pack).await, StoreOutcome::Stored);
    let fill = |path: &str| new_instance(r(), fs, path, 100, DuplicatePolicy::FillMissing);
    let hold = "SELECT 1 FROM instance WHERE sop_uid = '10.1.1.1' FOR UPDATE";
    let mut outcomes = stores_while_held(
        a.pool_for_tests(),
        hold,
        vec![(&a, fill("a.dcm")), (&b, fill("b.dcm"))],
    )
    .await;
    outcomes.sort_by_key(|outcome| *outcome == StoreOutcome::Stored);
    assert_eq!(
        outcomes,
        vec![StoreOutcome::DuplicateKept, StoreOutcome::Stored]
    );
    assert_eq!(a.study_locations("10.1").await.expect("q").len(), 1);
    let study = b.study("10.1").await.expect("q").expect("study");
    assert_eq!((study.num_instances, study.size_bytes), (1, 100));
}

/// Retention marks a file DELETING (and unlinks that row's path next) while a replacing
/// duplicate of its instance is being indexed: the duplicate must not take the row over (its
/// new file would be the one unlinked) but get a file row of its own.
pub async fn postgres_a_replace_racing_retention_gets_its_own_file() {
    let (index, _) = two_nodes().await;
    let fs = filesystem_id(&index).await;
    let r = || record("P12", "12.1", "12.1.1", "12.1.1.1", "CT");
    one(
        &index,
        new_instance(r(), fs, "old.dcm", 100, DuplicatePolicy::KeepFirst),
    )
    .await;
    // Retention's step 1, not yet committed when the duplicate reads the instance's file.
    let hold = "UPDATE file SET status = 'DELETING' WHERE path = 'old.dcm'";
    let replace = new_instance(r(), fs, "new.dcm", 120, DuplicatePolicy::Replace);
    let outcomes = stores_while_held(index.pool_for_tests(), hold, vec![(&index, replace)]).await;
    assert_eq!(outcomes, vec![StoreOutcome::Stored], "nothing was replaced");
    new_file_beside_the_deleting_one(&index, "12.1").await;
}

/// A replacing duplicate commits while retention marks the study's files: the file now holds
/// bytes no pack has, so retention must not mark it, though the copy it compared when its
/// statement began (the replaced bytes) is ARCHIVED.
pub async fn postgres_retention_never_marks_bytes_replaced_meanwhile() {
    let (index, _) = two_nodes().await;
    let fs = filesystem_id(&index).await;
    let r = || record("P13", "13.1", "13.1.1", "13.1.1.1", "CT");
    one(
        &index,
        new_instance(r(), fs, "old.dcm", 100, DuplicatePolicy::KeepFirst),
    )
    .await;
    let (_, target) = local_target(&index).await;
    let sources = index
        .unpacked_instances("13.1", target.id)
        .await
        .expect("unpacked");
    let placed: Vec<_> = sources
        .iter()
        .map(|source| {
            let placement = MemberPlacement {
                member_path: "13.1.1/13.1.1.1.dcm".into(),
                data_offset: 1024,
                size: source.size,
                blake3: "b3".into(),
            };
            (source.clone(), placement)
        })
        .collect();
    let pack = index
        .begin_pack("13.1", target.id, "13.1/1-1.tar", 1, 10)
        .await
        .expect("begin");
    assert!(index
        .complete_pack(pack, 4096, "ab", &placed, 11)
        .await
        .expect("complete"));
    index
        .set_pack_status(pack, PackStatus::Archived, "", 12)
        .await
        .expect("archived");

    // The replace's UPDATE (REPLACE_FILE) on another node, not yet committed.
    let pool = index.pool_for_tests();
    let mut replacing = pool.acquire().await.expect("connection");
    let new_sha256 = format!("{:064x}", 120);
    sqlx::raw_sql(&format!(
        "BEGIN; UPDATE file SET path = 'new.dcm', size_bytes = 120, sha256 = '{new_sha256}' \
         WHERE path = 'old.dcm'"
    ))
    .execute(&mut *replacing)
    .await
    .expect("replace");
    let retention = {
        let index = index.clone();
        tokio::spawn(async move { index.begin_online_deletion("13.1", "").await })
    };
    until_waiting(pool, 1, || retention.is_finished()).await;
    sqlx::raw_sql("COMMIT")
        .execute(&mut *replacing)
        .await
        .expect("commit");
    let started = retention.await.expect("task").expect("deletion");
    assert_eq!(started.marked, 0, "the new bytes have no copy");
    let files: Vec<(String, String)> = sqlx::query_as("SELECT path, status FROM file")
        .fetch_all(pool)
        .await
        .expect("files");
    assert_eq!(files, vec![("new.dcm".to_string(), "OK".to_string())]);
}

/// Two batches of replacing duplicates in one study, on two nodes, each holding an instance
/// row the other needs: the second batch locked instance c and waits (here for a held file
/// row) before it settles d; the first replaced a and then waits for c. The first batch used
/// to write its series and study rows right after a, and the second, once it went on, the
/// same study row before d: each waited for the other. Now every batch writes series and
/// study rows with its COMMIT, after its instance rows, in one order.
pub async fn postgres_batches_of_duplicates_do_not_deadlock() {
    let (a, b) = two_nodes_slow_to_detect_deadlocks().await;
    let fs = filesystem_id(&a).await;
    let r = |series: &str, sop: &str| record("P14", "14.1", series, sop, "CT");
    for (series, sop, path) in [
        ("14.1.1", "14.1.1.1", "a.dcm"),
        ("14.1.2", "14.1.2.3", "c.dcm"),
        ("14.1.2", "14.1.2.4", "d.dcm"),
    ] {
        let keep = DuplicatePolicy::KeepFirst;
        assert_eq!(
            one(&a, new_instance(r(series, sop), fs, path, 100, keep)).await,
            StoreOutcome::Stored
        );
    }
    a.fold_counts().await.expect("fold");
    let replace = |series, sop, path: &str| {
        new_instance(r(series, sop), fs, path, 150, DuplicatePolicy::Replace)
    };
    let pool = a.pool_for_tests();
    let mut holder = pool.acquire().await.expect("connection");
    sqlx::raw_sql("BEGIN; SELECT 1 FROM file WHERE path = 'c.dcm' FOR UPDATE")
        .execute(&mut *holder)
        .await
        .expect("hold c's file row");
    let batch = [
        replace("14.1.2", "14.1.2.3", "c2.dcm"),
        replace("14.1.2", "14.1.2.4", "d2.dcm"),
    ];
    let node = b.clone();
    let second = tokio::spawn(async move { node.store_batch(&batch).await });
    until_waiting(pool, 1, || second.is_finished()).await;
    let batch = [
        replace("14.1.1", "14.1.1.1", "a1.dcm"),
        replace("14.1.2", "14.1.2.3", "c1.dcm"),
    ];
    let node = a.clone();
    let first = tokio::spawn(async move { node.store_batch(&batch).await });
    until_waiting(pool, 2, || first.is_finished() || second.is_finished()).await;
    sqlx::raw_sql("COMMIT")
        .execute(&mut *holder)
        .await
        .expect("release");
    let both = async { (second.await, first.await) };
    let (second, first) = tokio::time::timeout(Duration::from_secs(30), both)
        .await
        .expect("the two batches deadlocked: still waiting for each other after 30 s");
    let replaced = |results: Vec<_>| -> Vec<String> {
        results
            .into_iter()
            .map(|result| match result {
                Ok(StoreOutcome::Replaced { old_file }) => old_file.rel_path,
                other => panic!("expected Replaced, got {other:?}"),
            })
            .collect()
    };
    assert_eq!(replaced(second.expect("task")), ["c.dcm", "d.dcm"]);
    assert_eq!(
        replaced(first.expect("task")),
        ["a.dcm", "c2.dcm"],
        "the first batch replaced c after the second"
    );
    let c = a
        .instance_location("14.1.2.3")
        .await
        .expect("q")
        .expect("c");
    assert_eq!(c.rel_path, "c1.dcm");
    assert_eq!(a.counts().await.expect("counts").files, 3);
    for _ in 0..2 {
        let study = b.study("14.1").await.expect("q").expect("study");
        assert_eq!((study.num_instances, study.size_bytes), (3, 450));
        a.fold_counts().await.expect("fold");
    }
}
