//! The writes that end a group-commit batch (file and metadata rows, availability) and its
//! COMMIT, sent as one script on SQLite.
//!
//! sqlx runs every SQLite statement on the connection's worker thread: each one is a hand-off
//! there and back, and on a VM those thread switches cost more than the statements. SQLite
//! accepts several statements in one query (sqlx binds `$N` by its number across all of them),
//! so the tail of a batch and its COMMIT are one hand-off instead of four. PostgreSQL's
//! extended protocol takes one statement per query; there they run one by one, except those
//! a batch has joined into one ([`CommitScript::combine_queued`]): each but the last becomes
//! a data-modifying `WITH` of the last, one round trip instead of three.

use super::{Dialect, IndexResult};
use sqlx::{AnyConnection, Executor};

/// A value bound to a script statement.
pub(super) enum Param {
    Int(i64),
    Text(String),
    Bytes(Vec<u8>),
}

pub(super) struct CommitScript {
    dialect: Dialect,
    statements: Vec<(String, Vec<Param>)>,
    params: usize,
}

impl CommitScript {
    pub(super) fn new(dialect: Dialect) -> CommitScript {
        CommitScript {
            dialect,
            statements: Vec::new(),
            params: 0,
        }
    }

    /// The number the next statement's first placeholder must have: on SQLite the statements
    /// share one numbering, on PostgreSQL each starts at `$1`.
    pub(super) fn first_placeholder(&self) -> usize {
        match self.dialect {
            Dialect::Sqlite => self.params + 1,
            Dialect::Postgres => 1,
        }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.statements.is_empty()
    }

    /// Adds a statement numbered from [`first_placeholder`](Self::first_placeholder).
    pub(super) fn push(&mut self, sql: String, params: Vec<Param>) {
        self.params += params.len();
        self.statements.push((sql, params));
    }

    /// Sends the queued statements now, without COMMIT: for a read later in the batch that
    /// must see them.
    pub(super) async fn flush(&mut self, conn: &mut AnyConnection) -> IndexResult<()> {
        self.send(conn, None).await
    }

    /// Runs the statements and COMMIT. On error the transaction is still open: roll it back.
    pub(super) async fn run_and_commit(mut self, conn: &mut AnyConnection) -> IndexResult<()> {
        self.send(conn, Some("COMMIT")).await
    }

    /// On PostgreSQL, joins the statements queued so far into one (SQLite sends them as one
    /// script anyway). Only for statements that write different rows and whose order does
    /// not matter: PostgreSQL runs the parts of one statement in an order of its own, each on
    /// the snapshot the statement began with, and a row written by two of them gets only one
    /// of the writes.
    pub(super) fn combine_queued(&mut self) {
        if self.dialect != Dialect::Postgres || self.statements.len() < 2 {
            return;
        }
        let statements = std::mem::take(&mut self.statements);
        self.statements.push(combined(statements));
    }

    async fn send(&mut self, conn: &mut AnyConnection, end: Option<&str>) -> IndexResult<()> {
        let statements = std::mem::take(&mut self.statements);
        let params = std::mem::replace(&mut self.params, 0);
        match self.dialect {
            Dialect::Sqlite => {
                let mut sql = String::new();
                let mut all = Vec::with_capacity(params);
                for (statement, params) in statements {
                    sql.push_str(&statement);
                    sql.push_str(";\n");
                    all.extend(params);
                }
                sql.push_str(end.unwrap_or_default());
                if !sql.is_empty() {
                    bind(sqlx::query(&sql), all).execute(&mut *conn).await?;
                }
            }
            Dialect::Postgres => {
                for (statement, params) in statements {
                    bind(sqlx::query(&statement), params)
                        .execute(&mut *conn)
                        .await?;
                }
                if let Some(end) = end {
                    conn.execute(end).await?;
                }
            }
        }
        Ok(())
    }
}

/// PostgreSQL statements, each numbered from `$1`, as one: `WITH s1 AS (…), s2 AS (…) last`,
/// the placeholders renumbered in sequence.
fn combined(statements: Vec<(String, Vec<Param>)>) -> (String, Vec<Param>) {
    let count = statements.len();
    let mut sql = String::from("WITH ");
    let mut all = Vec::new();
    for (position, (statement, params)) in statements.into_iter().enumerate() {
        let renumbered = renumber(&statement, all.len());
        if position + 1 < count {
            let separator = if position + 2 < count { ", " } else { " " };
            sql.push_str(&format!("s{position} AS ({renumbered}){separator}"));
        } else {
            sql.push_str(&renumbered);
        }
        all.extend(params);
    }
    (sql, all)
}

/// `$N` becomes `$(N + offset)`. The statements are this module's own SQL: no `$` appears in
/// a literal or identifier of theirs.
fn renumber(sql: &str, offset: usize) -> String {
    let mut out = String::with_capacity(sql.len() + 8);
    let mut chars = sql.char_indices().peekable();
    while let Some((_, c)) = chars.next() {
        out.push(c);
        if c != '$' {
            continue;
        }
        let mut number = String::new();
        while let Some((_, digit)) = chars.next_if(|(_, d)| d.is_ascii_digit()) {
            number.push(digit);
        }
        match number.parse::<usize>() {
            Ok(n) => out.push_str(&(n + offset).to_string()),
            Err(_) => out.push_str(&number),
        }
    }
    out
}

fn bind<'q>(
    mut query: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>,
    params: Vec<Param>,
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>> {
    for param in params {
        query = match param {
            Param::Int(value) => query.bind(value),
            Param::Text(value) => query.bind(value),
            Param::Bytes(value) => query.bind(value),
        };
    }
    query
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_are_combined_with_their_placeholders_renumbered() {
        let statement = |sql: &str, n: i64| (sql.to_string(), vec![Param::Int(n), Param::Int(n)]);
        let (sql, params) = combined(vec![
            statement("INSERT INTO a (x, y) VALUES ($1, $2)", 1),
            statement("INSERT INTO b (x, y) VALUES ($1, $2), ($2, $1)", 2),
            statement("UPDATE c SET x = $2 WHERE id IN ($1)", 3),
        ]);
        assert_eq!(
            sql,
            "WITH s0 AS (INSERT INTO a (x, y) VALUES ($1, $2)), \
             s1 AS (INSERT INTO b (x, y) VALUES ($3, $4), ($4, $3)) \
             UPDATE c SET x = $6 WHERE id IN ($5)"
        );
        assert_eq!(params.len(), 6);
    }

    #[test]
    fn renumbering_keeps_everything_but_placeholders() {
        assert_eq!(
            renumber("a = $10 || '\\' AND b = $9", 3),
            "a = $13 || '\\' AND b = $12"
        );
    }
}
