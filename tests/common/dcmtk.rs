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

/// A DCMTK `storescp +B` that writes exactly what it receives: the byte-exactness reference.
pub struct ReferenceScp {
    child: Child,
    pub port: u16,
    pub out_dir: PathBuf,
}

impl ReferenceScp {
    pub fn start(out_dir: &Path) -> ReferenceScp {
        std::fs::create_dir_all(out_dir).expect("mkdir");
        let port = super::free_port();
        let child = Command::new(tool("storescp"))
            .args(["+B", "+xa", "--fork", "-aet", "STRATA", "-od"])
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
        ReferenceScp {
            child,
            port,
            out_dir: out_dir.to_path_buf(),
        }
    }
}

impl Drop for ReferenceScp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
