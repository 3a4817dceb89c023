//! Sockets that never finish negotiating must not lock modalities out: the ARTIM timer, the
//! pending-connection caps (per host, in total, with listed peers keeping their capacity), the
//! association slots, and the same for HTTP (header timeout, per-client caps, body limit).
//!
//! The DICOM and HTTP listeners do not touch the index for any of this, so these run on
//! SQLite only.

#[allow(unused_macros)]
mod common;

use common::scu::Scu;
use common::{dcmtk, Backend, Strata};
use dicom_scp::synthetic::{generate, CorpusSpec};
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The first 6 bytes of an A-ASSOCIATE-RQ (type 0x01, length 256), and then nothing.
const HALF_REQUEST: [u8; 6] = [0x01, 0x00, 0x00, 0x00, 0x01, 0x00];
const VERIFICATION: &str = "1.2.840.10008.1.1";
const IMPLICIT_LE: &str = "1.2.840.10008.1.2";

/// A connection to 127.0.0.1:`port` from the loopback address `source`, without the read
/// timeout the shared helper sets (each check here sets its own).
fn connect_from(source: &str, port: u16) -> TcpStream {
    let socket = common::scu::socket2_bound(source, port);
    socket.set_read_timeout(None).expect("no timeout");
    socket
}

/// `count` connections spread over `hosts`, each having sent `bytes`.
fn open_many(hosts: &[String], count: usize, port: u16, bytes: &[u8]) -> Vec<TcpStream> {
    (0..count)
        .map(|i| {
            let mut socket = connect_from(&hosts[i % hosts.len()], port);
            // The server may already have closed an over-the-cap connection: that is fine.
            let _ = socket.write_all(bytes);
            socket
        })
        .collect()
}

/// Whether the server ended the connection (end of stream or reset) within `wait`.
fn closed_within(socket: &TcpStream, wait: Duration) -> bool {
    socket
        .set_read_timeout(Some(wait.max(Duration::from_millis(1))))
        .expect("timeout");
    let mut buffer = [0u8; 64];
    let mut reader = socket;
    loop {
        match reader.read(&mut buffer) {
            Ok(0) => return true,
            // An A-ABORT or A-ASSOCIATE-RJ before the close: keep reading to the end.
            Ok(_) => continue,
            Err(e) if matches!(e.kind(), ErrorKind::ConnectionReset | ErrorKind::BrokenPipe) => {
                return true
            }
            Err(_) => return false,
        }
    }
}

/// Whether a full A-ASSOCIATE-RQ from `source` is answered at all (with AC or RJ).
fn gets_an_answer(source: &str, port: u16, calling_ae: &str) -> bool {
    std::panic::catch_unwind(|| common::scu::associate_from(source, port, calling_ae)).is_ok()
}

/// One CT object to store.
fn one_ct(dir: &Path) -> PathBuf {
    generate(&CorpusSpec {
        out_dir: dir.to_path_buf(),
        instances_per_series: 1,
        ..CorpusSpec::default()
    })
    .expect("generate")
    .remove(0)
}

/// Stores `file` with pynetdicom from `source` as `calling_ae`; returns the C-STORE status.
fn store_from(source: &str, port: u16, calling_ae: &str, file: &Path) -> String {
    let script = r#"
import sys
from pydicom import dcmread
from pynetdicom import AE
ds = dcmread(sys.argv[4])
ae = AE(ae_title=sys.argv[1])
ae.add_requested_context(ds.SOPClassUID, ds.file_meta.TransferSyntaxUID)
assoc = ae.associate('127.0.0.1', int(sys.argv[2]), ae_title='STRATA', bind_address=(sys.argv[3], 0))
if not assoc.is_established:
    print('NOT ESTABLISHED'); sys.exit(0)
status = assoc.send_c_store(ds)
print('0x%04X' % status.Status if status else 'NO STATUS')
assoc.release()
"#;
    let output = dcmtk::python(
        &[
            "-c",
            script,
            calling_ae,
            &port.to_string(),
            source,
            &file.display().to_string(),
        ],
        None,
    );
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

async fn half_open_sockets_do_not_lock_out_modalities(backend: Backend) {
    let work = tempfile::tempdir().expect("tempdir");
    let file = one_ct(work.path());
    let mut strata = Strata::start(
        backend,
        "[dicom]\nartim_timeout_secs = 2\npeers = [{ ae_title = \"CT_LISTED\", host = \"127.0.0.3\" }]\n",
    )
    .await;
    let port = strata.dicom_port;

    let opened = Instant::now();
    let flood = open_many(&["127.0.0.2".to_string()], 200, port, &HALF_REQUEST);

    let echo_started = Instant::now();
    dcmtk::echo(port, "STRATA").expect("C-ECHO from 127.0.0.1 during the flood");
    let echo_time = echo_started.elapsed();
    assert!(
        echo_time < Duration::from_secs(2),
        "C-ECHO took {echo_time:?} during the flood"
    );
    assert_eq!(
        store_from("127.0.0.3", port, "CT_LISTED", &file),
        "0x0000",
        "a listed peer stores during the flood"
    );

    // ARTIM = 2 s: every one of the 200 is closed by the server within 3 s of being opened.
    let deadline = opened + Duration::from_secs(3);
    let still_open = flood
        .iter()
        .filter(|socket| !closed_within(socket, deadline.saturating_duration_since(Instant::now())))
        .count();
    assert_eq!(
        still_open, 0,
        "sockets still open 3 s after they were opened"
    );
    strata.assert_alive();
}

async fn listed_peers_keep_their_capacity_under_a_spread_flood(backend: Backend) {
    let work = tempfile::tempdir().expect("tempdir");
    let file = one_ct(work.path());
    let mut strata = Strata::start(
        backend,
        "[dicom]\nmax_pending = 32\nmax_pending_per_host = 4\n\
         peers = [{ ae_title = \"CT_LISTED\", host = \"127.0.0.3\" }, { ae_title = \"WS\", host = \"*\" }]\n",
    )
    .await;
    let port = strata.dicom_port;
    // 12 hosts × 4 = 48 half-open connections: the 32 shared places are all taken.
    let hosts: Vec<String> = (10..22).map(|i| format!("127.0.0.{i}")).collect();
    let flood = open_many(&hosts, 48, port, &HALF_REQUEST);
    // Held (not closed at once) while they wait for the ARTIM timer (30 s by default).
    let held = flood
        .iter()
        .filter(|socket| !closed_within(socket, Duration::from_millis(200)))
        .count();
    assert_eq!(held, 32, "connections held pending: the shared cap");

    assert!(
        !gets_an_answer("127.0.0.50", port, "WS"),
        "an unlisted host gets no place while the shared pool is full"
    );
    assert_eq!(
        store_from("127.0.0.3", port, "CT_LISTED", &file),
        "0x0000",
        "the listed modality still stores"
    );
    dcmtk::echo(port, "STRATA").expect("this machine still gets in");

    drop(flood);
    let mut answered = false;
    for _ in 0..50 {
        if gets_an_answer("127.0.0.50", port, "WS") {
            answered = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(answered, "the unlisted host gets in once the flood is gone");
    strata.assert_alive();
}

/// Slots count associations: 64 real ones at once, while half-open sockets take none.
async fn sixty_four_associations_at_once_beside_half_open_sockets(backend: Backend) {
    let strata = Strata::start(backend, "").await;
    let port = strata.dicom_port;
    let _half_open = open_many(&["127.0.0.1".to_string()], 20, port, &HALF_REQUEST);
    let handles: Vec<_> = (0..64)
        .map(|i| {
            std::thread::spawn(move || {
                Scu::connect(port, &format!("SCU{i}"), &[(VERIFICATION, IMPLICIT_LE)])
                    .unwrap_or_else(|e| panic!("association {i}: {e}"))
            })
        })
        .collect();
    let mut associations: Vec<Scu> = handles
        .into_iter()
        .map(|h| h.join().expect("thread"))
        .collect();
    for scu in associations.iter_mut() {
        assert_eq!(
            scu.echo().status,
            0x0000,
            "C-ECHO on each of 64 associations"
        );
    }
    assert!(
        Scu::connect(port, "SCU64", &[(VERIFICATION, IMPLICIT_LE)]).is_err(),
        "the 65th association is rejected: dicom.max_associations = 64"
    );
    for scu in associations {
        scu.release();
    }
}

/// A request that is not an A-ASSOCIATE-RQ, and one declaring a huge length, are aborted at
/// once rather than read or allocated.
async fn garbage_and_oversized_requests_are_closed_at_once(backend: Backend) {
    let mut strata = Strata::start(backend, "").await;
    let port = strata.dicom_port;
    let mut http = connect_from("127.0.0.1", port);
    http.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .expect("send");
    assert!(closed_within(&http, Duration::from_secs(2)));
    let mut huge = connect_from("127.0.0.1", port);
    huge.write_all(&[0x01, 0x00, 0xFF, 0xFF, 0xFF, 0xF0])
        .expect("send");
    assert!(closed_within(&huge, Duration::from_secs(2)));
    strata.assert_alive();
}

/// One raw HTTP exchange on an open socket; the status code of the answer.
fn http_status(socket: &mut TcpStream, request: &str) -> u16 {
    socket.write_all(request.as_bytes()).expect("send");
    socket
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut response = Vec::new();
    let _ = socket.read_to_end(&mut response);
    String::from_utf8_lossy(&response)
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

async fn slow_http_clients_do_not_stop_healthz(backend: Backend) {
    let strata = Strata::start(
        backend,
        "[http]\nheader_timeout_secs = 2\nmax_connections_per_client = 16\n",
    )
    .await;
    let port = strata.http_port;
    let half_header = "GET /healthz HTTP/1.1\r\nHost: loc";
    let opened = Instant::now();
    let local = open_many(
        &["127.0.0.1".to_string()],
        100,
        port,
        half_header.as_bytes(),
    );
    let remote = open_many(
        &["127.0.0.2".to_string()],
        100,
        port,
        half_header.as_bytes(),
    );

    let asked = Instant::now();
    let mut healthz = connect_from("127.0.0.1", port);
    let status = http_status(
        &mut healthz,
        "GET /healthz HTTP/1.0\r\nHost: localhost\r\n\r\n",
    );
    let took = asked.elapsed();
    assert_eq!(status, 200, "/healthz during 200 slow clients");
    assert!(took < Duration::from_secs(1), "/healthz took {took:?}");

    // From one remote address only `max_connections_per_client` are held at all.
    let held = remote
        .iter()
        .filter(|socket| !closed_within(socket, Duration::from_millis(100)))
        .count();
    assert_eq!(held, 16, "connections held from one remote client");
    // And the header timeout closes every slow one.
    let deadline = opened + Duration::from_secs(4);
    let still_open = local
        .iter()
        .chain(remote.iter())
        .filter(|socket| !closed_within(socket, deadline.saturating_duration_since(Instant::now())))
        .count();
    assert_eq!(still_open, 0, "slow clients still connected after 4 s");
}

async fn request_bodies_are_limited(backend: Backend) {
    let strata = Strata::start(backend, "[http]\nmax_body_bytes = \"64KiB\"\n").await;
    let token = strata.api_token();
    let body = format!(
        "{{\"host\": \"127.0.0.1\", \"port\": 11999, \"description\": \"{}\"}}",
        "x".repeat(100 * 1024)
    );
    let mut socket = connect_from("127.0.0.1", strata.http_port);
    let status = http_status(
        &mut socket,
        &format!(
            "PUT /api/ae-titles/LIMITTEST HTTP/1.0\r\nHost: localhost\r\nAuthorization: Bearer {token}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ),
    );
    assert_eq!(status, 413, "a 100 KiB JSON body over a 64 KiB limit");
    let mut socket = connect_from("127.0.0.1", strata.http_port);
    let small = r#"{"host": "127.0.0.1", "port": 11999}"#;
    let status = http_status(
        &mut socket,
        &format!(
            "PUT /api/ae-titles/LIMITTEST HTTP/1.0\r\nHost: localhost\r\nAuthorization: Bearer {token}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{small}",
            small.len()
        ),
    );
    assert!(
        (200..300).contains(&status),
        "a small body is still accepted, got {status}"
    );
}

mod sqlite {
    use super::*;

    #[tokio::test(flavor = "multi_thread")]
    async fn half_open_sockets_do_not_lock_out_modalities() {
        super::half_open_sockets_do_not_lock_out_modalities(Backend::Sqlite).await;
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn listed_peers_keep_their_capacity_under_a_spread_flood() {
        super::listed_peers_keep_their_capacity_under_a_spread_flood(Backend::Sqlite).await;
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn sixty_four_associations_at_once_beside_half_open_sockets() {
        super::sixty_four_associations_at_once_beside_half_open_sockets(Backend::Sqlite).await;
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn garbage_and_oversized_requests_are_closed_at_once() {
        super::garbage_and_oversized_requests_are_closed_at_once(Backend::Sqlite).await;
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn slow_http_clients_do_not_stop_healthz() {
        super::slow_http_clients_do_not_stop_healthz(Backend::Sqlite).await;
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn request_bodies_are_limited() {
        super::request_bodies_are_limited(Backend::Sqlite).await;
    }
}
