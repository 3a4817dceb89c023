//! Small pieces every page uses: sizes, times, badges, bars.

use archive_core::jobs::{Job, JobState};
use maud::{html, Markup};

/// `1.5 GiB`: binary units, one decimal.
pub fn bytes(count: i64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = count.max(0) as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{count} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// Unix milliseconds as `2026-11-22 14:05:09 UTC`.
pub fn time(millis: i64) -> String {
    if millis <= 0 {
        return "—".into();
    }
    chrono::DateTime::from_timestamp_millis(millis)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_else(|| "—".into())
}

/// DICOM DA `20240315` as `2024-03-15`.
pub fn dicom_date(date: &str) -> String {
    if date.len() == 8 && date.bytes().all(|b| b.is_ascii_digit()) {
        format!("{}-{}-{}", &date[..4], &date[4..6], &date[6..])
    } else {
        date.to_string()
    }
}

/// DICOM TM `080000.123` as `08:00:00`.
pub fn dicom_time(time: &str) -> String {
    let digits: String = time.chars().take_while(|c| c.is_ascii_digit()).collect();
    match digits.len() {
        6 => format!("{}:{}:{}", &digits[..2], &digits[2..4], &digits[4..6]),
        4 => format!("{}:{}", &digits[..2], &digits[2..4]),
        _ => time.to_string(),
    }
}

/// DICOM PN `DOE^JOHN` as `DOE, JOHN`.
pub fn person_name(name: &str) -> String {
    let parts: Vec<&str> = name.split('^').filter(|p| !p.is_empty()).collect();
    parts.join(", ")
}

/// A coloured label for availability, pack status or job state.
pub fn badge(text: &str) -> Markup {
    let class = match text {
        "ONLINE" | "ARCHIVED" | "DONE" | "SUCCESS" | "rw" => "good",
        "NEARLINE" | "TO_ARCHIVE" | "QUEUED" | "UPLOADING" | "RUNNING" | "ro" => "info",
        "OFFLINE" | "FAILED" | "VERIFY_FAILED" | "ABANDONED" | "FAILURE" => "bad",
        _ => "neutral",
    };
    html! { span class={ "badge " (class) } { (text) } }
}

/// A bar `done` of `total`, with the text beside it.
pub fn bar(done: i64, total: i64, label: &str) -> Markup {
    let percent = if total > 0 {
        (done.max(0) as f64 * 100.0 / total as f64).clamp(0.0, 100.0)
    } else {
        0.0
    };
    html! {
        div.bar title=(label) {
            div.fill style=(format!("width: {percent:.1}%")) {}
        }
        span.bar-label { (label) }
    }
}

/// A job's progress: items and bytes.
pub fn job_progress(job: &Job) -> Markup {
    let label = if job.total_items > 0 && job.total_bytes == 0 {
        format!("{} / {} instances", job.done_items, job.total_items)
    } else if job.total_items > 0 {
        format!(
            "{} / {} instances · {} / {}",
            job.done_items,
            job.total_items,
            bytes(job.done_bytes),
            bytes(job.total_bytes)
        )
    } else if job.state == JobState::Done {
        "done".into()
    } else {
        "waiting".into()
    };
    let (done, total) = if job.total_bytes > 0 {
        (job.done_bytes, job.total_bytes)
    } else if job.state == JobState::Done {
        (1, 1)
    } else {
        (job.done_items, job.total_items)
    };
    bar(done, total, &label)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_sizes_times_and_names() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(3 << 30), "3.0 GiB");
        assert_eq!(time(0), "—");
        assert_eq!(time(1_700_000_000_000), "2023-11-14 22:13:20 UTC");
        assert_eq!(dicom_date("20240315"), "2024-03-15");
        assert_eq!(dicom_time("080000.5"), "08:00:00");
        assert_eq!(person_name("DOE^JOHN^^"), "DOE, JOHN");
    }
}
