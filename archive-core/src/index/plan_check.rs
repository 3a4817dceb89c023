//! Test helper: SQLite's query plan for a statement of the index, on a freshly migrated index.
//!
//! Strata never runs ANALYZE, so SQLite chooses plans by its heuristics, which take any index
//! on a column compared with a constant as selective. An index on a status column alone then
//! turns "this study's rows with status X" into "every row with status X, then filter by
//! study": correct answers, but a walk over the whole archive per retrieval. The plans of the
//! hot queries are checked here so that such an index cannot come back unnoticed.

use super::Index;
use sqlx::Row;

/// The highest `$n` placeholder in `sql` (0 when there is none).
fn highest_placeholder(sql: &str) -> usize {
    sql.split('$')
        .skip(1)
        .filter_map(|rest| {
            let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
            digits.parse().ok()
        })
        .max()
        .unwrap_or(0)
}

/// The `detail` column of `EXPLAIN QUERY PLAN sql`, with `$1` up to the highest placeholder
/// bound to `''` (the plan does not depend on the values).
pub(super) async fn sqlite_plan(sql: &str) -> Vec<String> {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}/index.db", dir.path().display());
    let index = Index::open(&url).await.expect("open sqlite");
    index.migrate().await.expect("migrate");
    let placeholders = highest_placeholder(sql);
    let explain = format!("EXPLAIN QUERY PLAN {sql}");
    let mut query = sqlx::query(&explain);
    for _ in 0..placeholders {
        query = query.bind("");
    }
    let rows = query.fetch_all(index.pool()).await.expect("explain");
    rows.iter()
        .map(|row| row.try_get::<String, _>("detail").expect("detail column"))
        .collect()
}

/// Asserts that no step of the plan looks rows up by a status column alone.
pub(super) fn assert_no_status_walk(what: &str, plan: &[String]) {
    assert!(
        !plan
            .iter()
            .any(|step| step.contains("(status=?)") || step.contains("(state=?)")),
        "{what}: the plan walks rows by status instead of by the study: {plan:#?}"
    );
}

#[test]
fn placeholders_are_counted_up_to_the_highest() {
    assert_eq!(highest_placeholder("SELECT 1"), 0);
    assert_eq!(highest_placeholder("a = $1 AND b IN ($2, $3, $12)"), 12);
}
