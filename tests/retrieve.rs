//! End-to-end C-MOVE and C-GET with DCMTK movescu/getscu/storescp and pynetdicom, on SQLite and
//! PostgreSQL: byte-identical delivery, counts, refused transfer syntaxes, unknown
//! destinations, C-CANCEL, and retrievals running alongside ingest and queries.

#[macro_use]
mod common;

use common::dcmtk::Storescp;
use common::{
    corpus, data_set_sha256, dcmtk, files_below, sop_instance_uid, study_of, Backend, Strata,
};
use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;

const STUDY_ROOT_MOVE: &str = "-S";

fn strata_cli(strata: &Strata, args: &[&str]) {
    strata.cli_ok(args);
}

/// Loads the corpus sets named, through storescu; returns the files by SOP Instance UID.
fn load(strata: &Strata, sets: &[corpus::CorpusSet]) -> HashMap<String, PathBuf> {
    let mut files = HashMap::new();
    for set in sets {
        let output = dcmtk::storescu_dir(strata.dicom_port, &set.dir, set.storescu_options);
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        for file in &set.files {
            files.insert(sop_instance_uid(file), file.clone());
        }
    }
    files
}

/// pynetdicom C-MOVE: returns the final status, counts, failed UIDs and pending count.
fn python_move(
    port: u16,
    destination: &str,
    study_uids: &[String],
    cancel_after_first: bool,
) -> serde_json::Value {
    let script = r#"
import sys, json
from pydicom.dataset import Dataset
from pynetdicom import AE
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelMove as MOVE
port, destination, uids, cancel = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4] == '1'
ae = AE(ae_title='PYMOVE'); ae.add_requested_context(MOVE)
ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 60
assoc = ae.associate('127.0.0.1', port, ae_title='STRATA')
assert assoc.is_established
ds = Dataset(); ds.QueryRetrieveLevel = 'STUDY'; ds.StudyInstanceUID = uids.split('\\')
result = {'pending': 0}
for status, identifier in assoc.send_c_move(ds, destination, MOVE, msg_id=11):
    if status is None:
        result['final'] = None; break
    if status.Status in (0xFF00, 0xFF01):
        result['pending'] += 1
        if cancel and result['pending'] == 1:
            assoc.send_c_cancel(11, assoc.accepted_contexts[0].context_id)
        continue
    result['final'] = status.Status
    for key in ('NumberOfCompletedSuboperations', 'NumberOfFailedSuboperations', 'NumberOfWarningSuboperations', 'NumberOfRemainingSuboperations'):
        result[key] = int(status.get(key, -1)) if key in status else None
    failed = identifier.get('FailedSOPInstanceUIDList', []) if identifier is not None else []
    result['failed'] = sorted([failed] if isinstance(failed, str) else list(failed))
    result['comment'] = str(status.get('ErrorComment', ''))
assoc.release()
print(json.dumps(result))
"#;
    let cancel = if cancel_after_first { "1" } else { "0" };
    let uids = study_uids.join("\\");
    let output = dcmtk::python(
        &["-c", script, &port.to_string(), destination, &uids, cancel],
        None,
    );
    serde_json::from_slice(&output.stdout).expect("json")
}

async fn move_and_get_deliver_byte_identical_objects(backend: Backend) {
    let work = tempfile::tempdir().expect("tempdir");
    let sets = corpus::build(work.path(), 2);
    let strata = Strata::start(backend, "").await;
    let sent = load(&strata, &sets);
    let index = strata.index().await;
    let studies: Vec<String> = sets.iter().map(|s| study_of(&s.files[0])).collect();

    // C-MOVE of every study to a destination that takes every transfer syntax.
    let destination = Storescp::start(&work.path().join("moved"), "RECV", true);
    strata_cli(
        &strata,
        &[
            "ae",
            "add",
            "RECV",
            "127.0.0.1",
            &destination.port.to_string(),
        ],
    );
    let result = python_move(strata.dicom_port, "RECV", &studies, false);
    assert_eq!(result["final"], 0, "{result}");
    assert_eq!(
        result["NumberOfCompletedSuboperations"],
        sent.len(),
        "{result}"
    );
    assert_eq!(result["NumberOfFailedSuboperations"], 0, "{result}");
    assert!(
        result["pending"].as_u64().unwrap_or(0) >= 1,
        "pending responses with counts: {result}"
    );
    let received = destination.received(sent.len());
    assert_eq!(received.len(), sent.len());
    for (uid, received_file) in &received {
        let location = index
            .instance_location(uid)
            .await
            .expect("q")
            .expect("indexed");
        assert_eq!(
            data_set_sha256(received_file),
            data_set_sha256(&location.full_path()),
            "{uid} arrived byte-identical"
        );
    }
    let study = index.study(&studies[0]).await.expect("q").expect("study");
    assert!(
        study.last_accessed_at > study.received_at,
        "the move recorded the access"
    );

    // movescu (DCMTK) at SERIES level gets the same bytes.
    let second = Storescp::start(&work.path().join("moved2"), "RECV2", true);
    strata_cli(
        &strata,
        &["ae", "add", "RECV2", "127.0.0.1", &second.port.to_string()],
    );
    let first_series = index.series_of_study(&studies[0]).await.expect("series")[0]
        .series_uid
        .clone();
    let output = dcmtk::run(
        "movescu",
        &[
            STUDY_ROOT_MOVE,
            "-aec",
            "STRATA",
            "-aem",
            "RECV2",
            "-k",
            "QueryRetrieveLevel=SERIES",
            "-k",
            &format!("StudyInstanceUID={}", studies[0]),
            "-k",
            &format!("SeriesInstanceUID={first_series}"),
            "127.0.0.1",
            &strata.dicom_port.to_string(),
        ],
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(second.received(2).len(), 2);

    // C-GET with getscu, which proposes the uncompressed syntaxes only: stored-as-sent objects
    // arrive byte-identical, Big Endian is converted losslessly, JPEG/RLE cannot be.
    let get_dir = work.path().join("got");
    std::fs::create_dir_all(&get_dir).expect("mkdir");
    let explicit = &sets[0];
    let output = dcmtk::run(
        "getscu",
        &[
            "-v",
            "-S",
            "-aec",
            "STRATA",
            "-od",
            &get_dir.display().to_string(),
            "-k",
            "QueryRetrieveLevel=STUDY",
            "-k",
            &format!("StudyInstanceUID={}", study_of(&explicit.files[0])),
            "127.0.0.1",
            &strata.dicom_port.to_string(),
        ],
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let got: Vec<PathBuf> = files_below(&get_dir);
    assert_eq!(got.len(), explicit.files.len());
    for file in &got {
        let uid = sop_instance_uid(file);
        let location = index
            .instance_location(&uid)
            .await
            .expect("q")
            .expect("indexed");
        assert_eq!(
            data_set_sha256(file),
            data_set_sha256(&location.full_path()),
            "C-GET delivered {uid} byte-identical"
        );
    }
}

async fn refused_syntaxes_unknown_destinations_and_cancel(backend: Backend) {
    let work = tempfile::tempdir().expect("tempdir");
    let sets = corpus::build(work.path(), 2);
    let strata = Strata::start(backend, "").await;
    load(&strata, &sets);
    let by_name = |name: &str| sets.iter().find(|s| s.dir.ends_with(name)).expect("set");

    // A destination that only takes uncompressed data: JPEG-LS and RLE objects fail (no
    // lossless conversion), Big Endian is converted, and the final status lists the failures.
    let plain = Storescp::start(&work.path().join("plain"), "PLAIN", false);
    strata_cli(
        &strata,
        &["ae", "add", "PLAIN", "127.0.0.1", &plain.port.to_string()],
    );
    let jpeg_ls = by_name("jpeg_ls");
    let big_endian = by_name("big_endian");
    let studies = vec![study_of(&jpeg_ls.files[0]), study_of(&big_endian.files[0])];
    let result = python_move(strata.dicom_port, "PLAIN", &studies, false);
    assert_eq!(result["final"], 0xB000, "{result}");
    assert_eq!(result["NumberOfFailedSuboperations"], 2, "{result}");
    assert_eq!(result["NumberOfCompletedSuboperations"], 2, "{result}");
    let expected_failed: BTreeSet<String> =
        jpeg_ls.files.iter().map(|f| sop_instance_uid(f)).collect();
    let failed: BTreeSet<String> = result["failed"]
        .as_array()
        .expect("list")
        .iter()
        .map(|v| v.as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(failed, expected_failed);

    // Unknown destination.
    let result = python_move(strata.dicom_port, "NOWHERE", &studies, false);
    assert_eq!(result["final"], 0xA801, "{result}");

    // A listed peer without the right to retrieve is refused; with it, allowed again.
    strata_cli(
        &strata,
        &["ae", "add", "PYMOVE", "127.0.0.1", "1", "--no-retrieve"],
    );
    let result = python_move(strata.dicom_port, "PLAIN", &studies, false);
    assert_eq!(result["final"], 0x0124, "not authorized: {result}");
    strata_cli(&strata, &["ae", "add", "PYMOVE", "127.0.0.1", "1"]);
    let result = python_move(strata.dicom_port, "PLAIN", &studies, false);
    assert_eq!(result["final"], 0xB000, "{result}");

    // C-CANCEL after the first pending response of a long move.
    let many = dicom_scp::synthetic::generate(&dicom_scp::synthetic::CorpusSpec {
        out_dir: work.path().join("many"),
        instances_per_series: 150,
        matrix: 64,
        seed: 4711,
        ..Default::default()
    })
    .expect("generate");
    let output = dcmtk::storescu_dir(strata.dicom_port, &work.path().join("many"), &[]);
    assert!(output.status.success());
    let all = Storescp::start(&work.path().join("all"), "ALL", true);
    strata_cli(
        &strata,
        &["ae", "add", "ALL", "127.0.0.1", &all.port.to_string()],
    );
    let result = python_move(strata.dicom_port, "ALL", &[study_of(&many[0])], true);
    assert_eq!(result["final"], 0xFE00, "{result}");
    let completed = result["NumberOfCompletedSuboperations"]
        .as_u64()
        .unwrap_or(999);
    assert!(completed < 150, "the move stopped early: {result}");
    assert!(
        result["NumberOfRemainingSuboperations"]
            .as_u64()
            .unwrap_or(0)
            > 0,
        "{result}"
    );
    dcmtk::echo(strata.dicom_port, "STRATA").expect("still serving");
}

/// Moves, gets and queries while ingest runs: everything succeeds, nothing deadlocks.
async fn retrievals_queries_and_ingest_together(backend: Backend) {
    let work = tempfile::tempdir().expect("tempdir");
    let base = dicom_scp::synthetic::generate(&dicom_scp::synthetic::CorpusSpec {
        out_dir: work.path().join("base"),
        patients: 3,
        instances_per_series: 20,
        matrix: 64,
        seed: 4800,
        ..Default::default()
    })
    .expect("generate");
    dicom_scp::synthetic::generate(&dicom_scp::synthetic::CorpusSpec {
        out_dir: work.path().join("incoming"),
        patients: 4,
        instances_per_series: 25,
        matrix: 64,
        seed: 4801,
        ..Default::default()
    })
    .expect("generate");
    let strata = Strata::start(backend, "").await;
    assert!(
        dcmtk::storescu_dir(strata.dicom_port, &work.path().join("base"), &[])
            .status
            .success()
    );
    let destination = Storescp::start(&work.path().join("dest"), "DEST", true);
    strata_cli(
        &strata,
        &[
            "ae",
            "add",
            "DEST",
            "127.0.0.1",
            &destination.port.to_string(),
        ],
    );
    let port = strata.dicom_port.to_string();
    let study = study_of(&base[0]);
    let incoming = work.path().join("incoming").display().to_string();

    let mut jobs: Vec<std::thread::JoinHandle<(String, std::process::Output)>> = Vec::new();
    let spawn = |name: &str, tool: &'static str, args: Vec<String>| {
        let name = name.to_string();
        std::thread::spawn(move || {
            let refs: Vec<&str> = args.iter().map(String::as_str).collect();
            (name, dcmtk::run(tool, &refs))
        })
    };
    jobs.push(spawn(
        "ingest",
        "storescu",
        vec![
            "-aec".into(),
            "STRATA".into(),
            "+sd".into(),
            "+r".into(),
            "127.0.0.1".into(),
            port.clone(),
            incoming,
        ],
    ));
    for n in 0..3 {
        jobs.push(spawn(
            &format!("move{n}"),
            "movescu",
            vec![
                "-S".into(),
                "-aec".into(),
                "STRATA".into(),
                "-aem".into(),
                "DEST".into(),
                "-k".into(),
                "QueryRetrieveLevel=STUDY".into(),
                "-k".into(),
                format!("StudyInstanceUID={study}"),
                "127.0.0.1".into(),
                port.clone(),
            ],
        ));
        let get_dir = work.path().join(format!("get{n}"));
        std::fs::create_dir_all(&get_dir).expect("mkdir");
        jobs.push(spawn(
            &format!("get{n}"),
            "getscu",
            vec![
                "-S".into(),
                "-aec".into(),
                "STRATA".into(),
                "-od".into(),
                get_dir.display().to_string(),
                "-k".into(),
                "QueryRetrieveLevel=STUDY".into(),
                "-k".into(),
                format!("StudyInstanceUID={study}"),
                "127.0.0.1".into(),
                port.clone(),
            ],
        ));
        jobs.push(spawn(
            &format!("find{n}"),
            "findscu",
            vec![
                "-S".into(),
                "-aec".into(),
                "STRATA".into(),
                "-k".into(),
                "QueryRetrieveLevel=STUDY".into(),
                "-k".into(),
                "StudyInstanceUID".into(),
                "127.0.0.1".into(),
                port.clone(),
            ],
        ));
    }
    for job in jobs {
        let (name, output) = job.join().expect("job thread");
        assert!(
            output.status.success(),
            "{name} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    for n in 0..3 {
        assert_eq!(
            files_below(&work.path().join(format!("get{n}"))).len(),
            20,
            "get{n} got the whole study"
        );
    }
    let counts = strata.index().await.counts().await.expect("counts");
    assert_eq!(counts.instances, 60 + 100);
}

on_both_backends!(
    move_and_get_deliver_byte_identical_objects,
    refused_syntaxes_unknown_destinations_and_cancel,
    retrievals_queries_and_ingest_together,
);
