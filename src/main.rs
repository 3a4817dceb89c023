//! The `strata` binary: parses the command line and wires the crates together.

mod ae;
mod cli;
mod lifecycle_cli;
mod malloc_tuning;
mod rebuild_cli;
mod serve;

use anyhow::Context;
use archive_core::actions::StudyAction;
use archive_core::config::{self, ConfigSources};
use clap::Parser;
use cli::{Cli, Command};
use dicom_scp::synthetic::{self, CorpusSpec, Kind};

fn main() -> std::process::ExitCode {
    malloc_tuning::apply();
    let cli = Cli::parse();
    init_logging();
    match run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            // `{:#}` prints the chain of causes on one line, without a backtrace: these
            // messages are for admins.
            eprintln!("error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Generate(args) => generate(args),
        Command::Serve => serve::serve(load_config(&cli.config)?),
        Command::Migrate => serve::migrate(load_config(&cli.config)?),
        Command::Ae(command) => ae::run(load_config(&cli.config)?, command),
        Command::Copy(args) => study_job(&cli.config, StudyAction::Copy, args),
        Command::Verify(args) => study_job(&cli.config, StudyAction::Verify, args),
        Command::Restore(args) => study_job(&cli.config, StudyAction::Restore, args),
        Command::DeleteOnline(args) => study_job(&cli.config, StudyAction::DeleteOnline, args),
        Command::Scavenge(args) => lifecycle_cli::scavenge(load_config(&cli.config)?, args),
        Command::Fixity(args) => lifecycle_cli::fixity(load_config(&cli.config)?, args),
        Command::Retention(command) => lifecycle_cli::retention(load_config(&cli.config)?, command),
        Command::Jobs(command) => lifecycle_cli::jobs(load_config(&cli.config)?, command),
        Command::Nearline(command) => lifecycle_cli::nearline(load_config(&cli.config)?, command),
        Command::RebuildIndex(args) => rebuild_cli::rebuild(load_config(&cli.config)?, args),
        Command::Import(args) => rebuild_cli::import(load_config(&cli.config)?, args),
    }
}

fn study_job(
    flags: &cli::ConfigFlags,
    action: StudyAction,
    args: cli::StudyJobArgs,
) -> anyhow::Result<()> {
    lifecycle_cli::request(load_config(flags)?, action, args)
}

fn load_config(flags: &cli::ConfigFlags) -> anyhow::Result<config::Config> {
    let sources = ConfigSources {
        file: flags.config.clone(),
        env: std::env::vars().collect(),
        overrides: flags.overrides(),
    };
    config::load(&sources).context("configuration error")
}

/// Logs go to stderr (stdout carries the start-up banner), without colour codes unless stderr
/// is a terminal; `STRATA_LOG` takes tracing filter directives (default `info`). Patient data
/// is only ever logged at debug level and below.
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("STRATA_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sqlx=warn"));
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
}

fn generate(args: cli::GenerateArgs) -> anyhow::Result<()> {
    let kind = Kind::parse(&args.kind)
        .with_context(|| format!("--kind {}: expected ct, mr, sc, mf or sr", args.kind))?;
    let legacy = match args.layout.as_str() {
        "flat" => false,
        "dcm4chee2" => true,
        other => anyhow::bail!("--layout {other}: expected flat or dcm4chee2"),
    };
    let final_dir = args.out.clone();
    let spec = CorpusSpec {
        // A dcm4chee tree is re-laid from a flat corpus written beside it first.
        out_dir: if legacy {
            args.out.join(".flat")
        } else {
            args.out
        },
        patients: args.patients,
        studies_per_patient: args.studies_per_patient,
        series_per_study: args.series_per_study,
        instances_per_series: args.instances_per_series,
        matrix: args.matrix,
        frames: args.frames,
        kind,
        seed: args.seed,
        patient_prefix: args.patient_prefix,
    };
    let files = synthetic::generate(&spec).context("cannot write corpus")?;
    if legacy {
        let tree =
            dicom_scp::synthetic_legacy::dcm4chee2_online_tree(&spec.out_dir, &final_dir, None)
                .context("cannot write the dcm4chee 2.x tree")?;
        std::fs::remove_dir_all(&spec.out_dir).context("cannot remove the flat corpus")?;
        println!(
            "wrote {} files in dcm4chee 2.x layout to {}",
            tree.len(),
            final_dir.display()
        );
        if let Some(hsm) = &args.hsm_tars {
            let plans = dicom_scp::synthetic_legacy::dcm4chee2_hsm_tars(&final_dir, &tree);
            for plan in &plans {
                // 2012-03-04 05:06:07 UTC, the tree's fixed reception time.
                hsm_s3::dcm4chee_tar::write_series_tar(
                    &hsm.join(&plan.rel_path),
                    &plan.members,
                    1_330_837_567,
                )
                .with_context(|| format!("cannot write {}", plan.rel_path.display()))?;
            }
            println!(
                "wrote {} dcm4chee 2.x HSM tars to {}",
                plans.len(),
                hsm.display()
            );
        }
        return Ok(());
    }
    if args.hsm_tars.is_some() {
        anyhow::bail!("--hsm-tars needs --layout dcm4chee2");
    }
    println!("wrote {} files to {}", files.len(), spec.out_dir.display());
    Ok(())
}
