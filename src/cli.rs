//! Command-line interface. Flags that set configuration keys override `STRATA_*` variables,
//! which override the config file.

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(
    name = "strata",
    version,
    about = "Strata: a DICOM archive with ONLINE and NEARLINE tiers"
)]
pub struct Cli {
    #[command(flatten)]
    pub config: ConfigFlags,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Args, Debug, Clone)]
pub struct ConfigFlags {
    /// TOML config file (default: none; built-in defaults apply)
    #[arg(long, global = true, env = "STRATA_CONFIG")]
    pub config: Option<PathBuf>,
    /// Index database: sqlite://PATH or postgres://USER@HOST/DB (key: database_url)
    #[arg(long, global = true)]
    pub database_url: Option<String>,
    /// Directory for local data (key: data_dir)
    #[arg(long, global = true)]
    pub data_dir: Option<PathBuf>,
    /// Our AE title (key: dicom.ae_title)
    #[arg(long = "ae-title", id = "our_ae_title", global = true)]
    pub ae_title: Option<String>,
    /// DICOM port (key: dicom.port)
    #[arg(long, global = true)]
    pub dicom_port: Option<u16>,
    /// HTTP listen address (key: http.listen)
    #[arg(long, global = true)]
    pub http_listen: Option<String>,
}

impl ConfigFlags {
    /// The flags given, as `(config key, value)` overrides.
    pub fn overrides(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let mut push = |key: &str, value: Option<String>| {
            if let Some(value) = value {
                out.push((key.to_string(), value));
            }
        };
        push("database_url", self.database_url.clone());
        push(
            "data_dir",
            self.data_dir.as_ref().map(|p| p.display().to_string()),
        );
        push("dicom.ae_title", self.ae_title.clone());
        push("dicom.port", self.dicom_port.map(|p| p.to_string()));
        push("http.listen", self.http_listen.clone());
        out
    }
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the archive: DICOM SCP and HTTP API
    Serve,
    /// Create or upgrade the index schema, then exit
    Migrate,
    /// Write a synthetic DICOM corpus (for tests, benchmarks and smoke tests)
    Generate(GenerateArgs),
    /// Manage DICOM peers: C-MOVE destinations and what they may do
    #[command(subcommand)]
    Ae(AeCommand),
    /// Queue a copy of a study to a NEARLINE target (a job any running node picks up)
    Copy(StudyJobArgs),
    /// Queue a read-back (verify-sync) of a study's packs on a NEARLINE target
    Verify(StudyJobArgs),
    /// Queue bringing a NEARLINE study back ONLINE (a job)
    Restore(StudyJobArgs),
    /// Queue deleting a study's ONLINE copies; only instances with a verified (ARCHIVED)
    /// NEARLINE copy lose theirs (`--target`: copies on that target only)
    DeleteOnline(StudyJobArgs),
    /// Queue a scavenge of this node: retrieve-cache leftovers, stale spool files, and ONLINE
    /// files without an index row (reported; removed with lifecycle.remove_orphans)
    Scavenge(WaitArgs),
    /// Queue a fixity run now: ARCHIVED packs and ONLINE files due for a re-read (older than
    /// lifecycle.fixity_cycle_days), within lifecycle.fixity_max_bytes_per_day
    Fixity(WaitArgs),
    /// Retention rules: what they would delete, and why other studies stay
    #[command(subcommand)]
    Retention(RetentionCommand),
    /// Lifecycle jobs, as every node sees them
    #[command(subcommand)]
    Jobs(JobsCommand),
    /// NEARLINE targets: S3 buckets and directories that hold packs
    #[command(subcommand)]
    Nearline(NearlineCommand),
    /// Rebuild the index from storage alone: every configured ONLINE filesystem and NEARLINE
    /// target. Only adds what is missing; resumable; run it with no node serving
    RebuildIndex(RebuildArgs),
    /// Index another archive's storage where it is: an ONLINE directory tree (e.g. dcm4chee
    /// 2.x; `--in-place DIR`: a read-only filesystem of its own group) or a NEARLINE target
    /// holding dcm4chee 2.x HSM tars (`--hsm-target NAME`: registered as packs, no upload)
    Import(ImportArgs),
}

#[derive(Args, Debug)]
#[command(group(clap::ArgGroup::new("source").required(true).args(["in_place", "copy", "hsm_target"])))]
pub struct ImportArgs {
    /// With --in-place or --copy: the directory to import (every DICOM file below it, any
    /// layout, any file names)
    pub dir: Option<PathBuf>,
    /// Index the files of DIR where they are (nothing is copied or moved)
    #[arg(long, requires = "dir")]
    pub in_place: bool,
    /// Copy the files of DIR into Strata's ONLINE storage, each through the same accept
    /// path as a C-STORE (DIR is only read)
    #[arg(long, requires = "dir")]
    pub copy: bool,
    /// A configured NEARLINE target (`[[nearline.targets]]`, e.g. a filesystem target at
    /// dcm4chee 2.x's HSM file system, or the bucket its tars were moved to): every tar on it
    /// is read by range, each member checked against the tar's MD5SUM, and indexed
    #[arg(long, value_name = "NAME")]
    pub hsm_target: Option<String>,
    /// With --in-place: filesystem group the directory is registered in
    #[arg(long, default_value = "IMPORTED")]
    pub group: String,
    /// Files hashed at the same time
    #[arg(long, default_value_t = 4)]
    pub parallel: usize,
}

#[derive(Args, Debug)]
pub struct RebuildArgs {
    /// Read every pack found back whole: it becomes ARCHIVED only if every member matches
    /// (without it, packs are TO_ARCHIVE and verify-sync checks them)
    #[arg(long)]
    pub verify: bool,
    /// Files hashed, or pack members read, at the same time
    #[arg(long, default_value_t = 4)]
    pub parallel: usize,
}

#[derive(Args, Debug)]
pub struct StudyJobArgs {
    /// Study Instance UID
    #[arg(long = "study", value_name = "UID")]
    pub study_uid: String,
    /// Target name (default: the only target, if there is just one)
    #[arg(long)]
    pub target: Option<String>,
    /// Wait until the job has ended; exit status 1 unless it is DONE
    #[arg(long)]
    pub wait: bool,
    /// Give up waiting after this many seconds
    #[arg(long, default_value_t = 3600)]
    pub timeout_secs: u64,
}

#[derive(Args, Debug)]
pub struct WaitArgs {
    /// Wait until the job has ended; exit status 1 unless it is DONE
    #[arg(long)]
    pub wait: bool,
    /// Give up waiting after this many seconds
    #[arg(long, default_value_t = 3600)]
    pub timeout_secs: u64,
}

#[derive(Subcommand, Debug)]
pub enum RetentionCommand {
    /// Dry run: what each rule (or the named one) would delete now, and why others stay
    Preview {
        /// Only this rule
        #[arg(long)]
        rule: Option<String>,
        /// One JSON object per study instead of a table
        #[arg(long)]
        json: bool,
    },
    /// List the retention rules
    List,
}

#[derive(Subcommand, Debug)]
pub enum JobsCommand {
    /// List jobs, newest first
    List {
        /// QUEUED, RUNNING, DONE, FAILED or CANCELLED
        #[arg(long)]
        state: Option<String>,
        /// COPY, VERIFY, DELETE or RESTORE
        #[arg(long = "type", value_name = "TYPE")]
        job_type: Option<String>,
        /// Only jobs of this Study Instance UID
        #[arg(long = "study", value_name = "UID")]
        study_uid: Option<String>,
        #[arg(long, default_value_t = 100)]
        limit: i64,
        /// One JSON object per line instead of a table
        #[arg(long)]
        json: bool,
    },
    /// Cancel a queued or running job
    Cancel { id: i64 },
}

#[derive(Subcommand, Debug)]
pub enum NearlineCommand {
    /// Add a target, or replace the settings of the one with the same name
    Add(Box<NearlineAddArgs>),
    /// List the targets
    List,
}

#[derive(Args, Debug)]
pub struct NearlineAddArgs {
    /// Target name (letters, digits, - and _)
    pub name: String,
    /// filesystem or s3
    #[arg(long, default_value = "filesystem")]
    pub kind: String,
    /// filesystem: directory for packs
    #[arg(long)]
    pub path: Option<PathBuf>,
    /// s3: endpoint URL (empty for AWS)
    #[arg(long, default_value = "")]
    pub endpoint: String,
    #[arg(long, default_value = "us-east-1")]
    pub region: String,
    #[arg(long, default_value = "")]
    pub bucket: String,
    /// Key prefix, e.g. strata/
    #[arg(long, default_value = "")]
    pub prefix: String,
    /// Virtual-hosted addressing instead of path style
    #[arg(long)]
    pub virtual_hosted: bool,
    #[arg(long, default_value = "")]
    pub storage_class: String,
    /// File holding the access key id (else the AWS environment/profile is used)
    #[arg(long)]
    pub access_key_id_file: Option<PathBuf>,
    /// File holding the secret access key
    #[arg(long)]
    pub secret_access_key_file: Option<PathBuf>,
    /// Multipart part size, e.g. 8MiB
    #[arg(long, default_value = "8MiB")]
    pub part_size: String,
    #[arg(long, default_value_t = 4)]
    pub upload_concurrency: u32,
    /// One pack per series instead of per study
    #[arg(long)]
    pub pack_per_series: bool,
    /// Retrieval prefers targets with a lower priority, falling back to the next
    #[arg(long, default_value_t = 0)]
    pub priority: u32,
}

#[derive(Subcommand, Debug)]
pub enum AeCommand {
    /// Add a peer, or update the one with the same AE title
    Add {
        /// The peer's AE title
        #[arg(value_name = "AE_TITLE")]
        title: String,
        host: String,
        port: u16,
        /// May not query (C-FIND)
        #[arg(long)]
        no_query: bool,
        /// May not retrieve (C-MOVE, C-GET)
        #[arg(long)]
        no_retrieve: bool,
        /// May not be sent to (C-MOVE destination)
        #[arg(long)]
        no_store: bool,
        /// Open associations to it with TLS (C-MOVE; needs dicom.tls)
        #[arg(long)]
        tls: bool,
        #[arg(long, default_value = "")]
        description: String,
    },
    /// List the peers
    List,
    /// Remove a peer
    Remove {
        /// The peer's AE title
        #[arg(value_name = "AE_TITLE")]
        title: String,
    },
}

#[derive(Args, Debug)]
pub struct GenerateArgs {
    /// Output directory
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long, default_value_t = 1)]
    pub patients: u32,
    #[arg(long, default_value_t = 1)]
    pub studies_per_patient: u32,
    #[arg(long, default_value_t = 1)]
    pub series_per_study: u32,
    #[arg(long, default_value_t = 10)]
    pub instances_per_series: u32,
    /// Image rows and columns
    #[arg(long, default_value_t = 64)]
    pub matrix: u16,
    /// Frames per object (kind mf)
    #[arg(long, default_value_t = 1)]
    pub frames: u16,
    /// ct, mr, sc (8-bit secondary capture), mf (multi-frame), sr (text SR)
    #[arg(long, default_value = "ct")]
    pub kind: String,
    /// Makes UIDs reproducible; different seeds give different studies
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Prefix of generated patient IDs
    #[arg(long, default_value = "SYN")]
    pub patient_prefix: String,
    /// `flat` (files named by patient/study/series/instance) or `dcm4chee2` (a dcm4chee 2.x
    /// ONLINE file system: `YYYY/M/D/H/<hash>/<hash>/<hash>`, no extension), for import trials
    #[arg(long, default_value = "flat")]
    pub layout: String,
    /// With `--layout dcm4chee2`: also write each series as dcm4chee 2.x's HSM module did,
    /// one tar with an MD5SUM entry, under this directory (for `strata import --hsm-target`)
    #[arg(long, value_name = "DIR")]
    pub hsm_tars: Option<PathBuf>,
}
