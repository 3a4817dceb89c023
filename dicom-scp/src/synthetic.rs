//! Synthetic test data: patients / studies / series / instances of chosen sizes, written as
//! Part-10 files in Explicit VR Little Endian. Tests and benchmarks convert them to other
//! transfer syntaxes with DCMTK (`dcmconv`, `dcmcrle`, `dcmcjpeg`, `dcmcjpls`).
//!
//! Nothing is downloaded: every byte is made here. Names are obviously fake.

use crate::dimse::text_element;
use dicom_core::{DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::{tags, uids};
use dicom_object::meta::FileMetaTableBuilder;
use dicom_object::InMemDicomObject;
use std::path::{Path, PathBuf};

/// The kinds of object the generator makes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// CT Image Storage, one 16-bit frame.
    Ct,
    /// MR Image Storage, one 16-bit frame.
    Mr,
    /// Secondary Capture, one 8-bit frame (JPEG baseline can compress it).
    SecondaryCapture,
    /// Multi-frame Grayscale Word Secondary Capture, several 16-bit frames.
    MultiFrame,
    /// Basic Text SR: no pixel data at all.
    TextSr,
}

impl Kind {
    pub fn parse(text: &str) -> Option<Kind> {
        match text.to_ascii_lowercase().as_str() {
            "ct" => Some(Kind::Ct),
            "mr" => Some(Kind::Mr),
            "sc" => Some(Kind::SecondaryCapture),
            "mf" | "multiframe" => Some(Kind::MultiFrame),
            "sr" => Some(Kind::TextSr),
            _ => None,
        }
    }

    fn sop_class(self) -> &'static str {
        match self {
            Kind::Ct => uids::CT_IMAGE_STORAGE,
            Kind::Mr => uids::MR_IMAGE_STORAGE,
            Kind::SecondaryCapture => uids::SECONDARY_CAPTURE_IMAGE_STORAGE,
            Kind::MultiFrame => uids::MULTI_FRAME_GRAYSCALE_WORD_SECONDARY_CAPTURE_IMAGE_STORAGE,
            Kind::TextSr => uids::BASIC_TEXT_SR_STORAGE,
        }
    }

    fn modality(self) -> &'static str {
        match self {
            Kind::Ct => "CT",
            Kind::Mr => "MR",
            Kind::SecondaryCapture | Kind::MultiFrame => "OT",
            Kind::TextSr => "SR",
        }
    }
}

#[derive(Clone, Debug)]
pub struct CorpusSpec {
    pub out_dir: PathBuf,
    pub patients: u32,
    pub studies_per_patient: u32,
    pub series_per_study: u32,
    pub instances_per_series: u32,
    /// Image width and height in pixels.
    pub matrix: u16,
    pub frames: u16,
    pub kind: Kind,
    /// Makes UIDs and names reproducible.
    pub seed: u64,
    /// Prefix of patient IDs, so corpora made for different purposes don't collide.
    pub patient_prefix: String,
}

impl Default for CorpusSpec {
    fn default() -> Self {
        CorpusSpec {
            out_dir: PathBuf::from("corpus"),
            patients: 1,
            studies_per_patient: 1,
            series_per_study: 1,
            instances_per_series: 10,
            matrix: 64,
            frames: 1,
            kind: Kind::Ct,
            seed: 1,
            patient_prefix: "SYN".into(),
        }
    }
}

/// Writes the corpus and returns the files written.
pub fn generate(spec: &CorpusSpec) -> std::io::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(&spec.out_dir)?;
    let root = format!("2.25.{}", spec.seed % 10_000_000_000_000_000_000);
    let mut written = Vec::new();
    for p in 0..spec.patients {
        let patient_id = format!("{}{:05}", spec.patient_prefix, p);
        for s in 0..spec.studies_per_patient {
            let study_uid = format!("{root}.{p}.{s}");
            for se in 0..spec.series_per_study {
                let series_uid = format!("{study_uid}.{se}");
                for i in 0..spec.instances_per_series {
                    let sop_uid = format!("{series_uid}.{i}");
                    let ids = Ids {
                        patient_id: &patient_id,
                        p,
                        s,
                        se,
                        i,
                        study_uid: &study_uid,
                        series_uid: &series_uid,
                        sop_uid: &sop_uid,
                    };
                    let object = build_object(spec, &ids);
                    let path = spec.out_dir.join(format!("{patient_id}_{s}_{se}_{i}.dcm"));
                    write_file(object, spec.kind, &sop_uid, &path)?;
                    written.push(path);
                }
            }
        }
    }
    Ok(written)
}

struct Ids<'a> {
    patient_id: &'a str,
    p: u32,
    s: u32,
    se: u32,
    i: u32,
    study_uid: &'a str,
    series_uid: &'a str,
    sop_uid: &'a str,
}

fn build_object(spec: &CorpusSpec, ids: &Ids<'_>) -> InMemDicomObject {
    let kind = spec.kind;
    let day = 1 + (ids.s % 28);
    let month = 1 + (ids.p % 12);
    let mut object = InMemDicomObject::from_element_iter([
        text_element(tags::SPECIFIC_CHARACTER_SET, VR::CS, "ISO_IR 100"),
        text_element(tags::SOP_CLASS_UID, VR::UI, kind.sop_class()),
        text_element(tags::SOP_INSTANCE_UID, VR::UI, ids.sop_uid),
        text_element(tags::STUDY_DATE, VR::DA, format!("2024{month:02}{day:02}")),
        text_element(
            tags::STUDY_TIME,
            VR::TM,
            format!("{:02}{:02}00", 8 + ids.s % 10, ids.se % 60),
        ),
        text_element(
            tags::ACCESSION_NUMBER,
            VR::SH,
            format!("A{}{:03}", ids.p, ids.s),
        ),
        text_element(tags::MODALITY, VR::CS, kind.modality()),
        text_element(tags::REFERRING_PHYSICIAN_NAME, VR::PN, "Referrer^Test"),
        text_element(
            tags::STUDY_DESCRIPTION,
            VR::LO,
            format!("Synthetic study {}", ids.s),
        ),
        text_element(
            tags::SERIES_DESCRIPTION,
            VR::LO,
            format!("Synthetic series {}", ids.se),
        ),
        text_element(
            tags::PATIENT_NAME,
            VR::PN,
            format!("Synthetic^Patient{}", ids.p),
        ),
        text_element(tags::PATIENT_ID, VR::LO, ids.patient_id),
        text_element(
            tags::PATIENT_BIRTH_DATE,
            VR::DA,
            format!("19{:02}0101", 40 + ids.p % 60),
        ),
        text_element(
            tags::PATIENT_SEX,
            VR::CS,
            if ids.p.is_multiple_of(2) { "F" } else { "M" },
        ),
        text_element(tags::BODY_PART_EXAMINED, VR::CS, "CHEST"),
        text_element(tags::STUDY_INSTANCE_UID, VR::UI, ids.study_uid),
        text_element(tags::SERIES_INSTANCE_UID, VR::UI, ids.series_uid),
        text_element(tags::STUDY_ID, VR::SH, format!("{}", ids.s + 1)),
        text_element(tags::SERIES_NUMBER, VR::IS, format!("{}", ids.se + 1)),
        text_element(tags::INSTANCE_NUMBER, VR::IS, format!("{}", ids.i + 1)),
    ]);
    if kind == Kind::TextSr {
        object.put(text_element(tags::VALUE_TYPE, VR::CS, "CONTAINER"));
        object.put(text_element(tags::COMPLETION_FLAG, VR::CS, "COMPLETE"));
        object.put(text_element(tags::VERIFICATION_FLAG, VR::CS, "UNVERIFIED"));
        return object;
    }
    add_pixels(&mut object, spec, ids);
    object
}

fn add_pixels(object: &mut InMemDicomObject, spec: &CorpusSpec, ids: &Ids<'_>) {
    let kind = spec.kind;
    let size = spec.matrix;
    let frames = if kind == Kind::MultiFrame {
        spec.frames.max(2)
    } else {
        1
    };
    let bits: u16 = if kind == Kind::SecondaryCapture {
        8
    } else {
        16
    };
    let us = |tag, value: u16| DataElement::new(tag, VR::US, PrimitiveValue::from(value));
    object.put(us(tags::SAMPLES_PER_PIXEL, 1));
    object.put(text_element(
        tags::PHOTOMETRIC_INTERPRETATION,
        VR::CS,
        "MONOCHROME2",
    ));
    object.put(us(tags::ROWS, size));
    object.put(us(tags::COLUMNS, size));
    object.put(us(tags::BITS_ALLOCATED, bits));
    object.put(us(tags::BITS_STORED, if bits == 8 { 8 } else { 12 }));
    object.put(us(tags::HIGH_BIT, if bits == 8 { 7 } else { 11 }));
    object.put(us(tags::PIXEL_REPRESENTATION, 0));
    if kind == Kind::MultiFrame {
        object.put(text_element(
            tags::NUMBER_OF_FRAMES,
            VR::IS,
            frames.to_string(),
        ));
        object.put(DataElement::new(
            tags::FRAME_INCREMENT_POINTER,
            VR::AT,
            PrimitiveValue::from(tags::FRAME_TIME),
        ));
        object.put(text_element(tags::FRAME_TIME, VR::DS, "33.3"));
    }
    if kind == Kind::SecondaryCapture {
        object.put(text_element(tags::CONVERSION_TYPE, VR::CS, "WSD"));
    }
    // A smooth pattern that varies per instance: compressible, but not trivially constant.
    let seed = (ids.i as usize * 7 + ids.se as usize * 13) % 256;
    let pixels = size as usize * size as usize * frames as usize;
    let pixel_element = if bits == 8 {
        let data: Vec<u8> = (0..pixels)
            .map(|n| ((n % size as usize + n / size as usize + seed) % 256) as u8)
            .collect();
        DataElement::new(tags::PIXEL_DATA, VR::OB, PrimitiveValue::from(data))
    } else {
        let data: Vec<u16> = (0..pixels)
            .map(|n| {
                (((n % size as usize) * 3 + (n / size as usize) * 5 + seed * 11) % 4096) as u16
            })
            .collect();
        DataElement::new(tags::PIXEL_DATA, VR::OW, PrimitiveValue::U16(data.into()))
    };
    object.put(pixel_element);
}

fn write_file(
    object: InMemDicomObject,
    kind: Kind,
    sop_uid: &str,
    path: &Path,
) -> std::io::Result<()> {
    let meta = FileMetaTableBuilder::new()
        .media_storage_sop_class_uid(kind.sop_class())
        .media_storage_sop_instance_uid(sop_uid)
        .transfer_syntax(uids::EXPLICIT_VR_LITTLE_ENDIAN)
        .implementation_class_uid(crate::store::IMPLEMENTATION_CLASS_UID)
        .implementation_version_name(crate::store::IMPLEMENTATION_VERSION_NAME);
    let file = object.with_meta(meta).map_err(std::io::Error::other)?;
    file.write_to_file(path).map_err(std::io::Error::other)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generates_the_requested_hierarchy() {
        let dir = tempfile::tempdir().expect("tempdir");
        let spec = CorpusSpec {
            out_dir: dir.path().to_path_buf(),
            patients: 2,
            studies_per_patient: 2,
            series_per_study: 1,
            instances_per_series: 3,
            kind: Kind::MultiFrame,
            frames: 3,
            matrix: 16,
            ..CorpusSpec::default()
        };
        let files = generate(&spec).expect("generate");
        assert_eq!(files.len(), 12);
        let object = dicom_object::open_file(&files[0]).expect("readable");
        assert_eq!(
            object
                .element(tags::NUMBER_OF_FRAMES)
                .expect("frames")
                .to_int::<u32>()
                .expect("int"),
            3
        );
        let pixels = object
            .element(tags::PIXEL_DATA)
            .expect("pixels")
            .to_bytes()
            .expect("bytes");
        assert_eq!(pixels.len(), 16 * 16 * 3 * 2);
        let study_uids: std::collections::HashSet<String> = files
            .iter()
            .map(|f| {
                dicom_object::open_file(f)
                    .expect("open")
                    .element(tags::STUDY_INSTANCE_UID)
                    .expect("uid")
                    .to_str()
                    .expect("str")
                    .to_string()
            })
            .collect();
        assert_eq!(study_uids.len(), 4);
    }
}
