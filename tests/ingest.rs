//! End-to-end ingest: the real binary, real DCMTK peers, SQLite and PostgreSQL.

#[macro_use]
mod common;

use common::scu::{read_parts, Scu};
use common::{corpus, data_set_sha256, dcmtk, files_below, sop_instance_uid, Backend, Strata};
use dicom_core::{DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;
use dicom_scp::synthetic::{generate, CorpusSpec};
use dicom_transfer_syntax_registry::entries::EXPLICIT_VR_LITTLE_ENDIAN;
use std::collections::HashMap;
use std::path::Path;

const CT: &str = "1.2.840.10008.5.1.4.1.1.2";

/// Generates CT objects into `dir` (the spec's `out_dir` is ignored).
fn synthetic_ct(dir: &Path, spec: CorpusSpec) -> Vec<std::path::PathBuf> {
    generate(&CorpusSpec {
        out_dir: dir.to_path_buf(),
        ..spec
    })
    .expect("generate")
}

const EXPLICIT_LE: &str = "1.2.840.10008.1.2.1";

/// The acceptance corpus through `storescu +sd +r`, compared byte for byte with what DCMTK's
/// bit-preserving `storescp +B` received from the same sends.
async fn corpus_is_stored_byte_exact_and_indexed(backend: Backend) {
    let work = tempfile::tempdir().expect("tempdir");
    let sets = corpus::build(work.path(), 3);
    let strata = Strata::start(backend, "").await;
    dcmtk::echo(strata.dicom_port, "STRATA").expect("C-ECHO succeeds");
    let reference = dcmtk::Storescp::start(&work.path().join("reference"), "STRATA", true);

    for set in &sets {
        for port in [strata.dicom_port, reference.port] {
            let output = dcmtk::storescu_dir(port, &set.dir, set.storescu_options);
            let log = String::from_utf8_lossy(&output.stderr).into_owned()
                + &String::from_utf8_lossy(&output.stdout);
            assert!(
                output.status.success(),
                "storescu of {} to port {port} failed:\n{log}",
                set.dir.display()
            );
            assert_eq!(
                log.matches("Received Store Response (Success)").count(),
                set.files.len(),
                "every file acknowledged with success:\n{log}"
            );
        }
    }
    std::thread::sleep(std::time::Duration::from_millis(300)); // let the forked storescp finish writing
    let reference_files: HashMap<String, std::path::PathBuf> = files_below(&reference.out_dir)
        .into_iter()
        .map(|p| (sop_instance_uid(&p), p))
        .collect();

    let index = strata.index().await;
    let mut transfer_syntaxes = std::collections::HashSet::new();
    let mut sop_classes = std::collections::HashSet::new();
    for set in &sets {
        for file in &set.files {
            let uid = sop_instance_uid(file);
            let location = index
                .instance_location(&uid)
                .await
                .expect("query")
                .unwrap_or_else(|| panic!("{uid} not indexed"));
            assert_eq!(
                location.transfer_syntax,
                set.transfer_syntax,
                "{}",
                file.display()
            );
            let stored = location.full_path();
            let bytes = std::fs::read(&stored).expect("stored file exists");
            assert_eq!(bytes.len() as i64, location.size_bytes);
            use sha2::Digest;
            assert_eq!(
                hex::encode(sha2::Sha256::digest(&bytes)),
                location.sha256,
                "index checksum matches the file"
            );
            let reference_file = reference_files
                .get(&uid)
                .unwrap_or_else(|| panic!("storescp did not receive {uid}"));
            assert_eq!(
                data_set_sha256(&stored),
                data_set_sha256(reference_file),
                "data set of {uid} is byte-identical to what was sent"
            );
            transfer_syntaxes.insert(location.transfer_syntax.clone());
            sop_classes.insert(location.sop_class_uid.clone());
            if set.dir.ends_with("multiframe") {
                assert_eq!(location.number_of_frames, Some(4));
            }
        }
    }
    assert!(transfer_syntaxes.len() >= 6, "{transfer_syntaxes:?}");
    assert!(sop_classes.len() >= 3, "{sop_classes:?}");

    // Attributes of one study, as the generator wrote them.
    let first = &sets[0].files[0];
    let object = dicom_object::open_file(first).expect("open");
    let text = |tag| {
        object
            .element(tag)
            .expect("element")
            .to_str()
            .expect("str")
            .trim()
            .to_string()
    };
    let study = index
        .study(&text(tags::STUDY_INSTANCE_UID))
        .await
        .expect("query")
        .expect("study row");
    assert_eq!(study.patient_id, text(tags::PATIENT_ID));
    assert_eq!(study.patient_name, text(tags::PATIENT_NAME));
    assert_eq!(study.birth_date, text(tags::PATIENT_BIRTH_DATE));
    assert_eq!(study.sex, text(tags::PATIENT_SEX));
    assert_eq!(study.study_date, text(tags::STUDY_DATE));
    assert_eq!(study.accession_number, text(tags::ACCESSION_NUMBER));
    assert_eq!(study.description, text(tags::STUDY_DESCRIPTION));
    assert_eq!(
        study.referring_physician,
        text(tags::REFERRING_PHYSICIAN_NAME)
    );
    assert_eq!(study.modalities, "CT");
    assert_eq!((study.num_series, study.num_instances), (1, 3));
    let series = index
        .series_of_study(&study.study_uid)
        .await
        .expect("series");
    assert_eq!(series[0].source_ae, "STORESCU");
    assert_eq!(series[0].body_part, "CHEST");
}

/// Builds an Explicit VR LE data set from a corpus file with some attributes changed.
fn modified_data_set(file: &Path, changes: &[(dicom_core::Tag, &str)]) -> Vec<u8> {
    let mut object = dicom_object::open_file(file).expect("open").into_inner();
    for (tag, value) in changes {
        let mut value = value.to_string();
        if value.len() % 2 == 1 {
            value.push('\0');
        }
        let vr = if *tag == tags::PATIENT_ID {
            VR::LO
        } else {
            VR::UI
        };
        object.put(DataElement::new(*tag, vr, PrimitiveValue::from(value)));
    }
    let mut bytes = Vec::new();
    InMemDicomObject::write_dataset_with_ts(
        &object,
        &mut bytes,
        &EXPLICIT_VR_LITTLE_ENDIAN.erased(),
    )
    .expect("encode");
    bytes
}

fn stored_file_count(strata: &Strata) -> usize {
    files_below(&strata.online_dir())
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "dcm"))
        .count()
}

/// Coercion, duplicate, garbage, unknown AE: each gets its documented answer, the association
/// (where it exists) stays usable, and nothing stored is touched.
async fn refusals_get_clear_statuses(backend: Backend) {
    let work = tempfile::tempdir().expect("tempdir");
    let files = synthetic_ct(
        work.path(),
        CorpusSpec {
            instances_per_series: 3,
            matrix: 16,
            seed: 77,
            ..Default::default()
        },
    );
    let mut strata = Strata::start(
        backend,
        "[[dicom.peers]]\nae_title = \"KNOWN\"\nhost = \"127.0.0.1\"\n",
    )
    .await;
    let mut scu =
        Scu::connect(strata.dicom_port, "TESTSCU", &[(CT, EXPLICIT_LE)]).expect("associate");
    assert_eq!(scu.store_file(&files[0]).status, 0x0000);
    let index = strata.index().await;
    let original = read_parts(&files[0]);
    let study_uid = index
        .instance_location(&original.sop_instance_uid)
        .await
        .expect("q")
        .expect("stored")
        .study_uid;

    // Series of the stored study, sent under another study: forbidden coercion.
    let coerced = modified_data_set(&files[1], &[(tags::STUDY_INSTANCE_UID, "1.2.999.1")]);
    let answer = scu.store(
        CT,
        &read_parts(&files[1]).sop_instance_uid,
        EXPLICIT_LE,
        &coerced,
    );
    assert_eq!(answer.status, 0xC002, "{answer:?}");
    let comment = answer.comment.expect("Error Comment");
    assert!(
        comment.contains("1.2.999.1") && comment.contains(&study_uid),
        "comment names both studies: {comment}"
    );

    // The stored study under another patient ID.
    let other_patient = modified_data_set(
        &files[1],
        &[
            (tags::PATIENT_ID, "SOMEONE"),
            (tags::SERIES_INSTANCE_UID, "1.2.999.2"),
        ],
    );
    let answer = scu.store(
        CT,
        &read_parts(&files[1]).sop_instance_uid,
        EXPLICIT_LE,
        &other_patient,
    );
    assert_eq!(answer.status, 0xC002, "{answer:?}");
    assert!(answer.comment.expect("comment").contains("SOMEONE"));
    // The comment names patient IDs; logs above debug level must not.
    let log = strata.log();
    let above_debug = log
        .lines()
        .filter(|l| l.contains(" INFO ") || l.contains(" WARN ") || l.contains(" ERROR "));
    for line in above_debug {
        assert!(
            !line.contains("SOMEONE"),
            "patient ID logged above debug level: {line}"
        );
    }
    assert!(
        log.contains("study of another patient"),
        "the conflict is logged (without patient data):\n{log}"
    );

    // Duplicate (default keep-first): success, one copy kept.
    assert_eq!(scu.store_file(&files[0]).status, 0x0000);
    assert_eq!(
        stored_file_count(&strata),
        1,
        "duplicate discarded, refused objects left nothing"
    );

    // Garbage: a failure with a comment, and the same association keeps working.
    let garbage = b"\x08\x00\x16\x00UI\xff\xffthis is not a data set".to_vec();
    let answer = scu.store(CT, "1.2.999.3", EXPLICIT_LE, &garbage);
    assert_eq!(answer.status, 0xC000, "{answer:?}");
    assert!(answer.comment.is_some());
    assert_eq!(
        scu.store_file(&files[2]).status,
        0x0000,
        "association usable after a garbage data set"
    );
    assert_eq!(scu.echo().status, 0x0000);
    scu.release();
    assert_eq!(stored_file_count(&strata), 2);
    assert_eq!(index.counts().await.expect("counts").instances, 2);
    let leftovers = std::fs::read_dir(strata.online_dir().join(".incoming"))
        .expect("incoming")
        .count();
    assert_eq!(leftovers, 0, "no temporary files remain");

    // AE policy: a listed AE from its host is accepted, from another host (127.0.0.2) not;
    // an unlisted AE only from this machine's loopback address.
    assert!(Scu::connect(strata.dicom_port, "KNOWN", &[]).is_ok());
    assert_eq!(
        ae_answer(strata.dicom_port, "KNOWN", "127.0.0.2"),
        Answered::Rejected(CALLING_AE_NOT_RECOGNIZED)
    );
    assert_eq!(
        ae_answer(strata.dicom_port, "STRANGER", "127.0.0.2"),
        Answered::Rejected(CALLING_AE_NOT_RECOGNIZED)
    );
    assert_eq!(
        ae_answer(strata.dicom_port, "STRANGER", "127.0.0.1"),
        Answered::Accepted
    );
    assert_eq!(
        python_associate(strata.dicom_port, "STRANGER", "127.0.0.1"),
        "ESTABLISHED"
    );
    assert!(
        dcmtk::echo(strata.dicom_port, "NOTSTRATA").is_err(),
        "wrong called AE title is rejected"
    );
    strata.assert_alive();
}

#[derive(Debug, PartialEq, Eq)]
enum Answered {
    Accepted,
    /// A-ASSOCIATE-RJ with this service-user reason.
    Rejected(dicom_ul::pdu::AssociationRJServiceUserReason),
}

const CALLING_AE_NOT_RECOGNIZED: dicom_ul::pdu::AssociationRJServiceUserReason =
    dicom_ul::pdu::AssociationRJServiceUserReason::CallingAETitleNotRecognized;

/// What the server answers an A-ASSOCIATE-RQ from `source` with (DCMTK cannot bind a source
/// address, and pynetdicom reports some rejections as aborts when the machine is loaded).
fn ae_answer(port: u16, calling_ae: &str, source: &str) -> Answered {
    use dicom_ul::pdu::{AssociationRJSource, Pdu};
    match common::scu::associate_from(source, port, calling_ae) {
        Pdu::AssociationAC(_) => Answered::Accepted,
        Pdu::AssociationRJ(rj) => match rj.source {
            AssociationRJSource::ServiceUser(reason) => Answered::Rejected(reason),
            other => panic!("rejected by {other:?}"),
        },
        other => panic!("unexpected answer {other:?}"),
    }
}

/// Associates with pynetdicom from a chosen source address.
fn python_associate(port: u16, calling_ae: &str, source: &str) -> String {
    let script = r#"
import sys
from pynetdicom import AE
ae = AE(ae_title=sys.argv[1])
ae.add_requested_context('1.2.840.10008.1.1')
assoc = ae.associate('127.0.0.1', int(sys.argv[2]), ae_title='STRATA', bind_address=(sys.argv[3], 0))
if assoc.is_established:
    print('ESTABLISHED'); assoc.release()
elif assoc.is_rejected:
    print('REJECTED')
else:
    print('FAILED aborted=%s' % assoc.is_aborted)
"#;
    let output = dcmtk::python(&["-c", script, calling_ae, &port.to_string(), source], None);
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

/// Every RW filesystem below its watermark: 0xA700, nothing written, server keeps serving.
async fn full_storage_is_out_of_resources(backend: Backend) {
    let work = tempfile::tempdir().expect("tempdir");
    let files = synthetic_ct(
        work.path(),
        CorpusSpec {
            instances_per_series: 1,
            matrix: 16,
            seed: 78,
            ..Default::default()
        },
    );
    let mut strata = Strata::start(backend, "").await;
    let online = strata.online_dir();
    std::fs::write(
        &strata.config_path,
        std::fs::read_to_string(&strata.config_path).expect("config")
            + &format!(
                "\n[online]\nfilesystems = [{{ path = \"{}\", min_free = \"1000000TB\" }}]\n",
                online.display()
            ),
    )
    .expect("rewrite config");
    strata.restart();
    let mut scu =
        Scu::connect(strata.dicom_port, "TESTSCU", &[(CT, EXPLICIT_LE)]).expect("associate");
    let answer = scu.store_file(&files[0]);
    assert_eq!(answer.status, 0xA700, "{answer:?}");
    assert_eq!(scu.echo().status, 0x0000, "association still usable");
    scu.release();
    assert_eq!(stored_file_count(&strata), 0);
    assert_eq!(
        strata
            .index()
            .await
            .counts()
            .await
            .expect("counts")
            .instances,
        0
    );
    strata.assert_alive();
}

/// kill -9 while four associations send: whatever got success is stored and indexed after
/// restart, no index row points at a missing file, and no temporary file survives.
async fn kill9_loses_nothing_acknowledged(backend: Backend) {
    let work = tempfile::tempdir().expect("tempdir");
    let files = synthetic_ct(
        work.path(),
        CorpusSpec {
            series_per_study: 4,
            instances_per_series: 60,
            matrix: 256,
            seed: 79,
            ..Default::default()
        },
    );
    let mut strata = Strata::start(backend, "").await;
    let port = strata.dicom_port;
    let acknowledged = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let chunks: Vec<Vec<std::path::PathBuf>> =
        files.chunks(files.len() / 4).map(|c| c.to_vec()).collect();
    let senders: Vec<_> = chunks
        .into_iter()
        .map(|chunk| {
            let acknowledged = acknowledged.clone();
            std::thread::spawn(move || {
                let Ok(mut scu) = Scu::connect(port, "TESTSCU", &[(CT, EXPLICIT_LE)]) else {
                    return;
                };
                for file in chunk {
                    let parts = read_parts(&file);
                    match scu.try_store(
                        &parts.sop_class_uid,
                        &parts.sop_instance_uid,
                        &parts.transfer_syntax,
                        &parts.data_set,
                    ) {
                        Ok(answer) if answer.status == 0 => acknowledged
                            .lock()
                            .expect("lock")
                            .push(parts.sop_instance_uid),
                        Ok(answer) => panic!("unexpected status {answer:?}"),
                        Err(_) => return, // the server died
                    }
                }
            })
        })
        .collect();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while acknowledged.lock().expect("lock").len() < 40 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    strata.kill9();
    for sender in senders {
        sender.join().expect("sender thread");
    }
    let acknowledged = acknowledged.lock().expect("lock").clone();
    assert!(
        acknowledged.len() >= 40 && acknowledged.len() < files.len(),
        "killed mid-send ({} of {})",
        acknowledged.len(),
        files.len()
    );

    strata.restart();
    let index = strata.index().await;
    for uid in &acknowledged {
        let location = index
            .instance_location(uid)
            .await
            .expect("q")
            .unwrap_or_else(|| panic!("acknowledged {uid} lost"));
        let bytes = std::fs::read(location.full_path()).expect("acknowledged file present");
        use sha2::Digest;
        assert_eq!(hex::encode(sha2::Sha256::digest(&bytes)), location.sha256);
    }
    for file in &files {
        if let Some(location) = index
            .instance_location(&sop_instance_uid(file))
            .await
            .expect("q")
        {
            assert!(
                location.full_path().exists(),
                "index row points at a missing file"
            );
        }
    }
    let leftovers = std::fs::read_dir(strata.online_dir().join(".incoming"))
        .expect("incoming")
        .count();
    assert_eq!(
        leftovers, 0,
        "temporary files of the interrupted transfers are gone"
    );
    strata.assert_alive();
}

on_both_backends!(
    corpus_is_stored_byte_exact_and_indexed,
    refusals_get_clear_statuses,
    full_storage_is_out_of_resources,
    kill9_loses_nothing_acknowledged,
);
