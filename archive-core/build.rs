//! `sqlx::migrate!` embeds the migration files at compile time, but on stable Rust cargo does
//! not know that it reads them: adding or editing a migration without touching any Rust file
//! would leave a build that still carries the old set. This makes any change under
//! `migrations/` rebuild archive-core (what sqlx's documentation of `migrate!` advises).
fn main() {
    println!("cargo:rerun-if-changed=../migrations");
}
