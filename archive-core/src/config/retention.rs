//! Retention rules (which ONLINE studies may be deleted, and when) and the retrieve cache.

use super::{parse_schedule, ByteSize, Config, ConfigError, DEFAULT_ONLINE_GROUP};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::path::PathBuf;

/// A retention rule. Whatever it says, a study's ONLINE files are only deleted when every
/// instance of it has an ARCHIVED (read back and verified) NEARLINE copy.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RetentionRuleConfig {
    pub name: String,
    /// The ONLINE file-system group whose studies the rule frees.
    #[serde(default = "default_group")]
    pub group: String,
    /// Cron expression: when the deletion service applies the rule.
    pub schedule: String,
    /// Delete studies not accessed (received or retrieved) for this many days.
    #[serde(default)]
    pub not_accessed_days: Option<u32>,
    /// When a filesystem of the group has less free space than this (percent)…
    #[serde(default)]
    pub free_below_percent: Option<u8>,
    /// …delete least recently accessed studies until it has this much (percent).
    #[serde(default)]
    pub free_target_percent: Option<u8>,
    /// Never studies first received less than this many days ago.
    #[serde(default)]
    pub min_study_age_days: u32,
    /// Only studies with a series of one of these modalities; empty means any.
    #[serde(default)]
    pub modalities: Vec<String>,
    /// Only studies with a series sent by one of these calling AE titles; empty means any.
    #[serde(default)]
    pub calling_aes: Vec<String>,
    /// Only studies whose verified copies are on this target; empty means any target.
    #[serde(default)]
    pub require_target: String,
    #[serde(default = "yes")]
    pub enabled: bool,
}

/// What a rule has when only its name and schedule are given (as in a file).
impl Default for RetentionRuleConfig {
    fn default() -> Self {
        RetentionRuleConfig {
            name: String::new(),
            group: default_group(),
            schedule: String::new(),
            not_accessed_days: None,
            free_below_percent: None,
            free_target_percent: None,
            min_study_age_days: 0,
            modalities: Vec::new(),
            calling_aes: Vec::new(),
            require_target: String::new(),
            enabled: true,
        }
    }
}

fn default_group() -> String {
    DEFAULT_ONLINE_GROUP.into()
}
fn yes() -> bool {
    true
}

impl RetentionRuleConfig {
    /// Checks one rule; `key` says where it came from (e.g. `lifecycle.retention_rules[0]`).
    pub fn validate(&self, key: &str) -> Result<(), ConfigError> {
        if self.name.is_empty() {
            return Err(ConfigError::key(format!("{key}.name"), "must not be empty"));
        }
        parse_schedule(&self.schedule)
            .map_err(|m| ConfigError::key(format!("{key}.schedule"), m))?;
        if self.not_accessed_days.is_none() && self.free_below_percent.is_none() {
            return Err(ConfigError::key(
                format!("{key}.not_accessed_days"),
                "give not_accessed_days, free_below_percent, or both: otherwise the rule selects nothing",
            ));
        }
        match (self.free_below_percent, self.free_target_percent) {
            (Some(below), Some(target)) if (1..=99).contains(&below) && below < target && target <= 99 => {}
            (Some(_), _) => {
                return Err(ConfigError::key(
                    format!("{key}.free_target_percent"),
                    "with free_below_percent, give free_target_percent; both 1-99 and target above below",
                ))
            }
            (None, Some(_)) => {
                return Err(ConfigError::key(
                    format!("{key}.free_below_percent"),
                    "free_target_percent needs free_below_percent",
                ))
            }
            (None, None) => {}
        }
        Ok(())
    }
}

impl Config {
    /// Where fetched packs are unpacked for retrieval.
    pub fn effective_cache_dir(&self) -> PathBuf {
        self.nearline
            .cache_dir
            .clone()
            .unwrap_or_else(|| self.data_dir.join("retrieve-cache"))
    }

    pub(crate) fn validate_retention(&self) -> Result<(), ConfigError> {
        let mut names = HashSet::new();
        for (i, rule) in self.lifecycle.retention_rules.iter().enumerate() {
            let key = format!("lifecycle.retention_rules[{i}]");
            rule.validate(&key)?;
            if !names.insert(rule.name.as_str()) {
                return Err(ConfigError::key(
                    format!("{key}.name"),
                    format!("`{}` is used twice", rule.name),
                ));
            }
        }
        if self.nearline.cache_size.0 < 1 << 20 {
            return Err(ConfigError::key(
                "nearline.cache_size",
                "must be at least 1MiB",
            ));
        }
        Ok(())
    }
}

pub(crate) fn default_cache_size() -> ByteSize {
    ByteSize(10 << 30)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule() -> RetentionRuleConfig {
        RetentionRuleConfig {
            name: "old".into(),
            schedule: "0 0 2 * * *".into(),
            not_accessed_days: Some(90),
            ..RetentionRuleConfig::default()
        }
    }

    #[test]
    fn a_rule_needs_a_criterion_and_sane_watermarks() {
        assert!(rule().validate("r").is_ok());
        let none = RetentionRuleConfig {
            not_accessed_days: None,
            ..rule()
        };
        assert!(none
            .validate("r")
            .expect_err("no criterion")
            .to_string()
            .contains("r.not_accessed_days"));
        let upside_down = RetentionRuleConfig {
            free_below_percent: Some(30),
            free_target_percent: Some(20),
            ..rule()
        };
        assert!(upside_down
            .validate("r")
            .expect_err("bad")
            .to_string()
            .contains("r.free_target_percent"));
        let bad_cron = RetentionRuleConfig {
            schedule: "nightly".into(),
            ..rule()
        };
        assert!(bad_cron
            .validate("r")
            .expect_err("bad")
            .to_string()
            .contains("r.schedule"));
    }
}
