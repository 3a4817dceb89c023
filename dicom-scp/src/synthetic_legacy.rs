//! Synthetic archives in another archive's layout, for import tests and trials: a corpus's
//! files re-laid as a dcm4chee 2.x ONLINE file system.
//!
//! dcm4chee 2.x stores a received object under `<fs>/YYYY/M/D/H/<study>/<series>/<sop>`: the
//! date and hour it was received (no zero padding), then the Java `String.hashCode()` of each
//! UID as 8 upper-case hex digits, and no file extension.

use dicom_dictionary_std::tags;
use dicom_object::OpenFileOptions;
use std::path::{Path, PathBuf};

/// Java's `String.hashCode()` as dcm4chee 2.x names directories and files with it.
fn java_hash_hex(text: &str) -> String {
    let hash = text.encode_utf16().fold(0i32, |h, unit| {
        h.wrapping_mul(31).wrapping_add(i32::from(unit))
    });
    format!("{:08X}", hash as u32)
}

/// Copies every Part-10 file of `corpus` (a flat directory, as `generate` writes it) into
/// `out` in dcm4chee 2.x's layout, as received at `received` (`YYYY/M/D/H`; `None`: a fixed
/// day in 2012, so trees are reproducible). Returns the files written.
pub fn dcm4chee2_online_tree(
    corpus: &Path,
    out: &Path,
    received: Option<chrono::NaiveDateTime>,
) -> std::io::Result<Vec<PathBuf>> {
    use chrono::{Datelike, Timelike};
    let received = received
        .or_else(|| chrono::NaiveDate::from_ymd_opt(2012, 3, 4)?.and_hms_opt(5, 6, 7))
        .unwrap_or_default();
    let mut sources: Vec<PathBuf> = std::fs::read_dir(corpus)?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    sources.sort();
    let day = out.join(format!(
        "{}/{}/{}/{}",
        received.year(),
        received.month(),
        received.day(),
        received.hour()
    ));
    let mut written = Vec::new();
    for source in sources {
        let object = OpenFileOptions::new()
            .read_until(tags::PIXEL_DATA)
            .open_file(&source)
            .map_err(|e| std::io::Error::other(format!("{}: {e}", source.display())))?;
        let uid = |tag| {
            object
                .get(tag)
                .and_then(|e| e.to_str().ok())
                .map(|s| s.trim_end_matches(['\0', ' ']).to_string())
                .unwrap_or_default()
        };
        let path = day
            .join(java_hash_hex(&uid(tags::STUDY_INSTANCE_UID)))
            .join(java_hash_hex(&uid(tags::SERIES_INSTANCE_UID)))
            .join(java_hash_hex(&uid(tags::SOP_INSTANCE_UID)));
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::copy(&source, &path)?;
        written.push(path);
    }
    Ok(written)
}

/// One dcm4chee 2.x HSM tar to write: its path (relative to the HSM file system) and its
/// members, entry name and source file.
pub struct HsmTarPlan {
    pub rel_path: PathBuf,
    pub members: Vec<(String, PathBuf)>,
}

/// How dcm4chee 2.x's FileCopy service would have packed `files` (written by
/// [`dcm4chee2_online_tree`] under `root`): one tar per series directory, named
/// `<series directory>-<milliseconds mod 1 h>.tar`, members `<series hash>/<file pk>` with
/// the file's primary key as 8 upper-case hex digits (numbered from 1 here).
pub fn dcm4chee2_hsm_tars(root: &Path, files: &[PathBuf]) -> Vec<HsmTarPlan> {
    // What `System.currentTimeMillis() % 3600000` gave at 05:06:07, the tree's fixed time.
    const MILLIS_IN_HOUR: u32 = (6 * 60 + 7) * 1000;
    let mut plans: Vec<HsmTarPlan> = Vec::new();
    let mut sorted: Vec<&PathBuf> = files.iter().collect();
    sorted.sort();
    for (pk, file) in sorted.into_iter().enumerate() {
        let (Some(series_dir), Some(series_hash)) = (
            file.parent(),
            file.parent()
                .and_then(|d| d.file_name())
                .and_then(|n| n.to_str()),
        ) else {
            continue;
        };
        let Ok(rel_series) = series_dir.strip_prefix(root) else {
            continue;
        };
        let rel_path = PathBuf::from(format!("{}-{MILLIS_IN_HOUR}.tar", rel_series.display()));
        let entry = format!("{series_hash}/{:08X}", pk + 1);
        match plans.iter_mut().find(|p| p.rel_path == rel_path) {
            Some(plan) => plan.members.push((entry, file.clone())),
            None => plans.push(HsmTarPlan {
                rel_path,
                members: vec![(entry, file.clone())],
            }),
        }
    }
    plans
}

#[cfg(test)]
mod tests {
    #[test]
    fn hashes_like_java() {
        // "hello".hashCode() == 99162322 == 0x05E918D2; "".hashCode() == 0.
        assert_eq!(super::java_hash_hex("hello"), "05E918D2");
        assert_eq!(super::java_hash_hex(""), "00000000");
        // Negative hash codes print as their two's complement.
        assert_eq!(super::java_hash_hex("polygenelubricants"), "80000000");
    }
}
