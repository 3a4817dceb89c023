//! Several nodes on one PostgreSQL index (included by index_suite.rs; PostgreSQL only:
//! SQLite has one writer).

use super::{filesystem_id, new_instance, one, record};
use archive_core::config::DuplicatePolicy;
use archive_core::index::{Held, Index, NewInstance};
use archive_core::model::StoreOutcome;
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

/// Starts one store on each node while `hold` (SQL run in an open transaction standing in
/// for a third node's batch) keeps the rows it locks; checks that both stores wait for it,
/// then ends it and returns both outcomes.
async fn store_on_both_while_held(
    nodes: (&Index, &Index),
    hold: &str,
    news: (NewInstance, NewInstance),
) -> (StoreOutcome, StoreOutcome) {
    let mut holder = nodes
        .0
        .pool_for_tests()
        .acquire()
        .await
        .expect("connection");
    sqlx::raw_sql(&format!("BEGIN; {hold}"))
        .execute(&mut *holder)
        .await
        .expect("hold the rows");
    let store = |node: &Index, new: NewInstance| {
        let node = node.clone();
        tokio::spawn(async move { node.store_batch(&[new]).await.remove(0) })
    };
    let first = store(nodes.0, news.0);
    let second = store(nodes.1, news.1);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !first.is_finished() && !second.is_finished(),
        "each node must wait for the instance's row before reading its file"
    );
    sqlx::raw_sql("COMMIT")
        .execute(&mut *holder)
        .await
        .expect("release");
    let first = first.await.expect("store task").expect("store succeeds");
    let second = second.await.expect("store task").expect("store succeeds");
    (first, second)
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
    // The file row is held too: without the instance's lock both nodes would read the old
    // file and size, then queue on the file row.
    let hold = "SELECT 1 FROM instance WHERE sop_uid = '9.1.1.1' FOR UPDATE; \
                SELECT 1 FROM file WHERE path = 'first.dcm' FOR UPDATE";
    let outcomes = store_on_both_while_held(
        (&a, &b),
        hold,
        (replace("a.dcm", 200), replace("b.dcm", 300)),
    )
    .await;
    let replaced = |outcome: &StoreOutcome| match outcome {
        StoreOutcome::Replaced { old_file } => old_file.rel_path.clone(),
        other => panic!("expected Replaced, got {other:?}"),
    };
    let replaced = (replaced(&outcomes.0), replaced(&outcomes.1));
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
    let (first, second) =
        store_on_both_while_held((&a, &b), hold, (fill("a.dcm"), fill("b.dcm"))).await;
    let mut outcomes = vec![first, second];
    outcomes.sort_by_key(|outcome| *outcome == StoreOutcome::Stored);
    assert_eq!(
        outcomes,
        vec![StoreOutcome::DuplicateKept, StoreOutcome::Stored]
    );
    assert_eq!(a.study_locations("10.1").await.expect("q").len(), 1);
    let study = b.study("10.1").await.expect("q").expect("study");
    assert_eq!((study.num_instances, study.size_bytes), (1, 100));
}
