//! Configuration of the NEARLINE tier: targets, copy rules, and the job workers.

use super::{ByteSize, Config, ConfigError};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::path::PathBuf;

impl Default for NearlineConfig {
    fn default() -> Self {
        NearlineConfig {
            targets: Vec::new(),
            cache_dir: None,
            cache_size: super::retention::default_cache_size(),
        }
    }
}

/// The name of the filesystem target that exists when no target is configured.
pub const DEFAULT_TARGET: &str = "local";

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NearlineConfig {
    /// Empty means one filesystem target `local` at `<data_dir>/nearline`.
    pub targets: Vec<TargetSpec>,
    /// Where packs fetched for retrieval are unpacked; default `<data_dir>/retrieve-cache`.
    pub cache_dir: Option<PathBuf>,
    /// The retrieve cache evicts least recently used packs to stay below this.
    pub cache_size: ByteSize,
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum TargetKind {
    #[default]
    Filesystem,
    S3,
}

impl TargetKind {
    pub fn as_str(self) -> &'static str {
        match self {
            TargetKind::Filesystem => "filesystem",
            TargetKind::S3 => "s3",
        }
    }
}

/// A NEARLINE target. Also what the index stores (as JSON) for targets added at run time, so
/// it holds no secret: S3 credentials come from the files named here or from the standard AWS
/// environment (variables, profile, instance role) of the process.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TargetSpec {
    pub name: String,
    #[serde(default)]
    pub kind: TargetKind,
    /// filesystem: the directory packs are written to (local disk, NFS, a mounted bucket).
    #[serde(default)]
    pub path: Option<PathBuf>,
    /// s3: endpoint URL; empty means AWS itself.
    #[serde(default)]
    pub endpoint: String,
    #[serde(default = "default_region")]
    pub region: String,
    #[serde(default)]
    pub bucket: String,
    /// Prepended to every object key, e.g. `strata/`.
    #[serde(default)]
    pub prefix: String,
    /// Path-style addressing (`endpoint/bucket/key`), which most non-AWS servers need.
    #[serde(default = "yes")]
    pub path_style: bool,
    /// e.g. `STANDARD_IA`, `GLACIER_IR`; empty means the bucket's default.
    #[serde(default)]
    pub storage_class: String,
    /// Files holding the access key id and the secret key (e.g. Docker/Kubernetes secrets).
    /// Both or neither; neither means the standard AWS credential chain.
    #[serde(default)]
    pub access_key_id_file: Option<PathBuf>,
    #[serde(default)]
    pub secret_access_key_file: Option<PathBuf>,
    /// Packs larger than this are uploaded in parts of this size (S3 minimum 5 MiB).
    #[serde(default = "default_part_size")]
    pub part_size: ByteSize,
    /// Parts uploaded at once.
    #[serde(default = "default_upload_concurrency")]
    pub upload_concurrency: u32,
    /// One pack per series instead of one per study.
    #[serde(default)]
    pub pack_per_series: bool,
    /// Retrieval reads from the target with the lowest priority holding a verified copy, and
    /// falls back to the next when a read fails.
    #[serde(default)]
    pub priority: u32,
}

fn default_region() -> String {
    "us-east-1".into()
}
fn yes() -> bool {
    true
}
fn default_part_size() -> ByteSize {
    ByteSize(8 << 20)
}
fn default_upload_concurrency() -> u32 {
    4
}

impl TargetSpec {
    pub fn filesystem(name: &str, path: PathBuf) -> TargetSpec {
        TargetSpec {
            name: name.into(),
            kind: TargetKind::Filesystem,
            path: Some(path),
            endpoint: String::new(),
            region: default_region(),
            bucket: String::new(),
            prefix: String::new(),
            path_style: true,
            storage_class: String::new(),
            access_key_id_file: None,
            secret_access_key_file: None,
            part_size: default_part_size(),
            upload_concurrency: default_upload_concurrency(),
            pack_per_series: false,
            priority: 0,
        }
    }

    /// Where packs go, for people: `s3://bucket/prefix` or the directory.
    pub fn location(&self) -> String {
        match self.kind {
            TargetKind::Filesystem => self
                .path
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
            TargetKind::S3 => format!("s3://{}/{}", self.bucket, self.prefix),
        }
    }

    /// Checks one target; `key` is where it came from (e.g. `nearline.targets[0]`).
    pub fn validate(&self, key: &str) -> Result<(), ConfigError> {
        if self.name.is_empty()
            || !self
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(ConfigError::key(
                format!("{key}.name"),
                format!(
                    "`{}` must be letters, digits, `-` or `_` (it names the target in jobs and URLs)",
                    self.name
                ),
            ));
        }
        match self.kind {
            TargetKind::Filesystem => {
                if self.path.as_ref().is_none_or(|p| p.as_os_str().is_empty()) {
                    return Err(ConfigError::key(
                        format!("{key}.path"),
                        "a filesystem target needs a directory",
                    ));
                }
            }
            TargetKind::S3 => {
                if self.bucket.is_empty() {
                    return Err(ConfigError::key(
                        format!("{key}.bucket"),
                        "an s3 target needs a bucket",
                    ));
                }
                let scheme_ok =
                    self.endpoint.starts_with("http://") || self.endpoint.starts_with("https://");
                if !self.endpoint.is_empty() && !scheme_ok {
                    return Err(ConfigError::key(
                        format!("{key}.endpoint"),
                        format!("`{}` must start with http:// or https://", self.endpoint),
                    ));
                }
                if self.access_key_id_file.is_some() != self.secret_access_key_file.is_some() {
                    return Err(ConfigError::key(
                        format!("{key}.secret_access_key_file"),
                        "give both access_key_id_file and secret_access_key_file, or neither",
                    ));
                }
                if self.part_size.0 < 5 << 20 || self.part_size.0 > 5 << 30 {
                    return Err(ConfigError::key(
                        format!("{key}.part_size"),
                        "must be between 5MiB and 5GiB (S3 part size limits)",
                    ));
                }
            }
        }
        if !(1..=64).contains(&self.upload_concurrency) {
            return Err(ConfigError::key(
                format!("{key}.upload_concurrency"),
                "must be between 1 and 64",
            ));
        }
        Ok(())
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LifecycleConfig {
    /// This node's name in the jobs table; empty means `<hostname>-<dicom port>`.
    pub node_id: String,
    /// Jobs this node runs at once.
    pub workers: u32,
    /// How often an idle worker looks for a job.
    pub poll_interval_ms: u64,
    /// A running job's claim lasts this long and is renewed while it runs; a node that dies
    /// loses its jobs to the others once it expires.
    pub lease_secs: u64,
    /// Attempts before a job is FAILED for good.
    pub max_attempts: u32,
    /// Retry delays double from `backoff_base_secs` up to `backoff_max_secs`.
    pub backoff_base_secs: u64,
    pub backoff_max_secs: u64,
    /// When verify-sync reads back packs not yet verified (cron, with or without seconds).
    /// Empty disables the schedule; `strata verify` still works.
    pub verify_schedule: String,
    /// When this node scavenges (cron): retrieve-cache leftovers, stale spool files, and
    /// ONLINE files without an index row. Empty disables it; `strata scavenge` still works.
    pub scavenge_schedule: String,
    /// Spool files and orphan ONLINE files are only touched once unmodified for this long, so
    /// a transfer or an index commit under way is never mistaken for a leftover.
    pub scavenge_grace_hours: u32,
    /// Remove orphan ONLINE files (files no index row points at) instead of only reporting
    /// them. Off by default: an orphan may be an object a crash left unindexed, which an
    /// admin may want to re-import first.
    pub remove_orphans: bool,
    /// An ONLINE file is deleted (by a retention rule or on request) only once this many
    /// different targets hold a verified (ARCHIVED) copy of its instance.
    pub min_archived_copies: u32,
    /// When the fixity service runs (cron); empty disables it (`strata fixity` still works).
    pub fixity_schedule: String,
    /// Every ARCHIVED pack is re-read, and every ONLINE file re-hashed, once per this many
    /// days (as far as the byte budget allows).
    pub fixity_cycle_days: u32,
    /// Most bytes fixity checks read in any 24 hours (NEARLINE egress and disk time).
    pub fixity_max_bytes_per_day: super::ByteSize,
    pub copy_rules: Vec<CopyRuleConfig>,
    pub retention_rules: Vec<super::RetentionRuleConfig>,
}

impl Default for LifecycleConfig {
    fn default() -> Self {
        LifecycleConfig {
            node_id: String::new(),
            workers: 2,
            poll_interval_ms: 1000,
            lease_secs: 60,
            max_attempts: 10,
            backoff_base_secs: 30,
            backoff_max_secs: 3600,
            verify_schedule: "0 */10 * * * *".into(),
            scavenge_schedule: "0 30 3 * * *".into(),
            scavenge_grace_hours: 24,
            remove_orphans: false,
            min_archived_copies: 1,
            fixity_schedule: "0 15 1 * * *".into(),
            fixity_cycle_days: 30,
            fixity_max_bytes_per_day: super::ByteSize(20 << 30),
            copy_rules: Vec::new(),
            retention_rules: Vec::new(),
        }
    }
}

/// Which ONLINE studies get copied to a target, and when the rule looks for them.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct CopyRuleConfig {
    pub name: String,
    /// The target studies are copied to; or, for copies on several targets, `targets`.
    #[serde(default)]
    pub target: String,
    /// Several targets: each gets its own copy (its own job and pack), e.g. with
    /// `lifecycle.min_archived_copies = 2`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub targets: Vec<String>,
    /// Cron expression, e.g. `0 */5 * * * *` (seconds first) or `*/5 * * * *`.
    pub schedule: String,
    /// Only studies that received no new instance for this many minutes.
    #[serde(default = "default_stable_minutes")]
    pub stable_minutes: u32,
    /// Only studies first received at least this many days ago.
    #[serde(default)]
    pub min_age_days: u32,
    /// Only studies with a series of one of these modalities; empty means any.
    #[serde(default)]
    pub modalities: Vec<String>,
    /// Only studies with a series sent by one of these calling AE titles; empty means any.
    #[serde(default)]
    pub calling_aes: Vec<String>,
    #[serde(default = "yes")]
    pub enabled: bool,
}

fn default_stable_minutes() -> u32 {
    10
}

impl CopyRuleConfig {
    /// Every target the rule copies to, `target` and `targets` together, each once.
    pub fn target_names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = Vec::new();
        for name in std::iter::once(&self.target).chain(&self.targets) {
            if !name.is_empty() && !names.contains(&name.as_str()) {
                names.push(name);
            }
        }
        names
    }
}

/// What a rule has when only its name, target and schedule are given (as in a file).
impl Default for CopyRuleConfig {
    fn default() -> Self {
        CopyRuleConfig {
            name: String::new(),
            target: String::new(),
            targets: Vec::new(),
            schedule: String::new(),
            stable_minutes: default_stable_minutes(),
            min_age_days: 0,
            modalities: Vec::new(),
            calling_aes: Vec::new(),
            enabled: true,
        }
    }
}

/// Parses a cron expression, accepting the classic five fields (minute first) as well as the
/// cron crate's six or seven (seconds first). The error says what was expected.
pub fn parse_schedule(expression: &str) -> Result<cron::Schedule, String> {
    let fields = expression.split_whitespace().count();
    let full = if fields == 5 {
        format!("0 {expression}")
    } else {
        expression.to_string()
    };
    full.parse::<cron::Schedule>().map_err(|e| {
        format!("`{expression}` is not a cron expression ({e}); example: `0 */10 * * * *` (sec min hour day month weekday) or `*/10 * * * *`")
    })
}

impl Config {
    /// The NEARLINE targets with the documented default filled in.
    pub fn effective_targets(&self) -> Vec<TargetSpec> {
        if self.nearline.targets.is_empty() {
            vec![TargetSpec::filesystem(
                DEFAULT_TARGET,
                self.data_dir.join("nearline"),
            )]
        } else {
            self.nearline.targets.clone()
        }
    }

    /// This node's name in the jobs table.
    pub fn node_id(&self) -> String {
        if !self.lifecycle.node_id.is_empty() {
            return self.lifecycle.node_id.clone();
        }
        let host = rustix::system::uname()
            .nodename()
            .to_string_lossy()
            .into_owned();
        format!("{host}-{}", self.dicom.port)
    }

    pub(crate) fn validate_lifecycle(&self) -> Result<(), ConfigError> {
        let mut names = HashSet::new();
        for (i, target) in self.nearline.targets.iter().enumerate() {
            let key = format!("nearline.targets[{i}]");
            target.validate(&key)?;
            if !names.insert(target.name.as_str()) {
                return Err(ConfigError::key(
                    format!("{key}.name"),
                    format!("`{}` is used twice", target.name),
                ));
            }
        }
        let life = &self.lifecycle;
        if life.workers == 0 || life.workers > 64 {
            return Err(ConfigError::key(
                "lifecycle.workers",
                "must be between 1 and 64",
            ));
        }
        if life.lease_secs < 2 {
            return Err(ConfigError::key(
                "lifecycle.lease_secs",
                "must be at least 2",
            ));
        }
        if life.max_attempts == 0 {
            return Err(ConfigError::key(
                "lifecycle.max_attempts",
                "must be at least 1",
            ));
        }
        if life.poll_interval_ms == 0 {
            return Err(ConfigError::key(
                "lifecycle.poll_interval_ms",
                "must be at least 1",
            ));
        }
        if life.backoff_base_secs == 0 || life.backoff_max_secs < life.backoff_base_secs {
            return Err(ConfigError::key(
                "lifecycle.backoff_max_secs",
                "backoff_base_secs must be at least 1 and backoff_max_secs at least backoff_base_secs",
            ));
        }
        let target_count = self.effective_targets().len() as u32;
        // Targets added at run time count too; only a file that names its targets is checked.
        let configured = !self.nearline.targets.is_empty();
        if life.min_archived_copies == 0 || (configured && life.min_archived_copies > target_count)
        {
            return Err(ConfigError::key(
                "lifecycle.min_archived_copies",
                format!(
                    "must be between 1 and the number of NEARLINE targets ({target_count}): \
                     more could never be met and no ONLINE file would ever be deleted"
                ),
            ));
        }
        if !life.verify_schedule.is_empty() {
            parse_schedule(&life.verify_schedule)
                .map_err(|m| ConfigError::key("lifecycle.verify_schedule", m))?;
        }
        if !life.fixity_schedule.is_empty() {
            parse_schedule(&life.fixity_schedule)
                .map_err(|m| ConfigError::key("lifecycle.fixity_schedule", m))?;
        }
        if life.fixity_max_bytes_per_day.0 == 0 {
            return Err(ConfigError::key(
                "lifecycle.fixity_max_bytes_per_day",
                "must be more than 0 (disable the service with fixity_schedule = \"\")",
            ));
        }
        if !life.scavenge_schedule.is_empty() {
            parse_schedule(&life.scavenge_schedule)
                .map_err(|m| ConfigError::key("lifecycle.scavenge_schedule", m))?;
        }
        let targets: HashSet<String> = self
            .effective_targets()
            .into_iter()
            .map(|t| t.name)
            .collect();
        let mut rule_names = HashSet::new();
        for (i, rule) in life.copy_rules.iter().enumerate() {
            let key = format!("lifecycle.copy_rules[{i}]");
            if rule.name.is_empty() || !rule_names.insert(rule.name.as_str()) {
                return Err(ConfigError::key(
                    format!("{key}.name"),
                    "must be present and unique",
                ));
            }
            parse_schedule(&rule.schedule)
                .map_err(|m| ConfigError::key(format!("{key}.schedule"), m))?;
            if rule.target_names().is_empty() {
                return Err(ConfigError::key(
                    format!("{key}.target"),
                    "name a target (`target`, or `targets` for several)",
                ));
            }
            // Targets added at run time (`strata nearline add`) are checked when the rule runs.
            for name in rule.target_names() {
                if !targets.contains(name) && !self.nearline.targets.is_empty() {
                    return Err(ConfigError::key(
                        format!("{key}.target"),
                        format!("no target named `{name}` in nearline.targets"),
                    ));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn five_field_cron_is_accepted_and_bad_cron_is_explained() {
        assert!(parse_schedule("*/10 * * * *").is_ok());
        assert!(parse_schedule("0 */10 * * * *").is_ok());
        let error = parse_schedule("every day").expect_err("not cron");
        assert!(error.contains("every day"), "{error}");
        assert!(error.contains("example"), "{error}");
    }

    #[test]
    fn s3_target_needs_bucket_and_both_credential_files() {
        let mut spec = TargetSpec::filesystem("cloud", PathBuf::new());
        spec.kind = TargetKind::S3;
        let error = spec
            .validate("nearline.targets[0]")
            .expect_err("invalid")
            .to_string();
        assert!(error.contains("nearline.targets[0].bucket"), "{error}");
        spec.bucket = "b".into();
        spec.access_key_id_file = Some("/run/secrets/id".into());
        let error = spec
            .validate("nearline.targets[0]")
            .expect_err("invalid")
            .to_string();
        assert!(error.contains("secret_access_key_file"), "{error}");
    }

    #[test]
    fn more_copies_than_targets_and_unknown_rule_targets_are_config_errors() {
        let mut config = super::super::Config::default();
        config.nearline.targets = vec![
            TargetSpec::filesystem("a", "/a".into()),
            TargetSpec::filesystem("b", "/b".into()),
        ];
        config.lifecycle.min_archived_copies = 2;
        assert!(config.validate_lifecycle().is_ok());
        config.lifecycle.min_archived_copies = 3;
        let error = config.validate_lifecycle().expect_err("3 of 2").to_string();
        assert!(error.contains("lifecycle.min_archived_copies"), "{error}");
        config.lifecycle.min_archived_copies = 1;
        config.lifecycle.copy_rules = vec![CopyRuleConfig {
            name: "both".into(),
            targets: vec!["a".into(), "c".into()],
            schedule: "* * * * *".into(),
            ..Default::default()
        }];
        let error = config.validate_lifecycle().expect_err("no c").to_string();
        assert!(
            error.contains("copy_rules[0].target") && error.contains("`c`"),
            "{error}"
        );
        config.lifecycle.copy_rules[0].targets = vec!["a".into(), "b".into(), "a".into()];
        assert!(config.validate_lifecycle().is_ok());
        assert_eq!(
            config.lifecycle.copy_rules[0].target_names(),
            vec!["a", "b"]
        );
    }
}
