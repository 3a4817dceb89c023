//! Certificates for the TLS tests, made with the `openssl` command (Debian's, installed with
//! DCMTK's libssl): a CA, a certificate it signs for this machine (127.0.0.1, localhost; server
//! and client use, so Strata and DCMTK peers can both show it), a second client certificate
//! from the same CA, and a certificate from a CA nobody trusts.

use std::path::{Path, PathBuf};
use std::process::Command;

pub struct Certificates {
    pub dir: PathBuf,
}

impl Certificates {
    pub fn ca(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }
    /// Strata's own certificate and key.
    pub fn server(&self) -> (PathBuf, PathBuf) {
        (self.dir.join("server.crt"), self.dir.join("server.key"))
    }
    /// A modality's certificate from the trusted CA.
    pub fn client(&self) -> (PathBuf, PathBuf) {
        (self.dir.join("client.crt"), self.dir.join("client.key"))
    }
    /// A certificate from a CA Strata does not trust.
    pub fn stranger(&self) -> (PathBuf, PathBuf) {
        (self.dir.join("stranger.crt"), self.dir.join("stranger.key"))
    }
}

fn openssl(dir: &Path, args: &[&str]) {
    let output = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("the openssl command (Debian package openssl) is needed for the TLS tests");
    assert!(
        output.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

fn signed(dir: &Path, name: &str, ca: &str, subject: &str) {
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.csr"),
            "-subj",
            subject,
        ],
    );
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            &format!("{ca}.crt"),
            "-CAkey",
            &format!("{ca}.key"),
            "-CAcreateserial",
            "-out",
            &format!("{name}.crt"),
            "-days",
            "2",
            "-extfile",
            "ext.cnf",
        ],
    );
}

pub fn make(dir: &Path) -> Certificates {
    std::fs::create_dir_all(dir).expect("mkdir");
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n\
         keyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth,clientAuth\n",
    )
    .expect("write ext.cnf");
    for ca in ["ca", "other-ca"] {
        openssl(
            dir,
            &[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                &format!("{ca}.key"),
                "-out",
                &format!("{ca}.crt"),
                "-days",
                "2",
                "-subj",
                &format!("/CN=Strata test {ca}"),
            ],
        );
    }
    signed(dir, "server", "ca", "/CN=localhost");
    signed(dir, "client", "ca", "/CN=CT_ROOM1");
    signed(dir, "stranger", "other-ca", "/CN=intruder");
    Certificates {
        dir: dir.to_path_buf(),
    }
}
