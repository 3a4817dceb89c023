//! What WADO-RS `/metadata` answers, made once at ingest from the header the accept path has
//! already parsed (nothing up to Pixel Data is read twice) and kept in the index: a study's
//! metadata is then one query, whatever tier its files are on, and never touches a NEARLINE
//! target or an ONLINE file.
//!
//! Stored form: the instance's DICOM JSON (PS3.18 F.2) without bulk data, deflated. Bulk data
//! (binary values over [`BULK_THRESHOLD`], and Pixel Data) is replaced by a `BulkDataURI` that
//! starts with [`BULK_PLACEHOLDER`]; the web layer puts the instance's own URL there when it
//! answers, so stored metadata does not depend on the host name it is served under.

use dicom_core::header::{HasLength, Header};
use dicom_core::{Tag, VR};
use dicom_dictionary_std::tags;
use dicom_object::DefaultDicomObject;
use flate2::read::DeflateDecoder;
use flate2::write::DeflateEncoder;
use flate2::Compression;
use serde_json::Value;
use std::io::{Read, Write};

/// Binary values longer than this are bulk data: sent by reference, not inline.
pub const BULK_THRESHOLD: u32 = 1024;
/// Stands for the instance's URL (`…/studies/S/series/E/instances/I`) inside stored metadata.
pub const BULK_PLACEHOLDER: &str = "@instance@";

/// The deflated DICOM JSON of `object`'s data set (up to Pixel Data) with bulk data by
/// reference. `transfer_syntax` decides Pixel Data's VR (OB when encapsulated).
///
/// Written element by element into one buffer, then deflated: nothing of the object is
/// cloned and no JSON tree of the whole data set is built (this runs for every stored instance).
pub fn encode(object: &DefaultDicomObject, transfer_syntax: &str) -> Result<Vec<u8>, String> {
    // JSON into one buffer, deflated in one call at the end: the deflater's cost is per
    // write, and an element-sized write each was slower than the rest of the encoding.
    let mut out: Vec<u8> = Vec::with_capacity(4096);
    let io = |e: std::io::Error| e.to_string();
    out.write_all(b"{").map_err(io)?;
    let mut first = true;
    for element in object.iter() {
        let header = element.header();
        let binary = matches!(
            header.vr(),
            VR::OB | VR::OW | VR::OD | VR::OF | VR::OL | VR::OV | VR::UN
        );
        if !first {
            out.write_all(b",").map_err(io)?;
        }
        first = false;
        if binary && header.length().get().is_none_or(|len| len > BULK_THRESHOLD) {
            write_bulk(&mut out, header.tag(), header.vr()).map_err(io)?;
            continue;
        }
        let tag = header.tag();
        write!(out, "\"{:04X}{:04X}\":", tag.group(), tag.element()).map_err(io)?;
        if matches!(header.vr(), VR::IS | VR::DS | VR::SQ) {
            // Rare enough to afford a small tree: numbers need fixing, items may nest them.
            let mut value = serde_json::to_value(dicom_json::DicomJson::from(element))
                .map_err(|e| e.to_string())?;
            fix_numbers(&mut value);
            serde_json::to_writer(&mut out, &value).map_err(|e| e.to_string())?;
        } else {
            serde_json::to_writer(&mut out, &dicom_json::DicomJson::from(element))
                .map_err(|e| e.to_string())?;
        }
    }
    // The header was read up to Pixel Data, so its presence is inferred from the image
    // attributes that must accompany it.
    if object.get(tags::ROWS).is_some() && object.get(tags::COLUMNS).is_some() {
        let bits = object
            .get(tags::BITS_ALLOCATED)
            .and_then(|e| e.to_int::<u16>().ok())
            .unwrap_or(8);
        let native = matches!(
            transfer_syntax,
            "1.2.840.10008.1.2"
                | "1.2.840.10008.1.2.1"
                | "1.2.840.10008.1.2.2"
                | "1.2.840.10008.1.2.1.99"
        );
        let vr = if native && bits > 8 { VR::OW } else { VR::OB };
        if !first {
            out.write_all(b",").map_err(io)?;
        }
        write_bulk(&mut out, tags::PIXEL_DATA, vr).map_err(io)?;
    }
    out.write_all(b"}").map_err(io)?;
    let mut deflater = DeflateEncoder::new(Vec::with_capacity(out.len() / 3), Compression::fast());
    deflater.write_all(&out).map_err(io)?;
    deflater.finish().map_err(io)
}

fn write_bulk(out: &mut impl Write, tag: Tag, vr: VR) -> std::io::Result<()> {
    let key = format!("{:04X}{:04X}", tag.group(), tag.element());
    write!(
        out,
        "\"{key}\":{{\"vr\":\"{vr}\",\"BulkDataURI\":\"{BULK_PLACEHOLDER}/bulkdata/{key}\"}}"
    )
}

/// PS3.18 F.2.3: one attribute's IS and DS values as JSON numbers (dicom-json keeps the
/// text it read), in nested items too. Values that are not numbers stay strings rather than
/// being lost.
fn fix_numbers(attribute: &mut Value) {
    let Some(object) = attribute.as_object_mut() else {
        return;
    };
    let vr = object
        .get("vr")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let Some(Value::Array(values)) = object.get_mut("Value") else {
        return;
    };
    for value in values.iter_mut() {
        match (vr.as_str(), &mut *value) {
            ("IS", Value::String(text)) => {
                if let Ok(number) = text.trim().parse::<i64>() {
                    *value = Value::from(number);
                }
            }
            ("DS", Value::String(text)) => {
                if let Some(number) = text
                    .trim()
                    .parse::<f64>()
                    .ok()
                    .and_then(serde_json::Number::from_f64)
                {
                    *value = Value::Number(number);
                }
            }
            ("SQ", Value::Object(item)) => item.values_mut().for_each(fix_numbers),
            _ => {}
        }
    }
}

/// The stored JSON text, with bulk data URIs under `instance_url`.
pub fn decode(stored: &[u8], instance_url: &str) -> std::io::Result<String> {
    let mut text = String::with_capacity(stored.len() * 4);
    DeflateDecoder::new(stored).read_to_string(&mut text)?;
    Ok(text.replace(BULK_PLACEHOLDER, instance_url))
}

#[cfg(test)]
mod tests {
    use super::*;
    use dicom_core::{DataElement, PrimitiveValue};
    use dicom_object::meta::FileMetaTableBuilder;
    use dicom_object::InMemDicomObject;

    #[test]
    fn bulk_data_goes_by_reference_and_the_rest_inline() {
        let mut data = InMemDicomObject::new_empty();
        data.put(DataElement::new(
            tags::PATIENT_NAME,
            VR::PN,
            PrimitiveValue::from("DOE^JANE"),
        ));
        data.put(DataElement::new(
            tags::ROWS,
            VR::US,
            PrimitiveValue::from(64u16),
        ));
        data.put(DataElement::new(
            tags::COLUMNS,
            VR::US,
            PrimitiveValue::from(64u16),
        ));
        data.put(DataElement::new(
            tags::BITS_ALLOCATED,
            VR::US,
            PrimitiveValue::from(16u16),
        ));
        data.put(DataElement::new(
            tags::ICC_PROFILE,
            VR::OB,
            PrimitiveValue::from(vec![7u8; 4000]),
        ));
        let meta = FileMetaTableBuilder::new()
            .media_storage_sop_class_uid("1.2.840.10008.5.1.4.1.1.2")
            .media_storage_sop_instance_uid("1.2.3")
            .transfer_syntax("1.2.840.10008.1.2.1")
            .build()
            .expect("meta");
        let object = data.with_exact_meta(meta);
        let stored = encode(&object, "1.2.840.10008.1.2.1").expect("encode");
        let text =
            decode(&stored, "http://h/dicom-web/studies/1/series/2/instances/3").expect("decode");
        let json: Value = serde_json::from_str(&text).expect("json");
        assert_eq!(json["00100010"]["Value"][0]["Alphabetic"], "DOE^JANE");
        assert_eq!(
            json["00282000"]["BulkDataURI"],
            "http://h/dicom-web/studies/1/series/2/instances/3/bulkdata/00282000"
        );
        assert_eq!(json["7FE00010"]["vr"], "OW");
        assert!(json["00282000"].get("InlineBinary").is_none());
    }
}
