//! DICOM over TLS and HTTPS, end to end with DCMTK (built with OpenSSL) and curl: mutual TLS
//! admits only modalities with a certificate from `dicom.tls.client_ca`; C-ECHO, C-STORE,
//! C-FIND and C-MOVE work over TLS, and a C-MOVE to a peer marked `tls` goes over TLS too;
//! HTTPS serves the API and the UI with `Secure` session cookies.

mod common;

use common::lifecycle::wait_for;
use common::{dcmtk, files_below, free_port, http_json, tls, Backend, Strata};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

/// DCMTK's TLS options: our key and certificate (or none: anonymous TLS), trusting the CA.
fn tls_args(identity: Option<&(PathBuf, PathBuf)>, ca: &Path) -> Vec<String> {
    let mut args: Vec<String> = match identity {
        Some((cert, key)) => vec![
            "+tls".into(),
            key.display().to_string(),
            cert.display().to_string(),
        ],
        None => vec!["+tla".into()],
    };
    args.extend(["+cf".into(), ca.display().to_string()]);
    args
}

fn dcmtk_tls(tool: &str, tls: &[String], args: &[&str]) -> Output {
    let mut all: Vec<&str> = tls.iter().map(String::as_str).collect();
    all.extend_from_slice(args);
    dcmtk::run(tool, &all)
}

fn echo_tls(port: u16, tls: &[String]) -> Output {
    dcmtk_tls(
        "echoscu",
        tls,
        &["-aec", "STRATA", "127.0.0.1", &port.to_string()],
    )
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// A DCMTK storescp that only speaks TLS, as a C-MOVE destination.
struct TlsStorescp {
    child: std::process::Child,
    port: u16,
    out: PathBuf,
}

impl TlsStorescp {
    fn start(out: &Path, tls: &[String]) -> TlsStorescp {
        std::fs::create_dir_all(out).expect("mkdir");
        let port = free_port();
        let child = Command::new(dcmtk::tool("storescp"))
            .args(tls)
            .args(["+B", "-aet", "SECUREDEST", "-od"])
            .arg(out)
            .arg(port.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start storescp");
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        TlsStorescp {
            child,
            port,
            out: out.to_path_buf(),
        }
    }
}

impl Drop for TlsStorescp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A C-MOVE requested over TLS. Debian's movescu (DCMTK 3.6.7) has no TLS options, so the
/// request comes from pynetdicom with Python's ssl (OpenSSL); the sub-association Strata
/// opens still goes to DCMTK's storescp. Returns the final status in hex.
fn move_over_tls(port: u16, destination: &str, study: &str, certs: &tls::Certificates) -> String {
    const SCRIPT: &str = r#"
import ssl, sys
from pydicom.dataset import Dataset
from pynetdicom import AE
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelMove as MOVE
port, destination, study, ca, cert, key = sys.argv[1:]
context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca)
context.load_cert_chain(cert, key)
ae = AE(ae_title="MOVER")
ae.add_requested_context(MOVE)
assoc = ae.associate("127.0.0.1", int(port), ae_title="STRATA", tls_args=(context, "127.0.0.1"))
assert assoc.is_established, "no association over TLS"
query = Dataset()
query.QueryRetrieveLevel = "STUDY"
query.StudyInstanceUID = study
final = None
for status, _ in assoc.send_c_move(query, destination, MOVE):
    if status:
        final = status.Status
assoc.release()
print(hex(final))
"#;
    let (cert, key) = certs.client();
    let output = dcmtk::python(
        &[
            "-c",
            SCRIPT,
            &port.to_string(),
            destination,
            study,
            &certs.ca().display().to_string(),
            &cert.display().to_string(),
            &key.display().to_string(),
        ],
        None,
    );
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn dicom_over_tls_admits_only_certified_modalities_and_moves_over_tls() {
    let work = tempfile::tempdir().expect("tempdir");
    let certs = tls::make(&work.path().join("certs"));
    let (cert, key) = certs.server();
    let tls_port = free_port();
    let config = format!(
        "[dicom.tls]\nport = {tls_port}\ncert = \"{}\"\nkey = \"{}\"\nclient_ca = \"{}\"\n",
        cert.display(),
        key.display(),
        certs.ca().display()
    );
    let strata = Strata::start(Backend::Sqlite, &config).await;
    let ca = certs.ca();
    let modality = tls_args(Some(&certs.client()), &ca);

    // Mutual TLS: a certificate from the trusted CA is in; none, or another CA's, is out.
    let echoed = echo_tls(tls_port, &modality);
    assert!(echoed.status.success(), "{}", stderr(&echoed));
    let anonymous = echo_tls(tls_port, &tls_args(None, &ca));
    assert!(
        !anonymous.status.success(),
        "a client without a certificate is refused"
    );
    let stranger = echo_tls(tls_port, &tls_args(Some(&certs.stranger()), &ca));
    assert!(
        !stranger.status.success(),
        "a certificate from an untrusted CA is refused"
    );
    // Plain DICOM on the TLS port, and TLS on the plain port: both fail, the ports stay up.
    assert!(dcmtk::echo(tls_port, "STRATA").is_err());
    assert!(!echo_tls(strata.dicom_port, &modality).status.success());
    assert!(dcmtk::echo(strata.dicom_port, "STRATA").is_ok());

    // C-STORE over TLS, then C-FIND over TLS finds the study.
    let corpus = work.path().join("corpus");
    strata.cli_ok(&[
        "generate",
        "--out",
        &corpus.display().to_string(),
        "--patients",
        "1",
        "--instances-per-series",
        "2",
        "--series-per-study",
        "2",
        "--matrix",
        "32",
        "--seed",
        "7",
    ]);
    let stored = dcmtk_tls(
        "storescu",
        &modality,
        &[
            "-aec",
            "STRATA",
            "+sd",
            "+r",
            "127.0.0.1",
            &tls_port.to_string(),
            &corpus.display().to_string(),
        ],
    );
    assert!(stored.status.success(), "{}", stderr(&stored));
    let study = common::study_of(&files_below(&corpus)[0]);
    let index = strata.index().await;
    assert_eq!(
        index.series_of_study(&study).await.expect("series").len(),
        2,
        "stored over TLS"
    );
    let found = dcmtk_tls(
        "findscu",
        &modality,
        &[
            "-v",
            "-S",
            "-aec",
            "STRATA",
            "-k",
            "QueryRetrieveLevel=STUDY",
            "-k",
            "StudyInstanceUID",
            "-k",
            "NumberOfStudyRelatedInstances",
            "127.0.0.1",
            &tls_port.to_string(),
        ],
    );
    assert!(found.status.success(), "{}", stderr(&found));
    let answers = format!(
        "{}{}",
        String::from_utf8_lossy(&found.stdout),
        stderr(&found)
    );
    assert!(answers.contains(&study), "{answers}");

    // C-MOVE over TLS to a destination that only speaks TLS: Strata opens the
    // sub-association with TLS because the peer is marked so, and shows its own certificate.
    let destination = TlsStorescp::start(
        &work.path().join("moved"),
        &tls_args(Some(&certs.server()), &ca),
    );
    strata.cli_ok(&[
        "ae",
        "add",
        "SECUREDEST",
        "127.0.0.1",
        &destination.port.to_string(),
        "--tls",
    ]);
    let moved = move_over_tls(tls_port, "SECUREDEST", &study, &certs);
    assert_eq!(moved, "0x0", "C-MOVE final status");
    let mut received = Vec::new();
    for _ in 0..100 {
        received = files_below(&destination.out);
        if received.len() >= 4 {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(received.len(), 4, "every instance arrived over TLS");

    // A peer marked tls that does not speak TLS: the C-MOVE fails, it is not sent in clear.
    let plain = dcmtk::Storescp::start(&work.path().join("plain"), "PLAINDEST", true);
    strata.cli_ok(&[
        "ae",
        "add",
        "PLAINDEST",
        "127.0.0.1",
        &plain.port.to_string(),
        "--tls",
    ]);
    let refused = move_over_tls(tls_port, "PLAINDEST", &study, &certs);
    assert_eq!(refused, "0xa702", "unable to perform sub-operations");
    assert!(
        files_below(&plain.out_dir).is_empty(),
        "nothing sent in clear"
    );

    // The audit trail tells TLS associations and refused handshakes apart; the key never
    // reaches the log.
    // Events are written by a background writer in batches, within about a second.
    let token = strata.api_token();
    let audit_lists = |query: &str, detail_matches: fn(&str) -> bool| {
        let (_, answer) = http_json(&strata, "GET", query, Some(&token), None);
        answer["events"].as_array().is_some_and(|events| {
            events
                .iter()
                .any(|e| detail_matches(e["detail"].as_str().unwrap_or("")))
        })
    };
    wait_for(
        "the TLS association and the refused handshake in the audit trail",
        Duration::from_secs(10),
        &strata,
        || {
            let found = audit_lists(
                "/api/audit?action=ASSOCIATION&outcome=SUCCESS&limit=1000",
                |detail| detail == "association accepted over TLS",
            ) && audit_lists(
                "/api/audit?action=ASSOCIATION&outcome=FAILURE&limit=1000",
                |detail| detail.starts_with("TLS"),
            );
            async move { found }
        },
    )
    .await;
    let key_text = std::fs::read_to_string(&key).expect("key");
    let key_line = key_text.lines().nth(1).expect("a key line");
    assert!(!strata.log().contains(key_line));
}

fn curl(args: &[&str]) -> Output {
    Command::new("curl")
        .args(["-sS", "--max-time", "10"])
        .args(args)
        .output()
        .expect("curl (Debian package curl)")
}

#[tokio::test(flavor = "multi_thread")]
async fn https_serves_the_api_and_ui_with_secure_cookies() {
    let work = tempfile::tempdir().expect("tempdir");
    let certs = tls::make(&work.path().join("certs"));
    let (cert, key) = certs.server();
    let config = format!(
        "[http]\ntls_cert = \"{}\"\ntls_key = \"{}\"\n",
        cert.display(),
        key.display()
    );
    let strata = Strata::start(Backend::Sqlite, &config).await;
    let base = format!("https://127.0.0.1:{}", strata.http_port);
    let ca = certs.ca().display().to_string();

    let health = curl(&[
        "--cacert",
        &ca,
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        &format!("{base}/healthz"),
    ]);
    assert_eq!(
        String::from_utf8_lossy(&health.stdout),
        "200",
        "{}",
        stderr(&health)
    );
    let untrusted = curl(&["-o", "/dev/null", &format!("{base}/healthz")]);
    assert!(
        !untrusted.status.success(),
        "the certificate is checked by clients"
    );
    let plain = curl(&[
        "-o",
        "/dev/null",
        &format!("http://127.0.0.1:{}/healthz", strata.http_port),
    ]);
    assert!(
        !plain.status.success(),
        "no plain HTTP on an HTTPS listener"
    );

    let token = strata.api_token();
    let api = curl(&[
        "--cacert",
        &ca,
        "-H",
        &format!("Authorization: Bearer {token}"),
        &format!("{base}/api/stats"),
    ]);
    let stats: serde_json::Value = serde_json::from_slice(&api.stdout).expect("JSON over HTTPS");
    assert!(stats["filesystems"].is_array(), "{stats}");

    // A UI login over HTTPS sets a Secure session cookie.
    let login = curl(&[
        "--cacert",
        &ca,
        "-i",
        "--data-urlencode",
        &format!("token={token}"),
        "--data-urlencode",
        "next=/ui/",
        &format!("{base}/ui/login"),
    ]);
    let head = String::from_utf8_lossy(&login.stdout);
    let cookie = head
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("set-cookie:"))
        .unwrap_or_else(|| panic!("no session cookie: {head}"));
    assert!(cookie.contains("; Secure"), "{cookie}");
    assert!(cookie.contains("HttpOnly"), "{cookie}");
}
