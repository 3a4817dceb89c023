//! DCMTK command-line tools, by absolute path: pynetdicom installs console scripts with the
//! same names (`storescu`, `echoscu`, …) that may come first on PATH.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

pub fn tool(name: &str) -> PathBuf {
    let dir = std::env::var("DCMTK_BIN").unwrap_or_else(|_| "/usr/bin".into());
    let path = Path::new(&dir).join(name);
    assert!(
        path.exists(),
        "DCMTK tool {} is missing: install the Debian package `dcmtk` (scripts/test.sh does)",
        path.display()
    );
    path
}

/// Runs a DCMTK network tool with TCP_NODELAY=1 (DCMTK enables Nagle otherwise).
pub fn run(name: &str, args: &[&str]) -> Output {
    Command::new(tool(name))
        .args(args)
        .env("TCP_NODELAY", "1")
        .output()
        .unwrap_or_else(|e| panic!("cannot run {name}: {e}"))
}

/// Runs a DCMTK tool and fails the test (with its stderr) unless it exits 0.
#[allow(dead_code)] // not every test binary uses it
pub fn run_ok(name: &str, args: &[&str]) -> Output {
    let output = run(name, args);
    assert!(
        output.status.success(),
        "{name} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

pub fn echo(port: u16, called_ae: &str) -> Result<(), String> {
    let output = run(
        "echoscu",
        &["-aec", called_ae, "127.0.0.1", &port.to_string()],
    );
    if output.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&output.stderr).into_owned())
    }
}

/// `storescu +sd +r` of a directory, with extra options (e.g. the `-x…` transfer syntax
/// proposal its files need). Returns the output; `-v` makes it log each response.
pub fn storescu_dir(port: u16, dir: &Path, extra: &[&str]) -> Output {
    let port = port.to_string();
    let dir = dir.display().to_string();
    let mut args = vec!["-v", "-aec", "STRATA", "+sd", "+r"];
    args.extend_from_slice(extra);
    args.extend_from_slice(&["127.0.0.1", &port, &dir]);
    run("storescu", &args)
}

/// `movescu` of one study (Study Root) to `destination`; panics with its output unless it
/// succeeds, adding `context` (e.g. the server log) to the message.
pub fn move_study(port: u16, destination: &str, study_uid: &str, context: &dyn Fn() -> String) {
    let port = port.to_string();
    let key = format!("StudyInstanceUID={study_uid}");
    let output = run(
        "movescu",
        &[
            "-S",
            "-aec",
            "STRATA",
            "-aem",
            destination,
            "-k",
            "QueryRetrieveLevel=STUDY",
            "-k",
            &key,
            "127.0.0.1",
            &port,
        ],
    );
    assert!(
        output.status.success(),
        "movescu of {study_uid}: {}\n{}",
        String::from_utf8_lossy(&output.stderr),
        context()
    );
}

/// A DCMTK `storescp +B --fork` that writes exactly what it receives: the byte-exactness
/// reference, and a C-MOVE destination. `accept_all` (`+xa`) takes every transfer syntax;
/// without it only the uncompressed ones (a destination that refuses JPEG, RLE, …).
pub struct Storescp {
    child: Child,
    pub port: u16,
    pub out_dir: PathBuf,
}

impl Storescp {
    pub fn start(out_dir: &Path, ae_title: &str, accept_all: bool) -> Storescp {
        std::fs::create_dir_all(out_dir).expect("mkdir");
        let port = super::free_port();
        let mut args = vec!["+B", "--fork", "-aet", ae_title, "-od"];
        if accept_all {
            args.insert(0, "+xa");
        }
        let child = Command::new(tool("storescp"))
            .args(&args)
            .arg(out_dir)
            .arg(port.to_string())
            .env("TCP_NODELAY", "1")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start storescp");
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        Storescp {
            child,
            port,
            out_dir: out_dir.to_path_buf(),
        }
    }

    /// Received files by SOP Instance UID, once `expected` have arrived (storescp forks, so
    /// files appear after the sender has its answers).
    pub fn received(&self, expected: usize) -> std::collections::HashMap<String, PathBuf> {
        for _ in 0..100 {
            if super::files_below(&self.out_dir).len() >= expected {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
        super::files_below(&self.out_dir)
            .into_iter()
            .map(|f| (super::sop_instance_uid(&f), f))
            .collect()
    }
}

impl Drop for Storescp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs Python (`$PYTHON`, default python3) with `args`; fails the test with a hint when
/// pynetdicom is missing.
pub fn python(args: &[&str], cwd: Option<&Path>) -> std::process::Output {
    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
    let mut command = Command::new(&python);
    command.args(args);
    if let Some(cwd) = cwd {
        command.current_dir(cwd);
    }
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("cannot run {python}: {e}"));
    assert!(
        output.status.success(),
        "{python} {args:?} failed (pynetdicom is required: pip install pynetdicom): {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}
