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

#[cfg(test)]
mod tests {
    use super::*;

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
