//! Helpers for tests in every crate of the workspace (feature `test-support`).
//!
//! PostgreSQL tests need `STRATA_TEST_PG_URL` (an admin URL such as
//! `postgres://root@127.0.0.1:5432/postgres`); `scripts/test.sh` sets it. Without it they fail
//! with a message saying so: a suite that silently skips PostgreSQL proves nothing.

use sqlx::Executor;

/// Name of the environment variable holding the PostgreSQL admin URL for tests.
pub const PG_URL_VAR: &str = "STRATA_TEST_PG_URL";

/// Creates a fresh, uniquely named PostgreSQL database and returns its URL.
pub async fn fresh_postgres_database() -> String {
    let admin_url = std::env::var(PG_URL_VAR).unwrap_or_else(|_| {
        panic!(
            "{PG_URL_VAR} is not set. PostgreSQL tests need it (run scripts/test.sh, or set it to \
             e.g. postgres://root@127.0.0.1:5432/postgres)"
        )
    });
    sqlx::any::install_default_drivers();
    let mut admin = connect_admin(&admin_url).await;
    let name = format!(
        "strata_t_{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ) + &format!("_{}", crate::index::now_millis() % 1_000_000_000);
    admin
        .execute(format!("DROP DATABASE IF EXISTS {name}").as_str())
        .await
        .expect("drop old test database");
    admin
        .execute(format!("CREATE DATABASE {name}").as_str())
        .await
        .expect("create test database");
    replace_database_name(&admin_url, &name)
}

/// Drops the database `url` names and creates it again, empty: a test losing its index.
pub async fn recreate_postgres_database(url: &str) {
    let admin_url = std::env::var(PG_URL_VAR)
        .unwrap_or_else(|_| panic!("{PG_URL_VAR} is not set (see fresh_postgres_database)"));
    let name = url
        .split('?')
        .next()
        .and_then(|base| base.rsplit('/').next())
        .unwrap_or_default()
        .to_string();
    assert!(
        name.starts_with("strata_t_"),
        "only a test database is dropped: {name}"
    );
    sqlx::any::install_default_drivers();
    let mut admin = connect_admin(&admin_url).await;
    admin
        .execute(format!("DROP DATABASE {name} WITH (FORCE)").as_str())
        .await
        .expect("drop test database");
    admin
        .execute(format!("CREATE DATABASE {name}").as_str())
        .await
        .expect("create test database");
}

static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

async fn connect_admin(url: &str) -> sqlx::AnyConnection {
    use sqlx::Connection;
    sqlx::AnyConnection::connect(url)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to PostgreSQL at {PG_URL_VAR}: {e}"))
}

/// `postgres://u@h:5432/postgres?x=y` with name `db` → `postgres://u@h:5432/db?x=y`.
pub fn replace_database_name(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let scheme_end = base.find("://").map(|i| i + 3).unwrap_or(0);
    let path_start = base[scheme_end..]
        .find('/')
        .map(|i| i + scheme_end)
        .unwrap_or(base.len());
    let mut result = format!("{}/{}", &base[..path_start], name);
    if let Some(query) = query {
        result.push('?');
        result.push_str(query);
    }
    result
}

#[cfg(test)]
mod tests {
    #[test]
    fn replaces_database_name() {
        assert_eq!(
            super::replace_database_name("postgres://root@127.0.0.1:5432/postgres", "x"),
            "postgres://root@127.0.0.1:5432/x"
        );
        assert_eq!(
            super::replace_database_name("postgres://root@h?sslmode=disable", "x"),
            "postgres://root@h/x?sslmode=disable"
        );
    }
}
