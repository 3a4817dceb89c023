//! Where a file goes inside a filesystem: `YYYY/MM/DD/<study>/<series>/<instance>.dcm`, by
//! received date and hashed UIDs. No patient data in paths: directory listings and backup
//! logs end up in places patient data must not.

use sha2::{Digest, Sha256};

fn short_hash(uid: &str, hex_chars: usize) -> String {
    let digest = Sha256::digest(uid.as_bytes());
    let mut text = hex::encode(digest);
    text.truncate(hex_chars);
    text
}

/// `received` is the date the object arrived (UTC).
pub fn relative_path_for(
    received: chrono::NaiveDate,
    study_uid: &str,
    series_uid: &str,
    sop_uid: &str,
) -> String {
    format!(
        "{}/{}/{}/{}.dcm",
        received.format("%Y/%m/%d"),
        short_hash(study_uid, 12),
        short_hash(series_uid, 12),
        short_hash(sop_uid, 20),
    )
}

/// Whether a relative path has the shape [`relative_path_for`] gives (a collision variant
/// `<instance>-<n>.dcm` included). Anything else below a filesystem root is not a stored
/// object: a scavenge never treats it as one.
pub fn is_object_path(rel_path: &str) -> bool {
    let parts: Vec<&str> = rel_path.split('/').collect();
    let digits = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_digit());
    let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
    match parts.as_slice() {
        [year, month, day, study, series, file] => {
            let stem = file.strip_suffix(".dcm").unwrap_or("");
            let base = stem.split('-').next().unwrap_or("");
            digits(year, 4)
                && digits(month, 2)
                && digits(day, 2)
                && hex(study, 12)
                && hex(series, 12)
                && hex(base, 20)
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_paths_are_recognised_and_nothing_else() {
        let date = chrono::NaiveDate::from_ymd_opt(2026, 3, 7).expect("valid date");
        let path = relative_path_for(date, "1.2.3", "1.2.3.4", "1.2.3.4.5");
        assert!(is_object_path(&path));
        assert!(is_object_path(&path.replace(".dcm", "-2.dcm")));
        for other in [
            "index.db",
            "nearline/1.2/3-1.tar",
            "disk2/2026/03/07/a/b/c.dcm",
            "admin-token",
        ] {
            assert!(!is_object_path(other), "{other}");
        }
    }

    #[test]
    fn paths_are_dated_hashed_and_stable() {
        let date = chrono::NaiveDate::from_ymd_opt(2026, 3, 7).expect("valid date");
        let a = relative_path_for(date, "1.2.3", "1.2.3.4", "1.2.3.4.5");
        assert!(a.starts_with("2026/03/07/"), "{a}");
        assert!(a.ends_with(".dcm"));
        assert!(!a.contains("1.2.3"), "UIDs must be hashed: {a}");
        assert_eq!(a, relative_path_for(date, "1.2.3", "1.2.3.4", "1.2.3.4.5"));
        assert_ne!(a, relative_path_for(date, "1.2.3", "1.2.3.4", "1.2.3.4.6"));
    }
}
