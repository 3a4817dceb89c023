//! `strata copy | verify | jobs | nearline`: the lifecycle from the command line. Commands
//! queue jobs in the shared table; whichever node runs `strata serve` does the work.

use crate::cli::{
    JobsCommand, NearlineAddArgs, NearlineCommand, RetentionCommand, StudyJobArgs, WaitArgs,
};
use crate::serve::{open_index, prepare_nearline, runtime};
use anyhow::{bail, Context};
use archive_core::actions::{self, ActionError, StudyAction};
use archive_core::config::{ByteSize, Config, TargetKind, TargetSpec};
use archive_core::index::{now_millis, Index};
use archive_core::jobs::{Enqueued, Job, JobFilter, JobState, JobType};
use std::time::{Duration, Instant};

pub fn request(config: Config, action: StudyAction, args: StudyJobArgs) -> anyhow::Result<()> {
    runtime()?.block_on(async {
        let index = open_index(&config).await?;
        prepare_nearline(&index, &config).await?;
        let requested = actions::request(
            &index,
            action,
            &args.study_uid,
            args.target.as_deref(),
            "cli",
            config.lifecycle.max_attempts,
        )
        .await
        .map_err(|error| match error {
            ActionError::SeveralTargets => anyhow::anyhow!("{error} with --target"),
            other => other.into(),
        })?;
        let (enqueued, kind) = (requested.enqueued, action.job_type());
        let on = if requested.target.is_empty() {
            String::new()
        } else {
            format!(", target {}", requested.target)
        };
        let what = format!("{kind} job for study {}{on}", args.study_uid);
        report_and_wait(&index, enqueued, &what, args.wait, args.timeout_secs).await?;
        Ok(())
    })
}

/// `strata scavenge`: queued for this node (the node id of this configuration), which runs
/// it when `strata serve` with the same configuration is running.
pub fn scavenge(config: Config, args: WaitArgs) -> anyhow::Result<()> {
    runtime()?.block_on(async {
        let index = open_index(&config).await?;
        let node = config.node_id();
        let attempts = config.lifecycle.max_attempts;
        let enqueued =
            lifecycle::queue_job(&index, JobType::Scavenge, "", &node, "cli", attempts).await?;
        let what = format!("SCAVENGE job for node {node}");
        report_and_wait(&index, enqueued, &what, args.wait, args.timeout_secs).await?;
        Ok(())
    })
}

/// `strata fixity`: one run of the fixity service, by whichever node takes it.
pub fn fixity(config: Config, args: WaitArgs) -> anyhow::Result<()> {
    runtime()?.block_on(async {
        let index = open_index(&config).await?;
        let attempts = config.lifecycle.max_attempts;
        let enqueued =
            lifecycle::queue_job(&index, JobType::Fixity, "", "", "cli", attempts).await?;
        report_and_wait(&index, enqueued, "FIXITY job", args.wait, args.timeout_secs).await?;
        Ok(())
    })
}

/// Says what was queued (or that the same work already is), and waits for it if asked.
async fn report_and_wait(
    index: &Index,
    enqueued: Enqueued,
    what: &str,
    wait: bool,
    timeout_secs: u64,
) -> anyhow::Result<()> {
    if enqueued.created {
        println!("queued {what}: job {}", enqueued.job_id);
    } else {
        println!(
            "{what}: job {} is already queued or running",
            enqueued.job_id
        );
    }
    if wait {
        wait_for(index, enqueued.job_id, Duration::from_secs(timeout_secs)).await?;
    }
    Ok(())
}

async fn wait_for(index: &Index, job_id: i64, timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    let mut last_line = String::new();
    loop {
        let job = index
            .job(job_id)
            .await?
            .with_context(|| format!("job {job_id} disappeared"))?;
        let line = format!(
            "job {}: {} ({} of {} items, {} of {} bytes){}",
            job.id,
            job.state,
            job.done_items,
            job.total_items,
            job.done_bytes,
            job.total_bytes,
            if job.last_error.is_empty() {
                String::new()
            } else {
                format!(": {}", job.last_error)
            }
        );
        if line != last_line {
            println!("{line}");
            last_line = line;
        }
        if job.state.is_final() {
            if job.state == JobState::Done {
                return Ok(());
            }
            bail!("job {} ended {}: {}", job.id, job.state, job.last_error);
        }
        if Instant::now() > deadline {
            bail!(
                "job {job_id} has not ended after {} s (it is {})",
                timeout.as_secs(),
                job.state
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

pub fn retention(config: Config, command: RetentionCommand) -> anyhow::Result<()> {
    runtime()?.block_on(async {
        let index = open_index(&config).await?;
        prepare_nearline(&index, &config).await?;
        let rules = index
            .retention_rules()
            .await
            .context("cannot read retention rules")?;
        let mut text = String::new();
        match command {
            RetentionCommand::List => {
                for rule in &rules {
                    text.push_str(&format!("{}\n", serde_json::to_string(rule)?));
                }
            }
            RetentionCommand::Preview { rule, json } => {
                let chosen: Vec<_> = rules
                    .iter()
                    .filter(|r| rule.as_deref().is_none_or(|name| r.name == name))
                    .collect();
                if chosen.is_empty() {
                    bail!(
                        "no retention rule{}",
                        rule.map(|n| format!(" named `{n}`")).unwrap_or_default()
                    );
                }
                for rule in chosen {
                    for entry in archive_core::retention::preview(&index, rule).await? {
                        if json {
                            let mut value = serde_json::to_value(&entry)?;
                            value["rule"] = serde_json::Value::from(rule.name.clone());
                            text.push_str(&format!("{value}\n"));
                        } else {
                            text.push_str(&format!(
                                "{:<16} {:<7} {:<64} {}\n",
                                rule.name,
                                if entry.delete { "DELETE" } else { "KEEP" },
                                entry.study_uid,
                                entry.reasons.join("; ")
                            ));
                        }
                    }
                }
            }
        }
        write_stdout(&text)
    })
}

pub fn jobs(config: Config, command: JobsCommand) -> anyhow::Result<()> {
    runtime()?.block_on(async {
        let index = open_index(&config).await?;
        match command {
            JobsCommand::List {
                state,
                job_type,
                study_uid,
                limit,
                json,
            } => {
                let filter = JobFilter {
                    state: state
                        .map(|s| s.to_ascii_uppercase().parse::<JobState>())
                        .transpose()
                        .context("--state")?,
                    job_type: job_type
                        .map(|s| s.to_ascii_uppercase().parse::<JobType>())
                        .transpose()
                        .context("--type")?,
                    study_uid,
                    limit,
                };
                let jobs = index.list_jobs(&filter).await.context("cannot list jobs")?;
                let text = if json {
                    let mut lines = String::new();
                    for job in &jobs {
                        lines.push_str(&serde_json::to_string(job)?);
                        lines.push('\n');
                    }
                    lines
                } else {
                    jobs_table(&jobs)
                };
                write_stdout(&text)?;
            }
            JobsCommand::Cancel { id } => {
                if index.cancel_job(id, now_millis()).await? {
                    println!("cancelled job {id}");
                } else if index.job(id).await?.is_none() {
                    bail!("no job {id}");
                } else {
                    bail!("job {id} has already ended");
                }
            }
        }
        Ok(())
    })
}

/// Writes command output; a reader that stops early (`| head`, `| grep -q`) is not an error.
fn write_stdout(text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    match std::io::stdout().lock().write_all(text.as_bytes()) {
        Err(error) if error.kind() != std::io::ErrorKind::BrokenPipe => Err(error.into()),
        _ => Ok(()),
    }
}

fn jobs_table(jobs: &[Job]) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:>6}  {:<6}  {:<9}  {:>3}  {:<12}  {:<20}  {:>13}  study / last error",
        "id", "type", "state", "try", "target", "node", "progress"
    );
    for job in jobs {
        let progress = if job.total_items > 0 {
            format!("{}/{}", job.done_items, job.total_items)
        } else {
            String::new()
        };
        let _ = writeln!(
            out,
            "{:>6}  {:<6}  {:<9}  {:>3}  {:<12}  {:<20}  {:>13}  {}{}",
            job.id,
            job.job_type,
            job.state,
            job.attempts,
            job.target_name,
            job.owner_node,
            progress,
            job.study_uid,
            if job.last_error.is_empty() {
                String::new()
            } else {
                format!("  [{}]", job.last_error)
            }
        );
    }
    out
}

pub fn nearline(config: Config, command: NearlineCommand) -> anyhow::Result<()> {
    runtime()?.block_on(async {
        let index = open_index(&config).await?;
        prepare_nearline(&index, &config).await?;
        match command {
            NearlineCommand::Add(args) => {
                let spec = spec_from_args(*args)?;
                index.upsert_target(&spec, now_millis()).await?;
                println!("saved target {} ({})", spec.name, spec.location());
            }
            NearlineCommand::List => {
                println!("{:<16} {:<10} {:<8} location", "name", "kind", "source");
                for row in index.targets().await? {
                    println!(
                        "{:<16} {:<10} {:<8} {}",
                        row.spec.name,
                        row.spec.kind.as_str(),
                        if row.from_config {
                            "config"
                        } else {
                            "database"
                        },
                        row.spec.location()
                    );
                }
            }
        }
        Ok(())
    })
}

fn spec_from_args(args: NearlineAddArgs) -> anyhow::Result<TargetSpec> {
    let kind = match args.kind.as_str() {
        "filesystem" => TargetKind::Filesystem,
        "s3" => TargetKind::S3,
        other => bail!("--kind {other}: expected filesystem or s3"),
    };
    let part_size: ByteSize = args
        .part_size
        .parse()
        .map_err(|m: String| anyhow::anyhow!("--part-size: {m}"))?;
    let spec = TargetSpec {
        name: args.name,
        kind,
        path: args.path,
        endpoint: args.endpoint,
        region: args.region,
        bucket: args.bucket,
        prefix: args.prefix,
        path_style: !args.virtual_hosted,
        storage_class: args.storage_class,
        access_key_id_file: args.access_key_id_file,
        secret_access_key_file: args.secret_access_key_file,
        part_size,
        upload_concurrency: args.upload_concurrency,
        pack_per_series: args.pack_per_series,
        priority: args.priority,
    };
    // Same checks as the config file; the message names the setting.
    spec.validate("nearline add")
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(spec)
}
