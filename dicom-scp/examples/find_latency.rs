//! C-FIND latency client for bench/query.sh: on one association, runs QUERIES study-level
//! C-FINDs by Patient ID and QUERIES by a 30-day date range against an index loaded by
//! archive-core's bulk_load example, and prints p50/p99 wall times per kind.
//!
//! cargo run --release -p dicom-scp --example find_latency -- HOST PORT QUERIES STUDIES

use dicom_core::{DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::{tags, uids};
use dicom_object::InMemDicomObject;
use dicom_scp::dimse::{command_field, encode_request, Command};
use dicom_transfer_syntax_registry::entries::EXPLICIT_VR_LITTLE_ENDIAN;
use dicom_ul::association::client::ClientAssociationOptions;
use dicom_ul::pdu::{PDataValue, PDataValueType, Pdu};
use std::time::{Duration, Instant};

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 5 {
        return Err("usage: find_latency HOST PORT QUERIES STUDIES".into());
    }
    let (host, port, queries, studies): (&str, u16, u64, u64) = (
        &args[1],
        args[2].parse()?,
        args[3].parse()?,
        args[4].parse()?,
    );
    let model = uids::STUDY_ROOT_QUERY_RETRIEVE_INFORMATION_MODEL_FIND;
    let mut association = ClientAssociationOptions::new()
        .calling_ae_title("FINDBENCH")
        .called_ae_title("STRATA")
        .with_presentation_context(model, vec![uids::EXPLICIT_VR_LITTLE_ENDIAN])
        .establish((host, port))?;
    // Like DCMTK with TCP_NODELAY=1: without it the command and the identifier, written as two
    // small segments, wait ~40 ms for a delayed ACK.
    association.inner_stream().set_nodelay(true)?;
    let pc = association
        .presentation_contexts()
        .first()
        .ok_or("no context")?
        .id;
    let mut message_id = 0u16;
    for kind in ["PatientID", "StudyDate range"] {
        let mut times = Vec::with_capacity(queries as usize);
        let mut matches = 0usize;
        for n in 0..queries {
            // A spread of keys: every query different, deterministic across runs.
            let study = (n * 7919) % studies.max(1);
            let key = if kind == "PatientID" {
                (tags::PATIENT_ID, VR::LO, format!("BULK{:06}", study / 2))
            } else {
                let from = chrono::NaiveDate::from_ymd_opt(2015, 1, 1).unwrap_or_default()
                    + chrono::Days::new(study * 3653 / 10_000);
                let to = from + chrono::Days::new(29);
                (
                    tags::STUDY_DATE,
                    VR::DA,
                    format!("{}-{}", from.format("%Y%m%d"), to.format("%Y%m%d")),
                )
            };
            message_id = message_id.wrapping_add(1);
            let started = Instant::now();
            matches += find(&mut association, pc, message_id, key)?;
            times.push(started.elapsed());
        }
        times.sort();
        let at = |q: f64| times[((times.len() as f64 * q) as usize).min(times.len() - 1)];
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        println!(
            "{kind}: {queries} queries, {:.1} matches/query, p50 {:.2} ms, p99 {:.2} ms",
            matches as f64 / queries as f64,
            ms(at(0.50)),
            ms(at(0.99))
        );
    }
    association.release()?;
    Ok(())
}

fn find(
    association: &mut dicom_ul::ClientAssociation<std::net::TcpStream>,
    pc: u8,
    message_id: u16,
    key: (dicom_core::Tag, VR, String),
) -> Result<usize> {
    let mut identifier = InMemDicomObject::new_empty();
    let mut put = |tag, vr, value: String| {
        let mut value = value;
        if value.len() % 2 == 1 {
            value.push(if vr == VR::UI { '\0' } else { ' ' });
        }
        identifier.put(DataElement::new(tag, vr, PrimitiveValue::from(value)));
    };
    put(tags::QUERY_RETRIEVE_LEVEL, VR::CS, "STUDY".into());
    put(tags::STUDY_INSTANCE_UID, VR::UI, String::new());
    put(tags::PATIENT_NAME, VR::PN, String::new());
    put(
        tags::NUMBER_OF_STUDY_RELATED_INSTANCES,
        VR::IS,
        String::new(),
    );
    put(tags::MODALITIES_IN_STUDY, VR::CS, String::new());
    put(tags::STUDY_DATE, VR::DA, String::new());
    put(key.0, key.1, key.2);
    let mut bytes = Vec::new();
    identifier.write_dataset_with_ts(&mut bytes, &EXPLICIT_VR_LITTLE_ENDIAN.erased())?;
    let model = uids::STUDY_ROOT_QUERY_RETRIEVE_INFORMATION_MODEL_FIND;
    let command = encode_request(command_field::C_FIND_RQ, message_id, model, None, true);
    for (value_type, data) in [
        (PDataValueType::Command, command),
        (PDataValueType::Data, bytes),
    ] {
        association.send(&Pdu::PData {
            data: vec![PDataValue {
                presentation_context_id: pc,
                value_type,
                is_last: true,
                data,
            }],
        })?;
    }
    let mut matches = 0;
    let mut command_bytes = Vec::new();
    loop {
        let Pdu::PData { data } = association.receive()? else {
            return Err("unexpected PDU".into());
        };
        for value in data {
            if value.value_type != PDataValueType::Command {
                continue;
            }
            command_bytes.extend_from_slice(&value.data);
            if !value.is_last {
                continue;
            }
            let response = Command::decode(&std::mem::take(&mut command_bytes))?;
            match response.status {
                Some(0xFF00) | Some(0xFF01) => matches += 1,
                Some(0x0000) => return Ok(matches),
                other => {
                    return Err(
                        format!("C-FIND failed: {other:?} {:?}", response.error_comment).into(),
                    )
                }
            }
        }
    }
}
