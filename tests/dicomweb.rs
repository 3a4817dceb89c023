//! DICOMweb end to end, on SQLite and PostgreSQL: dicomweb-client searching, retrieving and
//! storing against the real binary; STOW-RS's per-part answers and a request cut off mid-part;
//! a NEARLINE-only study served by ranged reads and its metadata with no read from the
//! target; and the errors bad requests get.

#[macro_use]
mod common;

use common::lifecycle::*;
use common::{corpus, data_set_sha256, dcmtk, files_below, sop_instance_uid, Backend, Strata};
use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

const CHECKS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/dicomweb/client_checks.py"
);

fn dicomweb_url(strata: &Strata) -> String {
    format!("http://127.0.0.1:{}/dicom-web", strata.http_port)
}

/// One raw HTTP/1.0 exchange: status, headers (lower-cased names) and body.
fn http(strata: &Strata, request_head: &str, body: &[u8]) -> (u16, String, Vec<u8>) {
    let mut stream =
        std::net::TcpStream::connect(("127.0.0.1", strata.http_port)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(120)))
        .expect("timeout");
    stream
        .write_all(request_head.as_bytes())
        .expect("send head");
    stream.write_all(body).expect("send body");
    let mut response = Vec::new();
    stream.read_to_end(&mut response).expect("receive");
    let split = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("end of headers");
    let head = String::from_utf8_lossy(&response[..split]).to_lowercase();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status");
    (status, head, response[split + 4..].to_vec())
}

fn get(strata: &Strata, path: &str, token: Option<&str>, accept: &str) -> (u16, String, Vec<u8>) {
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    http(
        strata,
        &format!(
            "GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{}\r\n{auth}Accept: {accept}\r\n\r\n",
            strata.http_port
        ),
        b"",
    )
}

/// The parts of a multipart/related body, by the boundary in `head`.
fn parts(head: &str, body: &[u8]) -> Vec<Vec<u8>> {
    let boundary = head
        .split(';')
        .find_map(|p| p.trim().strip_prefix("boundary="))
        .map(|b| {
            b.split_whitespace()
                .next()
                .unwrap_or("")
                .trim_matches('"')
                .to_string()
        })
        .expect("boundary");
    let delimiter = format!("--{boundary}");
    let mut out = Vec::new();
    let mut rest = body;
    while let Some(start) = find(rest, delimiter.as_bytes()) {
        rest = &rest[start + delimiter.len()..];
        if rest.starts_with(b"--") {
            break;
        }
        let header_end = find(rest, b"\r\n\r\n").expect("part headers");
        let content = &rest[header_end + 4..];
        let end = find(content, format!("\r\n{delimiter}").as_bytes()).unwrap_or(content.len());
        out.push(content[..end].to_vec());
        rest = &content[end..];
    }
    out
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// SHA-256 of the data set of a Part-10 file held in memory.
fn data_set_sha256_of(bytes: &[u8], scratch: &Path) -> (String, String) {
    let path = scratch.join("part.dcm");
    std::fs::write(&path, bytes).expect("write part");
    (sop_instance_uid(&path), data_set_sha256(&path))
}

fn stored_files(strata: &Strata) -> Vec<PathBuf> {
    files_below(&strata.online_dir())
        .into_iter()
        .filter(|p| !p.components().any(|c| c.as_os_str() == ".incoming"))
        .collect()
}

fn incoming_files(strata: &Strata) -> Vec<PathBuf> {
    files_below(&strata.online_dir().join(".incoming"))
}

/// C-STORE a corpus in every transfer syntax of the ingest corpus, then let dicomweb-client
/// search, retrieve (byte-identical), read metadata (pydicom's JSON) and frames.
async fn dicomweb_client_reads_what_c_store_stored(backend: Backend) {
    let strata = Strata::start(backend, "").await;
    let work = tempfile::tempdir().expect("tempdir");
    for set in corpus::build(work.path(), 2) {
        let output = dcmtk::storescu_dir(strata.dicom_port, &set.dir, set.storescu_options);
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let output = dcmtk::python(
        &[
            CHECKS,
            "read",
            &dicomweb_url(&strata),
            &strata.api_token(),
            &strata.online_dir().display().to_string(),
        ],
        None,
    );
    let said = String::from_utf8_lossy(&output.stdout);
    assert!(
        said.contains("read checks passed") && said.contains("rendered"),
        "{said}"
    );
    println!("{said}");
}

/// store_instances of a corpus in several transfer syntaxes; C-FIND then finds every one.
async fn store_instances_then_c_find_finds_them(backend: Backend) {
    let strata = Strata::start(backend, "").await;
    let work = tempfile::tempdir().expect("tempdir");
    let sets = corpus::build(work.path(), 2);
    let send = work.path().join("send");
    std::fs::create_dir_all(&send).expect("mkdir");
    let mut sent = Vec::new();
    for set in &sets {
        for file in &set.files {
            let target = send.join(format!(
                "{}-{}",
                set.transfer_syntax,
                file.file_name().and_then(|n| n.to_str()).unwrap_or("f")
            ));
            std::fs::copy(file, &target).expect("copy");
            sent.push(target);
        }
    }
    let output = dcmtk::python(
        &[
            CHECKS,
            "store",
            &dicomweb_url(&strata),
            &strata.api_token(),
            &send.display().to_string(),
        ],
        None,
    );
    assert!(String::from_utf8_lossy(&output.stdout).contains("store checks passed"));
    let answers = work.path().join("answers");
    std::fs::create_dir_all(&answers).expect("mkdir");
    let find_images = |study_key: &str| {
        dcmtk::run_ok(
            "findscu",
            &[
                "-S",
                "-aec",
                "STRATA",
                "-X",
                "-od",
                &answers.display().to_string(),
                "-k",
                "QueryRetrieveLevel=IMAGE",
                "-k",
                study_key,
                "-k",
                "SOPInstanceUID",
                "127.0.0.1",
                &strata.dicom_port.to_string(),
            ],
        );
    };
    find_images("StudyInstanceUID");
    // Study Root IMAGE level needs the study: ask per study instead when the SCP insists.
    let found = files_below(&answers).len();
    let found = if found == 0 {
        let studies: std::collections::BTreeSet<String> = sent
            .iter()
            .map(|f| {
                dicom_object::OpenFileOptions::new()
                    .read_until(dicom_dictionary_std::tags::PIXEL_DATA)
                    .open_file(f)
                    .expect("open")
                    .element(dicom_dictionary_std::tags::STUDY_INSTANCE_UID)
                    .expect("study")
                    .to_str()
                    .expect("text")
                    .trim_end_matches('\0')
                    .to_string()
            })
            .collect();
        for study in &studies {
            find_images(&format!("StudyInstanceUID={study}"));
        }
        files_below(&answers).len()
    } else {
        found
    };
    assert_eq!(
        found,
        sent.len(),
        "C-FIND finds every instance stored over STOW-RS"
    );
}

fn multipart_body(boundary: &str, parts: &[Vec<u8>]) -> Vec<u8> {
    let mut body = Vec::new();
    for part in parts {
        body.extend_from_slice(
            format!("--{boundary}\r\nContent-Type: application/dicom\r\n\r\n").as_bytes(),
        );
        body.extend_from_slice(part);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    body
}

fn stow_head(strata: &Strata, token: &str, boundary: &str, length: usize) -> String {
    format!(
        "POST /dicom-web/studies HTTP/1.0\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: multipart/related; type=\"application/dicom\"; boundary={boundary}\r\n\
         Content-Length: {length}\r\nAccept: application/dicom+json\r\n\r\n"
    )
    .replace(
        "127.0.0.1\r\n",
        &format!("127.0.0.1:{}\r\n", strata.http_port),
    )
}

/// One request with a duplicate under `reject`, a coercion (a study under another patient), a
/// garbage part and good parts: 202, each failure with its reason, the good ones stored
/// byte-exact. Then a request cut off mid-part leaves no row and no file.
async fn stow_answers_each_part_and_a_cut_off_request_leaves_nothing(backend: Backend) {
    let strata = Strata::start(backend, "[dicom]\nduplicate_policy = \"reject\"\n").await;
    let token = strata.api_token();
    let study = ingest(&strata, 1, 2, 32).await.remove(0);
    let stored_before = stored_files(&strata);
    let first = std::fs::read(&stored_before[0]).expect("read stored");
    let first_uid = sop_instance_uid(&stored_before[0]);
    let work = tempfile::tempdir().expect("tempdir");
    strata.cli_ok(&[
        "generate",
        "--out",
        &work.path().join("good").display().to_string(),
        "--patients",
        "1",
        "--instances-per-series",
        "2",
        "--seed",
        "4242",
        "--patient-prefix",
        "STOWGOOD",
    ]);
    let good: Vec<Vec<u8>> = files_below(&work.path().join("good"))
        .iter()
        .map(|f| std::fs::read(f).expect("read"))
        .collect();
    // Same study, another Patient ID: the index refuses it (0xC002).
    let coerced_path = work.path().join("coerced.dcm");
    let mut coerced = dicom_object::open_file(&stored_before[0]).expect("open");
    coerced.put(dicom_core::DataElement::new(
        dicom_dictionary_std::tags::PATIENT_ID,
        dicom_core::VR::LO,
        "SOMEONE_ELSE",
    ));
    coerced.put(dicom_core::DataElement::new(
        dicom_dictionary_std::tags::SOP_INSTANCE_UID,
        dicom_core::VR::UI,
        "1.2.999.77.1",
    ));
    coerced.update_meta(|meta| meta.media_storage_sop_instance_uid = "1.2.999.77.1".into());
    coerced.write_to_file(&coerced_path).expect("write");
    let mut parts_sent = vec![
        first.clone(),
        std::fs::read(&coerced_path).expect("read"),
        b"this is not DICOM".to_vec(),
    ];
    parts_sent.extend(good.iter().cloned());
    // The same new instance twice in one request: the parts are accepted concurrently, and
    // still exactly one copy is stored and the other refused as a duplicate.
    parts_sent.push(good[0].clone());
    let boundary = "stowtestboundary";
    let body = multipart_body(boundary, &parts_sent);
    let (status, head, answer) = http(
        &strata,
        &stow_head(&strata, &token, boundary, body.len()),
        &body,
    );
    assert_eq!(status, 202, "{head}\n{}", String::from_utf8_lossy(&answer));
    let answer: serde_json::Value = serde_json::from_slice(&answer).expect("json");
    let failed = answer["00081198"]["Value"]
        .as_array()
        .expect("FailedSOPSequence");
    let reasons: Vec<u64> = failed
        .iter()
        .map(|f| f["00081197"]["Value"][0].as_u64().expect("reason"))
        .collect();
    assert_eq!(reasons, vec![0x0111, 0xC002, 0xC000, 0x0111], "{answer}");
    assert_eq!(failed[0]["00081155"]["Value"][0], first_uid.as_str());
    let good_uids: Vec<String> = files_below(&work.path().join("good"))
        .iter()
        .map(|f| sop_instance_uid(f))
        .collect();
    assert_eq!(failed[3]["00081155"]["Value"][0], good_uids[0].as_str());
    let referenced = answer["00081199"]["Value"]
        .as_array()
        .expect("ReferencedSOPSequence");
    let mut referenced_uids: Vec<&str> = referenced
        .iter()
        .map(|r| r["00081155"]["Value"][0].as_str().expect("UID"))
        .collect();
    referenced_uids.sort_unstable();
    let mut expected_uids: Vec<&str> = good_uids.iter().map(String::as_str).collect();
    expected_uids.sort_unstable();
    assert_eq!(referenced_uids, expected_uids, "each good part stored once");
    assert_eq!(
        stored_files(&strata).len(),
        stored_before.len() + good.len(),
        "one file per stored instance, none for the refused duplicate"
    );
    let index = strata.index().await;
    for part in &good {
        let path = work.path().join("check.dcm");
        std::fs::write(&path, part).expect("write");
        let location = index
            .instance_location(&sop_instance_uid(&path))
            .await
            .expect("query")
            .expect("stored");
        assert_eq!(
            &std::fs::read(location.full_path()).expect("stored file"),
            part,
            "stored byte-exact"
        );
    }
    assert!(index
        .instance_location("1.2.999.77.1")
        .await
        .expect("query")
        .is_none());
    let _ = study;

    // Cut off mid-part: the connection closes halfway through the second part.
    strata.cli_ok(&[
        "generate",
        "--out",
        &work.path().join("cut").display().to_string(),
        "--patients",
        "1",
        "--instances-per-series",
        "2",
        "--seed",
        "4343",
        "--patient-prefix",
        "STOWCUT",
        "--matrix",
        "256",
    ]);
    let cut: Vec<Vec<u8>> = files_below(&work.path().join("cut"))
        .iter()
        .map(|f| std::fs::read(f).expect("read"))
        .collect();
    let body = multipart_body(boundary, &cut);
    let files_before = stored_files(&strata).len();
    let counts_before = index.counts().await.expect("counts").instances;
    {
        let mut stream =
            std::net::TcpStream::connect(("127.0.0.1", strata.http_port)).expect("connect");
        stream
            .write_all(stow_head(&strata, &token, boundary, body.len()).as_bytes())
            .expect("head");
        let cut_at = cut[0].len() + cut[1].len() / 2 + 100;
        stream.write_all(&body[..cut_at]).expect("part of the body");
        std::thread::sleep(Duration::from_millis(300));
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    let counts_after = index.counts().await.expect("counts").instances;
    // The first part may have been completed and stored before the cut; the cut one never is.
    assert!(
        counts_after <= counts_before + 1,
        "{counts_before} -> {counts_after}"
    );
    let cut_path = work.path().join("cut-check.dcm");
    std::fs::write(&cut_path, &cut[1]).expect("write");
    assert!(
        index
            .instance_location(&sop_instance_uid(&cut_path))
            .await
            .expect("query")
            .is_none(),
        "the cut part is not indexed"
    );
    assert_eq!(
        stored_files(&strata).len(),
        files_before + (counts_after - counts_before) as usize,
        "no file without a row"
    );
    assert!(
        incoming_files(&strata).is_empty(),
        "spool emptied: {:?}",
        incoming_files(&strata)
    );
}

/// Copied, verified, deleted ONLINE: WADO-RS still serves the study byte-identical (one pack
/// fetch), an instance and a frame by ranged reads, and the study's metadata with no read from
/// the target at all.
async fn a_nearline_only_study_over_dicomweb(backend: Backend) {
    let strata = Strata::start(backend, &lifecycle_toml("", "")).await;
    let token = strata.api_token();
    let study = ingest(&strata, 1, 3, 64).await.remove(0);
    let sent: HashMap<String, String> = files_below(&corpus_of(&strata, 1, 3, 64))
        .into_iter()
        .map(|f| (sop_instance_uid(&f), data_set_sha256(&f)))
        .collect();
    strata.cli_ok(&["copy", "--study", &study, "--wait"]);
    strata.cli_ok(&["verify", "--study", &study, "--wait"]);
    strata.cli_ok(&["delete-online", "--study", &study, "--wait"]);
    let index = strata.index().await;
    wait_for(
        "the ONLINE files to go",
        Duration::from_secs(30),
        &strata,
        || async { stored_files(&strata).is_empty() },
    )
    .await;
    let scratch = tempfile::tempdir().expect("tempdir");

    let read_before = strata.metric("strata_nearline_bytes_read_total");
    let (status, _, body) = get(
        &strata,
        &format!("/dicom-web/studies/{study}/metadata"),
        Some(&token),
        "application/dicom+json",
    );
    assert_eq!(status, 200);
    let metadata: serde_json::Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(metadata.as_array().map(Vec::len), Some(6));
    assert_eq!(
        strata.metric("strata_nearline_bytes_read_total"),
        read_before,
        "metadata read nothing from the target"
    );

    let one = index
        .retrieve_locations(
            archive_core::query::Level::Study,
            std::slice::from_ref(&study),
        )
        .await
        .expect("locations")
        .remove(0);
    assert!(one.nearline.is_some());
    let (fetches, ranges) = (
        strata.metric("strata_nearline_pack_fetches_total"),
        strata.metric("strata_nearline_member_range_reads_total"),
    );
    let (status, head, body) = get(
        &strata,
        &format!(
            "/dicom-web/studies/{study}/series/{}/instances/{}",
            one.series_uid, one.sop_uid
        ),
        Some(&token),
        "multipart/related; type=\"application/dicom\"; transfer-syntax=*",
    );
    assert_eq!(status, 200);
    let got = parts(&head, &body);
    assert_eq!(got.len(), 1);
    let (uid, sha) = data_set_sha256_of(&got[0], scratch.path());
    assert_eq!(sent[&uid], sha, "instance byte-identical");
    let (status, _, frame) = get(
        &strata,
        &format!(
            "/dicom-web/studies/{study}/series/{}/instances/{}/frames/1",
            one.series_uid, one.sop_uid
        ),
        Some(&token),
        "multipart/related; type=application/octet-stream; transfer-syntax=*",
    );
    assert_eq!(status, 200);
    assert!(frame.len() > 64 * 64, "a 64x64 16-bit frame");
    let (status, head, image) = get(
        &strata,
        &format!(
            "/dicom-web/studies/{study}/series/{}/instances/{}/rendered",
            one.series_uid, one.sop_uid
        ),
        Some(&token),
        "image/png",
    );
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&image));
    assert!(head
        .to_ascii_lowercase()
        .contains("content-type: image/png"));
    assert!(
        image.starts_with(b"\x89PNG"),
        "a PNG rendered from the pack member"
    );
    assert_eq!(
        strata.metric("strata_nearline_member_range_reads_total"),
        ranges + 3,
        "instance, frame and rendered image by ranged reads"
    );
    assert_eq!(
        strata.metric("strata_nearline_pack_fetches_total"),
        fetches,
        "no pack fetched for them"
    );

    let (status, head, body) = get(
        &strata,
        &format!("/dicom-web/studies/{study}"),
        Some(&token),
        "multipart/related; type=\"application/dicom\"; transfer-syntax=*",
    );
    assert_eq!(status, 200);
    let got = parts(&head, &body);
    assert_eq!(got.len(), 6);
    for part in &got {
        let (uid, sha) = data_set_sha256_of(part, scratch.path());
        assert_eq!(sent[&uid], sha, "{uid} byte-identical from NEARLINE");
    }
    assert_eq!(
        strata.metric("strata_nearline_pack_fetches_total"),
        fetches + 1,
        "the study came from one pack fetch"
    );
}

/// Unknown study 404, malformed parameter 400 naming it, no token 401, a read-only token
/// reads but cannot store (403), a UI-less caller cannot use the viewer token to write.
async fn bad_requests_get_clear_errors(backend: Backend) {
    let work = tempfile::tempdir().expect("tempdir");
    let viewer_token = work.path().join("viewer-token");
    std::fs::write(&viewer_token, "read-only-secret\n").expect("token file");
    let strata = Strata::start(
        backend,
        &format!(
            "[http]\nviewer_token_files = [\"{}\"]\n",
            viewer_token.display()
        ),
    )
    .await;
    let token = strata.api_token();
    let study = ingest(&strata, 1, 1, 32).await.remove(0);
    let json = "application/dicom+json";
    assert_eq!(
        get(
            &strata,
            "/dicom-web/studies/1.2.3.404",
            Some(&token),
            "multipart/related; type=\"application/dicom\""
        )
        .0,
        404
    );
    assert_eq!(
        get(
            &strata,
            "/dicom-web/studies/1.2.3.404/metadata",
            Some(&token),
            json
        )
        .0,
        404
    );
    let (status, _, body) = get(
        &strata,
        "/dicom-web/studies?StudyDate=yesterday",
        Some(&token),
        json,
    );
    assert_eq!(status, 400);
    assert!(
        String::from_utf8_lossy(&body).contains("StudyDate"),
        "{}",
        String::from_utf8_lossy(&body)
    );
    let (status, _, body) = get(
        &strata,
        "/dicom-web/studies?NotAKeyword=1",
        Some(&token),
        json,
    );
    assert_eq!(status, 400);
    assert!(String::from_utf8_lossy(&body).contains("NotAKeyword"));
    assert_eq!(get(&strata, "/dicom-web/studies", None, json).0, 401);
    assert_eq!(
        get(&strata, "/dicom-web/studies", Some("wrong"), json).0,
        401
    );
    let (status, _, body) = get(
        &strata,
        "/dicom-web/studies",
        Some("read-only-secret"),
        json,
    );
    assert_eq!(status, 200, "the viewer token reads");
    assert!(String::from_utf8_lossy(&body).contains(&study));
    let body = multipart_body("b", &[b"x".to_vec()]);
    let (status, _, answer) = http(
        &strata,
        &stow_head(&strata, "read-only-secret", "b", body.len()),
        &body,
    );
    assert_eq!(status, 403, "{}", String::from_utf8_lossy(&answer));
    let (status, _, _) = http(
        &strata,
        &format!("POST /dicom-web/studies HTTP/1.0\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n"),
        b"{}",
    );
    assert_eq!(status, 415);
    let (status, _, _) = get(
        &strata,
        &format!("/dicom-web/studies/{study}"),
        Some(&token),
        "image/jpeg",
    );
    assert_eq!(status, 406);
}

on_both_backends!(
    dicomweb_client_reads_what_c_store_stored,
    store_instances_then_c_find_finds_them,
    stow_answers_each_part_and_a_cut_off_request_leaves_nothing,
    a_nearline_only_study_over_dicomweb,
    bad_requests_get_clear_errors,
);
