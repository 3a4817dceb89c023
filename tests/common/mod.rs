//! Shared harness for the end-to-end tests: runs the real `strata` binary against SQLite or
//! PostgreSQL, and real DCMTK tools against it.
//!
//! Missing peers (DCMTK, PostgreSQL, pynetdicom) make tests fail with a message saying what
//! to install; they never skip silently. `scripts/test.sh` installs everything.

#![allow(dead_code)]

/// Runs each named `async fn(Backend)` as two tests, `sqlite::name` and `postgres::name`.
#[allow(unused_macros)] // not every test binary runs on both backends
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(#[tokio::test(flavor = "multi_thread")] async fn $name() { super::$name(super::Backend::Sqlite).await; })*
        }
        mod postgres {
            $(#[tokio::test(flavor = "multi_thread")] async fn $name() { super::$name(super::Backend::Postgres).await; })*
        }
    };
}

pub mod corpus;
pub mod dcmtk;
pub mod lifecycle;
pub mod s3;
pub mod scu;
pub mod tls;

use archive_core::index::Index;
use std::io::Read;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// One HTTP/1.0 request with a JSON body (if any); returns the status and the JSON answer
/// (Null if not JSON).
pub fn http_json(
    strata: &Strata,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> (u16, serde_json::Value) {
    let authorization = token.map(|token| format!("Bearer {token}"));
    let mut headers = Vec::new();
    if let Some(value) = &authorization {
        headers.push(("Authorization", value.as_str()));
    }
    if body.is_some() {
        headers.push(("Content-Type", "application/json"));
    }
    let (status, text) = http_text(strata, method, path, &headers, body.unwrap_or(""));
    (status, serde_json::from_str(&text).unwrap_or_default())
}

/// One HTTP/1.0 request; returns the status and the body as text.
pub fn http_text(
    strata: &Strata,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String) {
    use std::io::Write;
    let mut stream =
        std::net::TcpStream::connect(("127.0.0.1", strata.http_port)).expect("connect");
    let mut request = format!("{method} {path} HTTP/1.0\r\nHost: localhost\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    if !body.is_empty() {
        request.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    request.push_str("\r\n");
    request.push_str(body);
    stream.write_all(request.as_bytes()).expect("send");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("receive");
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status");
    let body = response.split("\r\n\r\n").nth(1).unwrap_or("");
    (status, body.to_string())
}

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free port")
}

/// A running `strata serve` with its own data directory and database.
pub struct Strata {
    pub dir: tempfile::TempDir,
    pub dicom_port: u16,
    pub http_port: u16,
    pub database_url: String,
    pub config_path: PathBuf,
    child: Option<Child>,
}

/// Whether something listens on the port. A connect to a free port of the ephemeral range can
/// succeed without any listener: Linux may pick that same port as the source and connect the
/// socket to itself (TCP simultaneous open), which once let a test send before strata was up.
fn listening(port: u16) -> bool {
    std::net::TcpStream::connect(("127.0.0.1", port))
        .ok()
        .and_then(|stream| stream.local_addr().ok())
        .is_some_and(|local| local.port() != port)
}

impl Strata {
    /// Starts a server; `extra_toml` is appended to the generated config file.
    pub async fn start(backend: Backend, extra_toml: &str) -> Strata {
        let dir = tempfile::tempdir().expect("tempdir");
        let database_url = match backend {
            Backend::Sqlite => format!("sqlite://{}/index.db", dir.path().display()),
            Backend::Postgres => archive_core::testing::fresh_postgres_database().await,
        };
        Strata::start_in(dir, database_url, extra_toml)
    }

    /// Starts another node on an existing database (several nodes, one index).
    pub fn start_on(database_url: &str, extra_toml: &str) -> Strata {
        let dir = tempfile::tempdir().expect("tempdir");
        Strata::start_in(dir, database_url.to_string(), extra_toml)
    }

    fn start_in(dir: tempfile::TempDir, database_url: String, extra_toml: &str) -> Strata {
        let dicom_port = free_port();
        let http_port = free_port();
        let config_path = dir.path().join("strata.toml");
        // Ports go on the command line (flags override the file), so `extra_toml` may open
        // any table, [dicom] included.
        let config = format!(
            "data_dir = \"{data}\"\ndatabase_url = \"{database_url}\"\n{extra_toml}\n",
            data = dir.path().join("data").display(),
        );
        std::fs::write(&config_path, config).expect("write config");
        let mut strata = Strata {
            dir,
            dicom_port,
            http_port,
            database_url,
            config_path,
            child: None,
        };
        // Another process may take a port between free_port() and strata's bind: pick new ones.
        for _ in 0..3 {
            if strata.try_spawn() {
                return strata;
            }
            strata.dicom_port = free_port();
            strata.http_port = free_port();
        }
        strata.spawn();
        strata
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn online_dir(&self) -> PathBuf {
        self.data_dir().join("online")
    }

    /// Starts the server; `false` if it could not bind its ports.
    fn try_spawn(&mut self) -> bool {
        self.start_child();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(_)) = child.try_wait() {
                    if self.log().contains("cannot listen") {
                        self.child = None;
                        return false;
                    }
                    break;
                }
            }
            if listening(self.dicom_port) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.wait_until_listening();
        true
    }

    fn spawn(&mut self) {
        self.start_child();
        self.wait_until_listening();
    }

    fn start_child(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("strata.log"))
            .expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_strata"))
            .arg("--config")
            .arg(&self.config_path)
            .arg("serve")
            .arg("--dicom-port")
            .arg(self.dicom_port.to_string())
            .arg("--http-listen")
            .arg(format!("127.0.0.1:{}", self.http_port))
            .env("STRATA_LOG", "info,dicom_scp=debug")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start strata");
        self.child = Some(child);
    }

    fn wait_until_listening(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    panic!("strata exited during start ({status}):\n{}", self.log());
                }
            }
            if listening(self.dicom_port) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "strata did not start listening within 30 s:\n{}",
            self.log()
        );
    }

    /// The running server's process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGKILL: no shutdown code runs, as in a power cut of the process.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn restart(&mut self) {
        self.kill9();
        self.spawn();
    }

    /// Runs `strata --config <this server's config> args…` and returns its output.
    pub fn cli(&self, args: &[&str]) -> std::process::Output {
        Command::new(env!("CARGO_BIN_EXE_strata"))
            .arg("--config")
            .arg(&self.config_path)
            .args(args)
            .env("STRATA_LOG", "warn")
            .output()
            .expect("run strata")
    }

    /// Like [`Strata::cli`], failing the test unless the command succeeds; returns stdout.
    pub fn cli_ok(&self, args: &[&str]) -> String {
        let output = self.cli(args);
        assert!(
            output.status.success(),
            "strata {args:?} failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// The API token the server created on first start.
    pub fn api_token(&self) -> String {
        std::fs::read_to_string(self.data_dir().join("admin-token"))
            .expect("admin-token file")
            .trim()
            .to_string()
    }

    /// A value from `/metrics` (Prometheus text), 0 when absent.
    pub fn metric(&self, name: &str) -> u64 {
        use std::io::Write;
        let mut stream =
            std::net::TcpStream::connect(("127.0.0.1", self.http_port)).expect("connect http");
        write!(
            stream,
            "GET /metrics HTTP/1.0\r\nHost: localhost\r\nAuthorization: Bearer {}\r\n\r\n",
            self.api_token()
        )
        .expect("request");
        let mut text = String::new();
        stream.read_to_string(&mut text).expect("response");
        text.lines()
            .find_map(|line| line.strip_prefix(&format!("{name} ")))
            .and_then(|value| value.trim().parse().ok())
            .unwrap_or(0)
    }

    pub fn log(&self) -> String {
        let mut text = String::new();
        if let Ok(mut file) = std::fs::File::open(self.dir.path().join("strata.log")) {
            let _ = file.read_to_string(&mut text);
        }
        text
    }

    pub async fn index(&self) -> Index {
        Index::open(&self.database_url).await.expect("open index")
    }

    /// Fails the test unless the process is still running (the server must survive bad input).
    pub fn assert_alive(&mut self) {
        let child = self.child.as_mut().expect("server was started");
        assert!(
            matches!(child.try_wait(), Ok(None)),
            "strata died:\n{}",
            self.log()
        );
        dcmtk::echo(self.dicom_port, "STRATA").expect("server still answers C-ECHO");
    }
}

impl Drop for Strata {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// SHA-256 of a stored file's data set (everything after the file meta group).
pub fn data_set_sha256(path: &Path) -> String {
    use sha2::{Digest, Sha256};
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let offset = dicom_scp::store::data_set_offset(&bytes)
        .unwrap_or_else(|| panic!("{} is not a Part-10 file", path.display()));
    hex::encode(Sha256::digest(&bytes[offset..]))
}

/// Every file below `dir`, recursively.
pub fn files_below(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(current) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&current) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

/// Study Instance UID of a Part-10 file.
pub fn study_of(file: &Path) -> String {
    let object = dicom_object::open_file(file).expect("open");
    object
        .element(dicom_dictionary_std::tags::STUDY_INSTANCE_UID)
        .expect("uid")
        .to_str()
        .expect("str")
        .trim_end_matches('\0')
        .to_string()
}

/// SOP Instance UID of a Part-10 file.
pub fn sop_instance_uid(path: &Path) -> String {
    let object = dicom_object::OpenFileOptions::new()
        .read_until(dicom_dictionary_std::tags::PIXEL_DATA)
        .open_file(path)
        .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    object
        .meta()
        .media_storage_sop_instance_uid()
        .trim_end_matches('\0')
        .to_string()
}
