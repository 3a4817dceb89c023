//! `strata rebuild-index`: wires the configured filesystems and targets into the rebuild and
//! reports progress and the outcome.

use crate::cli::{ImportArgs, RebuildArgs};
use crate::serve::{open_index, prepare_nearline, runtime};
use anyhow::Context;
use archive_core::accept::Acceptor;
use archive_core::config::{Config, DuplicatePolicy};
use archive_core::index::Index;
use archive_core::ingest::IngestQueue;
use archive_core::nearline::TargetFactory;
use archive_core::online::{prepare_directory, OnlineStore};
use lifecycle::rebuild::{rebuild_index, Progress, RebuildOptions, TargetToScan};
use std::sync::Arc;
use std::time::Duration;

pub fn rebuild(config: Config, args: RebuildArgs) -> anyhow::Result<()> {
    runtime()?.block_on(async {
        let index = open_index(&config).await?;
        prepare_nearline(&index, &config).await?;
        let filesystems = index
            .sync_filesystems(&config.effective_filesystems())
            .await
            .context("cannot record the ONLINE filesystems in the index")?;
        let mut targets = Vec::new();
        for row in index.targets().await? {
            let target = hsm_s3::Targets
                .open(&row.spec)
                .await
                .with_context(|| format!("cannot open NEARLINE target `{}`", row.spec.name))?;
            targets.push(TargetToScan { row, target });
        }
        let options = RebuildOptions {
            verify: args.verify,
            parallel: args.parallel.max(1),
        };
        let progress = Arc::new(Progress::default());
        let reporter = tokio::spawn(report_progress(progress.clone()));
        let result = rebuild_index(&index, &filesystems, &targets, &options, &progress).await;
        reporter.abort();
        let report = result.context("rebuild stopped (run it again: it continues)")?;
        println!(
            "rebuild-index done: {} ONLINE files indexed ({} already were), {} packs recorded \
             ({} already were; {} ARCHIVED, {} VERIFY_FAILED), {} instances indexed from packs",
            report.files_indexed,
            report.files_already_indexed,
            report.packs_recorded,
            report.packs_already_recorded,
            report.packs_archived,
            report.packs_verify_failed,
            report.instances_from_packs
        );
        for conflict in &report.conflicts {
            println!("conflict: {conflict}");
        }
        for problem in &report.problems {
            println!("problem: {problem}");
        }
        if !args.verify && report.packs_recorded > 0 {
            println!(
                "packs found are TO_ARCHIVE until verify-sync reads them back (or rerun with --verify)"
            );
        }
        Ok(())
    })
}

/// `strata import --in-place DIR` or `strata import --hsm-target NAME`.
pub fn import(config: Config, args: ImportArgs) -> anyhow::Result<()> {
    runtime()?.block_on(async {
        let index = open_index(&config).await?;
        index
            .sync_filesystems(&config.effective_filesystems())
            .await
            .context("cannot record the ONLINE filesystems in the index")?;
        let options = RebuildOptions {
            verify: false,
            parallel: args.parallel.max(1),
        };
        if let Some(name) = &args.hsm_target {
            return import_hsm(&index, &config, name, &options).await;
        }
        let dir = args
            .dir
            .context("--in-place and --copy need the directory to import")?;
        if args.copy {
            return import_copy(&index, &config, &dir, &options).await;
        }
        let progress = Arc::new(Progress::default());
        let reporter = tokio::spawn(report_progress(progress.clone()));
        let result =
            lifecycle::rebuild::import_in_place(&index, &dir, &args.group, &options, &progress)
                .await;
        reporter.abort();
        let (report, filesystem) = result.context("import stopped (run it again: it continues)")?;
        println!(
            "import done: {} files indexed in place ({} already were) on read-only filesystem {} \
             (group {}, id {})",
            report.files_indexed,
            report.files_already_indexed,
            filesystem.path,
            filesystem.group,
            filesystem.id
        );
        for problem in &report.problems {
            println!("problem: {problem}");
        }
        Ok(())
    })
}

/// `strata import --copy DIR`: every file copied in through the accept path.
async fn import_copy(
    index: &Index,
    config: &Config,
    dir: &std::path::Path,
    options: &RebuildOptions,
) -> anyhow::Result<()> {
    let filesystems = index.filesystems().await?;
    // Only the spool directories are made: a node serving meanwhile keeps its own spool
    // files (serve's start-up clean-up would remove them).
    for filesystem in filesystems.iter().filter(|f| f.is_writable()) {
        prepare_directory(std::path::Path::new(&filesystem.path), true)
            .with_context(|| format!("cannot prepare ONLINE filesystem {}", filesystem.path))?;
    }
    let online = OnlineStore::new(&config.online.store_group, filesystems);
    // Whatever the configuration says: an import never replaces a stored file, and gives
    // one to instances held only in a pack (e.g. HSM tars imported first).
    let acceptor = Acceptor::new(
        online,
        index.clone(),
        IngestQueue::start(index.clone()),
        DuplicatePolicy::FillMissing,
    );
    let progress = Arc::new(Progress::default());
    let reporter = tokio::spawn(report_progress(progress.clone()));
    let result = lifecycle::rebuild::import_copy(&acceptor, dir, options, &progress).await;
    reporter.abort();
    let report = result.context("import stopped (run it again: it continues)")?;
    println!(
        "import done: {} files copied into ONLINE storage ({} were stored already) from {}",
        report.files_indexed,
        report.files_already_indexed,
        dir.display()
    );
    for problem in &report.problems {
        println!("problem: {problem}");
    }
    Ok(())
}

/// `strata import --hsm-target NAME`: the target's tars registered as packs.
async fn import_hsm(
    index: &Index,
    config: &Config,
    name: &str,
    options: &RebuildOptions,
) -> anyhow::Result<()> {
    prepare_nearline(index, config).await?;
    let row = index.target(name).await?.with_context(|| {
        format!("--hsm-target {name}: no such NEARLINE target (configure it under [[nearline.targets]])")
    })?;
    let target = hsm_s3::Targets
        .open(&row.spec)
        .await
        .with_context(|| format!("cannot open NEARLINE target `{name}`"))?;
    let to_scan = TargetToScan { row, target };
    let progress = Arc::new(Progress::default());
    let reporter = tokio::spawn(report_progress(progress.clone()));
    let result = lifecycle::rebuild::import_hsm_target(index, &to_scan, options, &progress).await;
    reporter.abort();
    let report = result.context("import stopped (run it again: it continues)")?;
    println!(
        "import done: {} tars registered as packs ({} ARCHIVED; {} already were), {} \
         instances indexed from them",
        report.packs_recorded,
        report.packs_archived,
        report.packs_already_recorded,
        report.instances_from_packs
    );
    for conflict in &report.conflicts {
        println!("conflict: {conflict}");
    }
    for problem in &report.problems {
        println!("problem: {problem}");
    }
    Ok(())
}

/// A progress line on stderr every few seconds.
async fn report_progress(progress: Arc<Progress>) {
    let mut tick = tokio::time::interval(Duration::from_secs(2));
    tick.tick().await;
    loop {
        tick.tick().await;
        eprintln!("rebuild-index: {}", progress.line());
    }
}
