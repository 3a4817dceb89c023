//! The writes that end a group-commit batch (file and metadata rows, availability) and its
//! COMMIT, sent as one script on SQLite.
//!
//! sqlx runs every SQLite statement on the connection's worker thread: each one is a hand-off
//! there and back, and on a VM those thread switches cost more than the statements. SQLite
//! accepts several statements in one query (sqlx binds `$N` by its number across all of them),
//! so the tail of a batch and its COMMIT are one hand-off instead of four. PostgreSQL's
//! extended protocol takes one statement per query; there they run one by one.

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
