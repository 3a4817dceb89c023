//! The admin UI end to end: sessions and CSRF checked over raw HTTP, then the whole admin
//! workflow in Debian's headless chromium driven by Playwright (tests/ui/admin.mjs), with a
//! screenshot of every page under target/ui-screenshots/.

#[macro_use]
mod common;

use common::lifecycle::*;
use common::{Backend, Strata};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

/// One HTTP/1.0 request with a form body; returns status, headers and body as text.
fn request(
    strata: &Strata,
    method: &str,
    path: &str,
    cookie: Option<&str>,
    form: &str,
) -> (u16, String, String) {
    let mut stream =
        std::net::TcpStream::connect(("127.0.0.1", strata.http_port)).expect("connect");
    let mut text = format!("{method} {path} HTTP/1.0\r\nHost: localhost\r\n");
    if let Some(cookie) = cookie {
        text.push_str(&format!("Cookie: strata_session={cookie}\r\n"));
    }
    if method == "POST" {
        text.push_str(&format!(
            "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n",
            form.len()
        ));
    }
    text.push_str("\r\n");
    text.push_str(form);
    stream.write_all(text.as_bytes()).expect("send");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("receive");
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status");
    (status, head.to_string(), body.to_string())
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines()
        .filter_map(|line| line.split_once(':'))
        .find(|(key, _)| key.eq_ignore_ascii_case(name))
        .map(|(_, value)| value.trim())
}

fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Logs in; returns the session cookie's value.
fn log_in(strata: &Strata, token: &str) -> String {
    let (status, head, _) = request(
        strata,
        "POST",
        "/ui/login",
        None,
        &format!("token={}&next=%2Fui%2Ffilesystems", encode(token)),
    );
    assert_eq!(status, 303, "login redirects");
    assert_eq!(header(&head, "location"), Some("/ui/filesystems"));
    let cookie = header(&head, "set-cookie").expect("a session cookie");
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    // Plain HTTP (these tests): a Secure cookie would never come back. Over HTTPS it is
    // Secure (the browser test and tests/tls.rs).
    assert!(!cookie.contains("Secure"), "{cookie}");
    let value = cookie
        .trim_start_matches("strata_session=")
        .split(';')
        .next()
        .expect("value");
    value.to_string()
}

async fn sessions_and_csrf_protect_every_change(backend: Backend) {
    let strata = Strata::start(backend, "").await;
    let token = strata.api_token();

    // No session: pages redirect to the login form, changes are refused.
    let (status, head, _) = request(&strata, "GET", "/ui/studies", None, "");
    assert_eq!(status, 303);
    assert_eq!(
        header(&head, "location"),
        Some("/ui/login?next=%2Fui%2Fstudies")
    );
    let (status, _, body) = request(
        &strata,
        "POST",
        "/ui/login",
        None,
        "token=wrong&next=%2Fui%2F",
    );
    assert_eq!(status, 401);
    assert!(body.contains("Wrong token.") && !body.contains(&token));
    // `next` cannot send the browser to another site.
    let (_, head, _) = request(
        &strata,
        "POST",
        "/ui/login",
        None,
        &format!(
            "token={}&next=https%3A%2F%2Fevil.example%2F",
            encode(&token)
        ),
    );
    assert_eq!(header(&head, "location"), Some("/ui/"));

    let cookie = log_in(&strata, &token);
    let (status, _, page) = request(&strata, "GET", "/ui/filesystems", Some(&cookie), "");
    assert_eq!(status, 200);
    let csrf = page
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("a CSRF field");
    assert_eq!(csrf.len(), 64);
    assert!(!page.contains(&token), "the token never appears in a page");

    let new_dir = strata.data_dir().join("online-2");
    let form = |csrf: &str| {
        format!(
            "csrf={csrf}&path={}&group=ONLINE_STORAGE&mode=rw&min_free=1GiB",
            encode(&new_dir.display().to_string())
        )
    };
    // A forged form (no token, or another session's token) changes nothing.
    for forged in ["", "00".repeat(32).as_str()] {
        let (status, _, _) = request(
            &strata,
            "POST",
            "/ui/filesystems",
            Some(&cookie),
            &form(forged),
        );
        assert_eq!(status, 403, "CSRF token {forged:?}");
    }
    let other_session = log_in(&strata, &token);
    let (status, _, _) = request(
        &strata,
        "POST",
        "/ui/filesystems",
        Some(&other_session),
        &form(csrf),
    );
    assert_eq!(status, 403, "a CSRF token belongs to its session");
    // A cookie that was tampered with is no session.
    let tampered = format!("9{cookie}");
    let (status, _, _) = request(
        &strata,
        "POST",
        "/ui/filesystems",
        Some(&tampered),
        &form(csrf),
    );
    assert_eq!(status, 303);
    assert!(
        !new_dir.exists(),
        "no forged request reached the filesystem code"
    );

    // The genuine form works, and the API sees the new filesystem.
    let (status, head, _) = request(
        &strata,
        "POST",
        "/ui/filesystems",
        Some(&cookie),
        &form(csrf),
    );
    assert_eq!(status, 303);
    assert!(
        header(&head, "location").is_some_and(|l| l.contains("?ok=")),
        "{head}"
    );
    assert!(new_dir.join(".incoming").is_dir());
    let index = strata.index().await;
    let rows = index.filesystems().await.expect("filesystems");
    assert!(
        rows.iter().any(|fs| Path::new(&fs.path) == new_dir),
        "{rows:?}"
    );

    // Logging out clears the cookie.
    let (status, head, _) = request(
        &strata,
        "POST",
        "/ui/logout",
        Some(&cookie),
        &format!("csrf={csrf}"),
    );
    assert_eq!(status, 303);
    assert!(header(&head, "set-cookie").is_some_and(|c| c.contains("Max-Age=0")));
}

fn screenshots_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/ui-screenshots");
    std::fs::create_dir_all(&dir).expect("screenshot dir");
    dir
}

/// Fails loudly when the browser test's tools are missing: CI must not skip it.
fn browser_tools() -> (PathBuf, PathBuf) {
    let ui = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/ui");
    let chromium =
        PathBuf::from(std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into()));
    assert!(
        chromium.exists(),
        "{} is missing: run scripts/test.sh (it installs Debian's chromium)",
        chromium.display()
    );
    assert!(
        ui.join("node_modules/playwright-core").is_dir(),
        "playwright-core is missing: run scripts/test.sh (it runs `npm ci` in tests/ui)"
    );
    (ui, chromium)
}

#[tokio::test(flavor = "multi_thread")]
async fn an_admin_runs_the_archive_from_the_browser() {
    let (ui, chromium) = browser_tools();
    // Over HTTPS, as a hospital would run it (tests/tls.rs checks the certificate with curl).
    let cert_dir = tempfile::tempdir().expect("tempdir");
    let certs = common::tls::make(cert_dir.path());
    let (cert, key) = certs.server();
    let https = format!(
        "[http]\ntls_cert = \"{}\"\ntls_key = \"{}\"\n",
        cert.display(),
        key.display()
    );
    let strata = Strata::start(Backend::Sqlite, &(lifecycle_toml("", "") + &https)).await;
    let study = ingest(&strata, 1, 2, 64).await.remove(0);
    let new_fs = strata.data_dir().join("online-added-in-ui");
    let shots = screenshots_dir();
    let output = Command::new("node")
        .arg(ui.join("admin.mjs"))
        .current_dir(&ui)
        .env(
            "STRATA_URL",
            format!("https://127.0.0.1:{}", strata.http_port),
        )
        .env("STRATA_TOKEN", strata.api_token())
        .env("STUDY_UID", &study)
        .env("NEW_FS_PATH", new_fs.display().to_string())
        .env("SCREENSHOTS", &shots)
        .env("CHROMIUM", &chromium)
        .output()
        .expect("node runs (Debian's nodejs)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "browser test failed\n{stdout}\n{stderr}\n--- strata log\n{}",
        strata.log()
    );
    assert!(stdout.contains("all steps passed"), "{stdout}");

    // What the browser did, checked from the index: the filesystem is there (read-only now),
    // the study is NEARLINE with one ARCHIVED pack, and every page left a screenshot.
    let index = strata.index().await;
    let added = index
        .filesystems()
        .await
        .expect("filesystems")
        .into_iter()
        .find(|fs| Path::new(&fs.path) == new_fs)
        .expect("filesystem added in the UI");
    assert_eq!(added.mode, "ro");
    assert_eq!(added.min_free_bytes, 2 << 30);
    let row = index.study(&study).await.expect("study").expect("indexed");
    assert_eq!(row.availability, "NEARLINE");
    let archived = packs(&index, &study)
        .await
        .into_iter()
        .filter(|p| p.status == "ARCHIVED")
        .count();
    assert_eq!(archived, 1);
    for name in [
        "login",
        "dashboard",
        "filesystems",
        "retention-rule",
        "studies",
        "study-copied",
        "study-nearline",
        "jobs",
        "targets",
        "ae-titles",
        "audit",
        "dashboard-after",
    ] {
        let path = shots.join(format!("{name}.png"));
        let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        assert!(
            size > 5_000,
            "screenshot {} missing or empty",
            path.display()
        );
    }
}

/// The OHIF build that scripts/install-viewer.sh installs (scripts/test.sh runs it).
fn viewer_dir() -> PathBuf {
    let dir = std::env::var("STRATA_TEST_VIEWER_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/viewer"));
    assert!(
        dir.join(".ohif-version").is_file(),
        "the OHIF viewer is missing from {}: run scripts/install-viewer.sh (scripts/test.sh does)",
        dir.display()
    );
    dir
}

/// OHIF served by Strata at /viewer/, in headless chromium: the study list lists the CT study
/// and the viewer draws its image (canvas pixels checked), with no page error, no failed
/// DICOMweb request and nothing fetched from another origin (tests/ui/ohif.mjs).
async fn the_ohif_viewer_lists_and_draws_a_ct_study(backend: Backend) {
    let (ui, chromium) = browser_tools();
    let viewer = viewer_dir();
    let strata = Strata::start(
        backend,
        &format!("[http]\nviewer_dir = \"{}\"\n", viewer.display()),
    )
    .await;
    let study = ingest(&strata, 1, 5, 128).await.remove(0);
    let shots = screenshots_dir().join(format!("ohif-{backend:?}").to_lowercase());
    let output = Command::new("node")
        .arg(ui.join("ohif.mjs"))
        .current_dir(&ui)
        .env(
            "VIEWER_URL",
            format!("http://127.0.0.1:{}/viewer/", strata.http_port),
        )
        .env("STUDY_UID", &study)
        .env("SCREENSHOT_DIR", &shots)
        .env("LOGIN_TOKEN", strata.api_token())
        .env("CHROMIUM", &chromium)
        .output()
        .expect("node runs (Debian's nodejs)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "OHIF test failed\n{stdout}\n{stderr}\n--- strata log\n{}",
        strata.log()
    );
    assert!(stdout.contains("ohif: passed"), "{stdout}");
    for name in ["study-list", "viewer"] {
        let size = std::fs::metadata(shots.join(format!("{name}.png")))
            .map(|m| m.len())
            .unwrap_or(0);
        assert!(size > 5_000, "screenshot {name}.png missing or empty");
    }
}

on_both_backends!(
    sessions_and_csrf_protect_every_change,
    the_ohif_viewer_lists_and_draws_a_ct_study,
);
