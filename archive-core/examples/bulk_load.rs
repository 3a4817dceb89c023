//! Bulk loader for the query benchmark (bench/query.sh): puts STUDIES studies of
//! INSTANCES_PER_STUDY instances (4 series each, 2 studies per patient, study dates spread over
//! ten years) into an index through the same `store_batch` path C-STORE uses. No files are
//! written: the rows point at a placeholder filesystem.
//!
//! cargo run --release -p archive-core --example bulk_load -- DATABASE_URL STUDIES INSTANCES_PER_STUDY [BATCH]
//!
//! BATCH (default 1000) is how many instances go into one `store_batch` call. With the small
//! batches that live ingest makes (1-4 instances, one per association waiting for its
//! answer) it measures the index write path alone: the CPU, thread switches and bytes written
//! per instance that this process (and sqlx's SQLite worker thread in it) spends; see the
//! README's Ingest section.

use archive_core::config::{ByteSize, DuplicatePolicy, FilesystemConfig, FilesystemMode};
use archive_core::index::{Held, Index, NewInstance};
use archive_core::model::*;

const DEFAULT_BATCH: usize = 1000;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if !(4..=5).contains(&args.len()) {
        return Err("usage: bulk_load DATABASE_URL STUDIES INSTANCES_PER_STUDY [BATCH]".into());
    }
    let studies: u64 = args[2].parse()?;
    let per_study: u64 = args[3].parse()?;
    let batch_size: usize = match args.get(4) {
        Some(batch) => batch.parse()?,
        None => DEFAULT_BATCH,
    };
    if batch_size == 0 {
        return Err("BATCH must be at least 1".into());
    }
    let index = Index::open(&args[1]).await?;
    index.migrate().await?;
    let fs = index
        .sync_filesystems(&[FilesystemConfig {
            group: "BULK".into(),
            path: "/nonexistent/bulk".into(),
            mode: FilesystemMode::Ro,
            min_free: ByteSize(0),
        }])
        .await?;
    let fs_id = fs
        .iter()
        .find(|f| f.path == "/nonexistent/bulk")
        .map(|f| f.id)
        .ok_or("filesystem row missing")?;
    let before = ProcessCosts::now();
    let started = std::time::Instant::now();
    let mut batch = Vec::with_capacity(batch_size);
    let mut stored = 0u64;
    for study in 0..studies {
        for instance in 0..per_study {
            batch.push(new_instance(study, instance, per_study, fs_id));
            if batch.len() == batch_size {
                stored += flush(&index, &mut batch).await?;
            }
        }
        if study % 1000 == 999 {
            eprintln!(
                "{} studies, {stored} instances, {:.0} s",
                study + 1,
                started.elapsed().as_secs_f64()
            );
        }
    }
    stored += flush(&index, &mut batch).await?;
    let elapsed = started.elapsed().as_secs_f64();
    let costs = ProcessCosts::now().minus(&before);
    println!("loaded {studies} studies / {stored} instances in {elapsed:.1} s");
    let per = stored.max(1) as f64;
    println!(
        "per instance (batches of {batch_size}): {:.3} ms CPU, {:.1} thread switches, {:.0} bytes written",
        costs.cpu_seconds * 1000.0 / per,
        costs.switches as f64 / per,
        costs.write_bytes as f64 / per
    );
    Ok(())
}

/// What this process has spent so far, from /proc (Linux): CPU of all its threads, context
/// switches of its live threads (voluntary and not), bytes it caused to be written to disk.
struct ProcessCosts {
    cpu_seconds: f64,
    switches: u64,
    write_bytes: u64,
}

impl ProcessCosts {
    fn now() -> ProcessCosts {
        let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
        // Fields after the command name (which may hold spaces) closed by ')': utime and
        // stime are the 12th and 13th, in clock ticks (100 per second on Linux).
        let after_name = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or("");
        let fields: Vec<&str> = after_name.split_whitespace().collect();
        let ticks: u64 = [11, 12]
            .iter()
            .filter_map(|&i| fields.get(i).and_then(|f| f.parse::<u64>().ok()))
            .sum();
        let mut switches = 0;
        if let Ok(tasks) = std::fs::read_dir("/proc/self/task") {
            for task in tasks.flatten() {
                let status =
                    std::fs::read_to_string(task.path().join("status")).unwrap_or_default();
                switches += status
                    .lines()
                    .filter(|l| l.contains("ctxt_switches"))
                    .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
                    .sum::<u64>();
            }
        }
        let write_bytes = std::fs::read_to_string("/proc/self/io")
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("write_bytes:")?.trim().parse().ok())
            .unwrap_or(0);
        ProcessCosts {
            cpu_seconds: ticks as f64 / 100.0,
            switches,
            write_bytes,
        }
    }

    fn minus(&self, before: &ProcessCosts) -> ProcessCosts {
        ProcessCosts {
            cpu_seconds: self.cpu_seconds - before.cpu_seconds,
            switches: self.switches.saturating_sub(before.switches),
            write_bytes: self.write_bytes.saturating_sub(before.write_bytes),
        }
    }
}

async fn flush(
    index: &Index,
    batch: &mut Vec<NewInstance>,
) -> Result<u64, Box<dyn std::error::Error>> {
    let results = index.store_batch(batch).await;
    index.fold_counts_if_due().await;
    let mut stored = 0;
    for result in results {
        match result? {
            StoreOutcome::Stored => stored += 1,
            StoreOutcome::DuplicateKept => {}
            other => return Err(format!("unexpected outcome {other:?}").into()),
        }
    }
    batch.clear();
    Ok(stored)
}

/// Study `s`: patient BULK{s/2}, date 2015-01-01 + (s * 3653 / 10000) days (ten years).
pub fn study_date(study: u64) -> String {
    let day = chrono::NaiveDate::from_ymd_opt(2015, 1, 1).unwrap_or_default()
        + chrono::Days::new(study * 3653 / 10_000);
    day.format("%Y%m%d").to_string()
}

fn new_instance(study: u64, instance: u64, per_study: u64, fs_id: i64) -> NewInstance {
    let series = instance * 4 / per_study.max(1);
    let modality = ["CT", "MR", "CR", "US", "MG"][(study % 5) as usize];
    NewInstance {
        record: InstanceRecord {
            patient: PatientAttrs {
                patient_id: format!("BULK{:06}", study / 2),
                issuer_of_patient_id: String::new(),
                patient_name: format!("Bulk^Patient{:06}", study / 2),
                birth_date: "19600101".into(),
                sex: if study % 4 < 2 {
                    "F".into()
                } else {
                    "M".into()
                },
            },
            study: StudyAttrs {
                study_uid: format!("2.25.77.{study}"),
                study_date: study_date(study),
                study_time: "120000".into(),
                accession_number: format!("ACC{study:08}"),
                study_id: "1".into(),
                description: "Bulk study".into(),
                referring_physician: "Referrer^Bulk".into(),
            },
            series: SeriesAttrs {
                series_uid: format!("2.25.77.{study}.{series}"),
                modality: modality.into(),
                series_number: Some(series as i64 + 1),
                description: String::new(),
                body_part: "CHEST".into(),
            },
            instance: InstanceAttrs {
                sop_instance_uid: format!("2.25.77.{study}.{series}.{instance}"),
                sop_class_uid: "1.2.840.10008.5.1.4.1.1.2".into(),
                instance_number: Some(instance as i64 + 1),
                transfer_syntax: "1.2.840.10008.1.2.1".into(),
                number_of_frames: None,
            },
            source_ae: "BULK".into(),
        },
        held: Held::Online(StoredFile {
            filesystem_id: fs_id,
            rel_path: format!("bulk/{study}/{instance}.dcm"),
            size: 16384,
            sha256: String::new(),
        }),
        policy: DuplicatePolicy::KeepFirst,
        received_at: 1_700_000_000_000,
        metadata: None,
    }
}
