//! API credentials: a bearer token. Its SHA-256 is all the server keeps in memory; the token
//! itself lives in a file only the archive's user can read (`http.admin_token_file`, default
//! `<data_dir>/admin-token`), created with a random token on first start and printed once.

use axum::extract::{Request, State};
use axum::http::header::AUTHORIZATION;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::Path;

/// The SHA-256 of the admin token. `Debug` shows nothing of it.
#[derive(Clone)]
pub struct AdminToken {
    digest: [u8; 32],
}

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminToken(***)")
    }
}

impl AdminToken {
    pub fn from_secret(secret: &str) -> AdminToken {
        AdminToken {
            digest: Sha256::digest(secret.trim().as_bytes()).into(),
        }
    }

    /// Reads the token file, or creates it with a new random token. Returns the token and,
    /// when it was just created, the token itself so the caller can show it once.
    pub fn load_or_create(path: &Path) -> std::io::Result<(AdminToken, Option<String>)> {
        match std::fs::read_to_string(path) {
            Ok(text) if !text.trim().is_empty() => {
                return Ok((AdminToken::from_secret(&text), None))
            }
            Ok(_) => {}
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => return Err(error),
        }
        // 24 random bytes for the token, 8 more to name the temporary file.
        let mut random = [0u8; 32];
        std::fs::File::open("/dev/urandom")?.read_exact(&mut random)?;
        let secret = hex::encode(&random[..24]);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        // Written whole under a temporary name, then linked into place: a reader never sees
        // an empty or half-written token file, and of two nodes starting at once on a shared
        // directory the second finds the first one's token.
        let temp = path.with_extension(format!("new-{}", hex::encode(&random[24..])));
        use std::os::unix::fs::OpenOptionsExt;
        let written = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&temp)
            .and_then(|mut file| {
                std::io::Write::write_all(&mut file, format!("{secret}\n").as_bytes())?;
                file.sync_all()
            })
            .and_then(|()| std::fs::hard_link(&temp, path));
        let _ = std::fs::remove_file(&temp);
        match written {
            Ok(()) => Ok((AdminToken::from_secret(&secret), Some(secret))),
            Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => {
                let text = std::fs::read_to_string(path)?;
                Ok((AdminToken::from_secret(&text), None))
            }
            Err(error) => Err(error),
        }
    }

    /// The digest: the key that signs UI sessions (so a new token ends every session).
    pub(crate) fn digest(&self) -> &[u8; 32] {
        &self.digest
    }

    /// Compares in constant time (no early exit on the first differing byte).
    pub(crate) fn matches(&self, presented: &str) -> bool {
        let digest: [u8; 32] = Sha256::digest(presented.trim().as_bytes()).into();
        digest
            .iter()
            .zip(self.digest.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
    }
}

/// Rejects requests without `Authorization: Bearer <admin token>` with 401 and no detail.
pub async fn require_token(
    State(token): State<AdminToken>,
    request: Request,
    next: Next,
) -> Response {
    let presented = request
        .headers()
        .get(AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "));
    match presented {
        Some(secret) if token.matches(secret) => {
            crate::audit_http::with_actor(next.run(request).await, "admin")
        }
        _ => crate::api::ApiError::unauthorized().into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_file_is_created_once_private_and_matched() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("admin-token");
        let (token, shown) = AdminToken::load_or_create(&path).expect("create");
        let secret = shown.expect("new token shown once");
        assert!(token.matches(&secret));
        assert!(!token.matches("guess"));
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let (again, shown_again) = AdminToken::load_or_create(&path).expect("load");
        assert!(shown_again.is_none(), "printed only on first start");
        assert!(again.matches(&secret));
        assert!(!format!("{again:?}").contains(&secret));
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .expect("ls")
            .map(|entry| entry.expect("entry").file_name())
            .collect();
        assert_eq!(names, vec!["admin-token"], "no temporary file left behind");
    }

    #[test]
    fn two_nodes_creating_the_token_at_once_agree_on_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("admin-token");
        let results: Vec<_> = std::thread::scope(|scope| {
            let starts: Vec<_> = (0..8)
                .map(|_| scope.spawn(|| AdminToken::load_or_create(&path).expect("token")))
                .collect();
            starts
                .into_iter()
                .map(|s| s.join().expect("thread"))
                .collect()
        });
        let file = std::fs::read_to_string(&path).expect("token file");
        assert!(!file.trim().is_empty());
        for (token, _) in &results {
            assert!(
                token.matches(&file),
                "every caller uses the token in the file"
            );
        }
    }
}
