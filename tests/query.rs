//! End-to-end C-FIND with DCMTK findscu and pynetdicom, on SQLite and PostgreSQL.
//!
//! The corpus is generated with known attributes: patient p (QR0000p, Synthetic^Patient{p}),
//! two studies each (2.25.500.p.s, date 2024-(p+1)-(s+1), accession A{p}{s:03}), two CT series
//! of two instances per study.

#[macro_use]
mod common;

use common::scu::Scu;
use common::{dcmtk, Backend, Strata};
use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;
use dicom_scp::synthetic::{generate, CorpusSpec};
use std::collections::BTreeSet;

const CT: &str = "1.2.840.10008.5.1.4.1.1.2";
const EXPLICIT_LE: &str = "1.2.840.10008.1.2.1";

async fn loaded_archive(backend: Backend, extra_toml: &str) -> (Strata, tempfile::TempDir) {
    let work = tempfile::tempdir().expect("tempdir");
    let files = generate(&CorpusSpec {
        out_dir: work.path().join("corpus"),
        patients: 3,
        studies_per_patient: 2,
        series_per_study: 2,
        instances_per_series: 2,
        matrix: 8,
        seed: 500,
        patient_prefix: "QR".into(),
        ..CorpusSpec::default()
    })
    .expect("generate");
    let strata = Strata::start(backend, extra_toml).await;
    let mut scu =
        Scu::connect(strata.dicom_port, "LOADER", &[(CT, EXPLICIT_LE)]).expect("associate");
    for file in &files {
        assert_eq!(scu.store_file(file).status, 0, "{}", file.display());
    }
    scu.release();
    (strata, work)
}

/// Runs DCMTK findscu and returns the response identifiers it extracted.
fn findscu(
    strata: &Strata,
    model: &str,
    keys: &[&str],
    out: &std::path::Path,
) -> Vec<InMemDicomObject> {
    let _ = std::fs::remove_dir_all(out);
    std::fs::create_dir_all(out).expect("mkdir");
    let port = strata.dicom_port.to_string();
    let out_text = out.display().to_string();
    let mut args = vec![model, "-aec", "STRATA", "-X", "-od", &out_text];
    for key in keys {
        args.push("-k");
        args.push(key);
    }
    args.extend(["127.0.0.1", &port]);
    let output = dcmtk::run("findscu", &args);
    assert!(
        output.status.success(),
        "findscu failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let mut files = common::files_below(out);
    files.sort();
    files
        .iter()
        .map(|f| {
            dicom_object::open_file(f)
                .expect("response file")
                .into_inner()
        })
        .collect()
}

fn text(object: &InMemDicomObject, tag: dicom_core::Tag) -> String {
    object
        .get(tag)
        .and_then(|e| e.to_str().ok())
        .map(|s| s.trim_end_matches(['\0', ' ']).to_string())
        .unwrap_or_default()
}

fn values(answers: &[InMemDicomObject], tag: dicom_core::Tag) -> BTreeSet<String> {
    answers.iter().map(|a| text(a, tag)).collect()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

async fn findscu_matching_kinds(backend: Backend) {
    let (strata, work) = loaded_archive(backend, "").await;
    let out = work.path().join("answers");
    let study = |keys: &[&str]| {
        let mut all = vec!["QueryRetrieveLevel=STUDY", "StudyInstanceUID"];
        all.extend_from_slice(keys);
        values(
            &findscu(&strata, "-S", &all, &out),
            tags::STUDY_INSTANCE_UID,
        )
    };
    assert_eq!(
        study(&["PatientID=QR00001"]),
        set(&["2.25.500.1.0", "2.25.500.1.1"]),
        "single value"
    );
    assert_eq!(
        study(&["StudyDate=20240201-20240301"]),
        set(&["2.25.500.1.0", "2.25.500.1.1", "2.25.500.2.0"]),
        "date range"
    );
    assert_eq!(
        study(&["StudyDate=-20240101"]),
        set(&["2.25.500.0.0"]),
        "open start"
    );
    assert_eq!(
        study(&["StudyDate=20240302-"]),
        set(&["2.25.500.2.1"]),
        "open end"
    );
    assert_eq!(
        study(&["PatientName=synthetic^patient2"]),
        set(&["2.25.500.2.0", "2.25.500.2.1"]),
        "names ignore case"
    );
    assert_eq!(
        study(&["PatientName=*Patient0"]),
        set(&["2.25.500.0.0", "2.25.500.0.1"]),
        "wildcard *"
    );
    assert_eq!(
        study(&["AccessionNumber=A?001"]),
        set(&["2.25.500.0.1", "2.25.500.1.1", "2.25.500.2.1"]),
        "wildcard ?"
    );
    assert_eq!(
        study(&["StudyInstanceUID=2.25.500.0.0\\2.25.500.2.1"]),
        set(&["2.25.500.0.0", "2.25.500.2.1"]),
        "UID list"
    );
    assert_eq!(study(&["ModalitiesInStudy=MR"]), set(&[]), "no match");

    // Exactly the requested keys plus the three the SCP always adds; computed keys filled.
    let answers = findscu(
        &strata,
        "-S",
        &[
            "QueryRetrieveLevel=STUDY",
            "PatientID=QR00000",
            "StudyInstanceUID",
            "NumberOfStudyRelatedInstances",
            "NumberOfStudyRelatedSeries",
            "ModalitiesInStudy",
            "InstanceAvailability",
            "PatientName",
        ],
        &out,
    );
    assert_eq!(answers.len(), 2);
    for answer in &answers {
        let returned: BTreeSet<dicom_core::Tag> = answer.iter().map(|e| e.header().tag).collect();
        let expected: BTreeSet<dicom_core::Tag> = [
            tags::SPECIFIC_CHARACTER_SET,
            tags::QUERY_RETRIEVE_LEVEL,
            tags::RETRIEVE_AE_TITLE,
            tags::PATIENT_ID,
            tags::STUDY_INSTANCE_UID,
            tags::NUMBER_OF_STUDY_RELATED_INSTANCES,
            tags::NUMBER_OF_STUDY_RELATED_SERIES,
            tags::MODALITIES_IN_STUDY,
            tags::INSTANCE_AVAILABILITY,
            tags::PATIENT_NAME,
        ]
        .into_iter()
        .collect();
        assert_eq!(returned, expected);
        assert_eq!(text(answer, tags::NUMBER_OF_STUDY_RELATED_INSTANCES), "4");
        assert_eq!(text(answer, tags::NUMBER_OF_STUDY_RELATED_SERIES), "2");
        assert_eq!(text(answer, tags::MODALITIES_IN_STUDY), "CT");
        assert_eq!(text(answer, tags::INSTANCE_AVAILABILITY), "ONLINE");
        assert_eq!(text(answer, tags::PATIENT_NAME), "Synthetic^Patient0");
        assert_eq!(text(answer, tags::RETRIEVE_AE_TITLE), "STRATA");
        assert_eq!(text(answer, tags::QUERY_RETRIEVE_LEVEL), "STUDY");
    }

    let series = findscu(
        &strata,
        "-S",
        &[
            "QueryRetrieveLevel=SERIES",
            "StudyInstanceUID=2.25.500.0.0",
            "SeriesInstanceUID",
            "Modality=CT",
            "NumberOfSeriesRelatedInstances",
            "SeriesNumber",
        ],
        &out,
    );
    assert_eq!(
        values(&series, tags::SERIES_INSTANCE_UID),
        set(&["2.25.500.0.0.0", "2.25.500.0.0.1"])
    );
    assert_eq!(
        values(&series, tags::NUMBER_OF_SERIES_RELATED_INSTANCES),
        set(&["2"])
    );
    assert_eq!(values(&series, tags::SERIES_NUMBER), set(&["1", "2"]));

    let images = findscu(
        &strata,
        "-S",
        &[
            "QueryRetrieveLevel=IMAGE",
            "StudyInstanceUID=2.25.500.0.0",
            "SeriesInstanceUID=2.25.500.0.0.1",
            "SOPInstanceUID",
            "InstanceNumber",
            "SOPClassUID",
        ],
        &out,
    );
    assert_eq!(
        values(&images, tags::SOP_INSTANCE_UID),
        set(&["2.25.500.0.0.1.0", "2.25.500.0.0.1.1"])
    );
    assert_eq!(values(&images, tags::INSTANCE_NUMBER), set(&["1", "2"]));
    assert_eq!(values(&images, tags::SOP_CLASS_UID), set(&[CT]));

    let patients = findscu(
        &strata,
        "-P",
        &[
            "QueryRetrieveLevel=PATIENT",
            "PatientID=QR0000*",
            "NumberOfPatientRelatedStudies",
            "NumberOfPatientRelatedInstances",
        ],
        &out,
    );
    assert_eq!(
        values(&patients, tags::PATIENT_ID),
        set(&["QR00000", "QR00001", "QR00002"])
    );
    assert_eq!(
        values(&patients, tags::NUMBER_OF_PATIENT_RELATED_STUDIES),
        set(&["2"])
    );
    assert_eq!(
        values(&patients, tags::NUMBER_OF_PATIENT_RELATED_INSTANCES),
        set(&["8"])
    );

    // Study Root has no PATIENT level: a failure, and the server keeps serving.
    let output = dcmtk::run(
        "findscu",
        &[
            "-v",
            "-S",
            "-aec",
            "STRATA",
            "-k",
            "QueryRetrieveLevel=PATIENT",
            "-k",
            "PatientID",
            "127.0.0.1",
            &strata.dicom_port.to_string(),
        ],
    );
    let log = String::from_utf8_lossy(&output.stderr).into_owned()
        + &String::from_utf8_lossy(&output.stdout);
    assert!(log.contains("DataSetDoesNotMatchSOPClass"), "{log}");
    dcmtk::echo(strata.dicom_port, "STRATA").expect("still serving");
}

/// pynetdicom as the SCU: the same answers, and the result limit.
async fn pynetdicom_find_and_limit(backend: Backend) {
    let (strata, _work) = loaded_archive(backend, "[dicom]\nmax_find_results = 4\n").await;
    let port = strata.dicom_port.to_string();
    let script = r#"
import sys, json
from pydicom.dataset import Dataset
from pynetdicom import AE
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind as FIND
mode, port = sys.argv[1], int(sys.argv[2])
ae = AE(ae_title='PYFIND'); ae.add_requested_context(FIND)
assoc = ae.associate('127.0.0.1', port, ae_title='STRATA')
assert assoc.is_established
ds = Dataset(); ds.QueryRetrieveLevel = 'STUDY'; ds.StudyInstanceUID = ''; ds.PatientName = ''
if mode == 'match':
    ds.PatientID = 'QR00002'
pending, final, comment = [], None, None
for i, (status, identifier) in enumerate(assoc.send_c_find(ds, FIND, msg_id=7)):
    if status is None:
        break
    if status.Status in (0xFF00, 0xFF01):
        pending.append(str(identifier.StudyInstanceUID))
    else:
        final = status.Status
        comment = str(status.get('ErrorComment', ''))
assoc.release()
print(json.dumps({'pending': sorted(pending), 'final': final, 'comment': comment}))
"#;
    let run = |mode: &str| -> serde_json::Value {
        let output = dcmtk::python(&["-c", script, mode, &port], None);
        serde_json::from_slice(&output.stdout).expect("json")
    };
    let matched = run("match");
    assert_eq!(matched["final"], 0);
    assert_eq!(
        matched["pending"],
        serde_json::json!(["2.25.500.2.0", "2.25.500.2.1"])
    );

    // The `python -m pynetdicom findscu` application, every matching kind and level.
    let accession = pynetdicom_findscu(
        &port,
        &[
            "QueryRetrieveLevel=STUDY",
            "PatientID=QR00001",
            "AccessionNumber=",
        ],
        tags::ACCESSION_NUMBER,
    );
    assert_eq!(accession, set(&["A1000", "A1001"]));
    let studies = |keys: &[&str]| {
        let mut all = vec!["QueryRetrieveLevel=STUDY", "StudyInstanceUID="];
        all.extend_from_slice(keys);
        pynetdicom_findscu(&port, &all, tags::STUDY_INSTANCE_UID)
    };
    assert_eq!(
        studies(&["PatientID=QR00001"]),
        set(&["2.25.500.1.0", "2.25.500.1.1"])
    );
    assert_eq!(
        studies(&["PatientName=synthetic^patient0"]),
        set(&["2.25.500.0.0", "2.25.500.0.1"])
    );
    assert_eq!(
        studies(&["PatientName=*Patient2"]),
        set(&["2.25.500.2.0", "2.25.500.2.1"])
    );
    assert_eq!(
        studies(&["AccessionNumber=A?001"]),
        set(&["2.25.500.0.1", "2.25.500.1.1", "2.25.500.2.1"])
    );
    assert_eq!(
        studies(&["StudyDate=20240201-20240301"]),
        set(&["2.25.500.1.0", "2.25.500.1.1", "2.25.500.2.0"])
    );
    assert_eq!(studies(&["StudyDate=-20240101"]), set(&["2.25.500.0.0"]));
    let series = pynetdicom_findscu(
        &port,
        &[
            "QueryRetrieveLevel=SERIES",
            "StudyInstanceUID=2.25.500.1.1",
            "SeriesInstanceUID=",
        ],
        tags::SERIES_INSTANCE_UID,
    );
    assert_eq!(series, set(&["2.25.500.1.1.0", "2.25.500.1.1.1"]));
    let images = pynetdicom_findscu(
        &port,
        &[
            "QueryRetrieveLevel=IMAGE",
            "StudyInstanceUID=2.25.500.1.1",
            "SeriesInstanceUID=2.25.500.1.1.0",
            "SOPInstanceUID=",
        ],
        tags::SOP_INSTANCE_UID,
    );
    assert_eq!(images, set(&["2.25.500.1.1.0.0", "2.25.500.1.1.0.1"]));

    let limited = run("all");
    assert_eq!(
        limited["pending"].as_array().map(Vec::len),
        Some(4),
        "six matches, limit four"
    );
    assert_eq!(limited["final"], 0xA700, "a limited answer says so");
    assert!(
        limited["comment"].as_str().unwrap_or("").contains("4"),
        "{limited}"
    );
}

/// Runs `python -m pynetdicom findscu -S -w` (each answer written to rsp000001.dcm, … in its
/// working directory) and returns the values of `tag` in the answers.
fn pynetdicom_findscu(port: &str, keys: &[&str], tag: dicom_core::Tag) -> BTreeSet<String> {
    let out = tempfile::tempdir().expect("tempdir");
    let mut args = vec!["-m", "pynetdicom", "findscu", "-S", "-w", "-aec", "STRATA"];
    for key in keys {
        args.extend(["-k", key]);
    }
    args.extend(["127.0.0.1", port]);
    dcmtk::python(&args, Some(out.path()));
    let answers: Vec<InMemDicomObject> = common::files_below(out.path())
        .iter()
        .map(|f| {
            dicom_object::open_file(f)
                .expect("answer file")
                .into_inner()
        })
        .collect();
    values(&answers, tag)
}

/// C-CANCEL right behind a C-FIND that matches every image: the answer stops with 0xFE00.
async fn cancel_stops_a_find(backend: Backend) {
    let (strata, _work) = loaded_archive(backend, "").await;
    let model = "1.2.840.10008.5.1.4.1.2.2.1";
    let mut identifier = InMemDicomObject::new_empty();
    for (tag, vr, value) in [
        (tags::QUERY_RETRIEVE_LEVEL, dicom_core::VR::CS, "IMAGE "),
        (tags::SOP_INSTANCE_UID, dicom_core::VR::UI, ""),
    ] {
        identifier.put(dicom_core::DataElement::new(
            tag,
            vr,
            dicom_core::PrimitiveValue::from(value),
        ));
    }
    let mut bytes = Vec::new();
    identifier
        .write_dataset_with_ts(
            &mut bytes,
            &dicom_transfer_syntax_registry::entries::EXPLICIT_VR_LITTLE_ENDIAN.erased(),
        )
        .expect("encode");
    let mut scu =
        Scu::connect(strata.dicom_port, "CANCELLER", &[(model, EXPLICIT_LE)]).expect("associate");
    let (pending, final_status) = scu.find_and_cancel(model, &bytes);
    assert_eq!(final_status, 0xFE00);
    assert!(pending < 24, "answers stopped early ({pending} of 24)");
    assert_eq!(scu.echo().status, 0, "association usable after the cancel");
    scu.release();
}

on_both_backends!(
    findscu_matching_kinds,
    pynetdicom_find_and_limit,
    cancel_stops_a_find
);
