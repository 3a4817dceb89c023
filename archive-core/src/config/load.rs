//! Layering: defaults < TOML file < `STRATA_*` environment < command-line flags.
//!
//! Each layer is merged into one TOML tree before a single deserialization, so every layer gets
//! the same unknown-key and bad-value checks, and errors carry the key's dotted path.

use super::{Config, ConfigError};
use std::path::PathBuf;
use toml::Value;

/// Where configuration comes from. `env` is usually `std::env::vars()`; tests pass their own.
#[derive(Debug, Default, Clone)]
pub struct ConfigSources {
    pub file: Option<PathBuf>,
    pub env: Vec<(String, String)>,
    /// `(dotted.key, value)` pairs from command-line flags.
    pub overrides: Vec<(String, String)>,
}

const ENV_PREFIX: &str = "STRATA_";
/// Variables with the prefix that are not config keys: the file location, the log filter.
const ENV_NOT_KEYS: &[&str] = &["STRATA_CONFIG", "STRATA_LOG"];
/// Reserved for test and benchmark tooling (e.g. `STRATA_TEST_PG_URL`), never config keys.
const ENV_TOOLING_PREFIX: &str = "STRATA_TEST_";

pub fn load(sources: &ConfigSources) -> Result<Config, ConfigError> {
    let defaults = Value::try_from(Config::default())
        .map_err(|e| ConfigError::key("(defaults)", e.to_string()))?;
    let mut tree = Value::Table(Default::default());

    if let Some(path) = &sources.file {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.clone(),
            source,
        })?;
        tree = toml::from_str(&text).map_err(|e| ConfigError::Syntax {
            path: path.clone(),
            message: e.to_string(),
        })?;
    }

    for (name, value) in &sources.env {
        let Some(rest) = name.strip_prefix(ENV_PREFIX) else {
            continue;
        };
        if ENV_NOT_KEYS.contains(&name.as_str())
            || name.starts_with(ENV_TOOLING_PREFIX)
            || rest.is_empty()
        {
            continue;
        }
        let key = rest.to_ascii_lowercase().replace("__", ".");
        set_key(&mut tree, &defaults, &key, value, name)?;
    }
    for (key, value) in &sources.overrides {
        set_key(
            &mut tree,
            &defaults,
            key,
            value,
            &format!("--{}", key.replace(['.', '_'], "-")),
        )?;
    }

    let deserializer = tree;
    let config: Config = serde_path_to_error::deserialize(deserializer).map_err(|e| {
        let path = e.path().to_string();
        let key = if path == "." {
            "(top level)".to_string()
        } else {
            path
        };
        ConfigError::key(key, e.inner().to_string())
    })?;
    config.validate()?;
    Ok(config)
}

/// Keys whose default is "not set" (`Option`), settable from the environment and flags too.
const OPTIONAL_TEXT_KEYS: &[&str] = &["http.admin_token_file", "http.viewer_dir"];

/// Puts `raw` at `key`, converted to the type the default config has there, so that
/// `STRATA_DICOM__PORT=11113` becomes an integer and `STRATA_DICOM__AE_TITLE=123` stays text.
fn set_key(
    tree: &mut Value,
    defaults: &Value,
    key: &str,
    raw: &str,
    origin: &str,
) -> Result<(), ConfigError> {
    let parts: Vec<&str> = key.split('.').collect();
    let mut expected = Some(defaults);
    for part in &parts {
        expected = expected.and_then(|v| v.get(part));
    }
    // Optional keys are absent from the serialized defaults; they take text (a path).
    let text = Value::String(String::new());
    let expected = expected.or(OPTIONAL_TEXT_KEYS.contains(&key).then_some(&text));
    let Some(expected) = expected else {
        return Err(ConfigError::key(
            key,
            format!("unknown config key (set by {origin})"),
        ));
    };
    let value = match expected {
        Value::Integer(_) => raw.trim().parse::<i64>().map(Value::Integer).map_err(|_| {
            ConfigError::key(
                key,
                format!("`{raw}` is not a whole number (set by {origin})"),
            )
        })?,
        Value::Boolean(_) => match raw.trim().to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => Value::Boolean(true),
            "false" | "0" | "no" | "off" => Value::Boolean(false),
            _ => {
                return Err(ConfigError::key(
                    key,
                    format!("`{raw}` is not true/false (set by {origin})"),
                ))
            }
        },
        Value::Array(_) | Value::Table(_) => {
            let wrapped: toml::Table = toml::from_str(&format!("v = {raw}")).map_err(|e| {
                ConfigError::key(key, format!("not a TOML value (set by {origin}): {e}"))
            })?;
            wrapped
                .get("v")
                .cloned()
                .unwrap_or(Value::Array(Vec::new()))
        }
        _ => Value::String(raw.to_string()),
    };

    let mut node = tree;
    for part in &parts[..parts.len() - 1] {
        let table = node
            .as_table_mut()
            .ok_or_else(|| ConfigError::key(key, "is not a table in the config file"))?;
        node = table
            .entry(part.to_string())
            .or_insert_with(|| Value::Table(Default::default()));
    }
    let table = node
        .as_table_mut()
        .ok_or_else(|| ConfigError::key(key, "is not a table in the config file"))?;
    if let Some(last) = parts.last() {
        table.insert(last.to_string(), value);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{DuplicatePolicy, FilesystemMode};
    use std::io::Write;

    fn file_with(text: &str) -> tempfile::NamedTempFile {
        let mut file = tempfile::NamedTempFile::new().expect("temp file");
        file.write_all(text.as_bytes()).expect("write");
        file
    }

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_without_any_file() {
        let config = load(&ConfigSources::default()).expect("defaults load");
        assert_eq!(config.dicom.ae_title, "STRATA");
        assert_eq!(config.dicom.port, 11112);
        assert_eq!(config.http.listen, "127.0.0.1:8080");
        assert_eq!(
            config.effective_database_url(),
            "sqlite://./strata-data/index.db"
        );
        let filesystems = config.effective_filesystems();
        assert_eq!(filesystems.len(), 1);
        assert_eq!(filesystems[0].group, "ONLINE_STORAGE");
        assert_eq!(filesystems[0].path, PathBuf::from("./strata-data/online"));
        assert_eq!(filesystems[0].mode, FilesystemMode::Rw);
    }

    #[test]
    fn file_then_env_then_flags() {
        let file = file_with(
            "[dicom]\nport = 4242\nae_title = \"FROMFILE\"\nduplicate_policy = \"reject\"\n",
        );
        let only_file = ConfigSources {
            file: Some(file.path().into()),
            ..Default::default()
        };
        let config = load(&only_file).expect("file loads");
        assert_eq!(config.dicom.port, 4242);
        assert_eq!(config.dicom.ae_title, "FROMFILE");
        assert_eq!(config.dicom.duplicate_policy, DuplicatePolicy::Reject);

        let with_env = ConfigSources {
            env: env(&[
                ("STRATA_DICOM__PORT", "5000"),
                ("HOME", "/root"),
                ("STRATA_LOG", "debug"),
                ("STRATA_TEST_PG_URL", "postgres://x"),
            ]),
            ..only_file.clone()
        };
        let config = load(&with_env).expect("env loads");
        assert_eq!(config.dicom.port, 5000, "env overrides file");
        assert_eq!(config.dicom.ae_title, "FROMFILE", "file value kept");

        let with_flags = ConfigSources {
            overrides: vec![("dicom.port".into(), "6000".into())],
            ..with_env
        };
        assert_eq!(load(&with_flags).expect("flags load").dicom.port, 6000);
    }

    #[test]
    fn env_keeps_numeric_looking_text_as_text() {
        let sources = ConfigSources {
            env: env(&[("STRATA_DICOM__AE_TITLE", "1234")]),
            ..Default::default()
        };
        assert_eq!(load(&sources).expect("loads").dicom.ae_title, "1234");
    }

    #[test]
    fn env_sets_optional_paths() {
        let sources = ConfigSources {
            env: env(&[
                ("STRATA_HTTP__VIEWER_DIR", "/srv/ohif"),
                ("STRATA_HTTP__ADMIN_TOKEN_FILE", "/etc/strata/token"),
            ]),
            ..Default::default()
        };
        let config = load(&sources).expect("loads");
        assert_eq!(config.http.viewer_dir, Some(PathBuf::from("/srv/ohif")));
        assert_eq!(
            config.http.admin_token_file,
            Some(PathBuf::from("/etc/strata/token"))
        );
    }

    #[test]
    fn env_array_as_toml() {
        let sources = ConfigSources {
            env: env(&[(
                "STRATA_DICOM__PEERS",
                "[{ ae_title = \"CT1\", host = \"10.0.0.7\" }]",
            )]),
            ..Default::default()
        };
        let config = load(&sources).expect("loads");
        assert_eq!(config.dicom.peers.len(), 1);
        assert_eq!(config.dicom.peers[0].host, "10.0.0.7");
    }

    fn error_of(sources: ConfigSources) -> String {
        load(&sources).expect_err("must fail").to_string()
    }

    #[test]
    fn unknown_keys_are_named() {
        let file = file_with("[dicom]\nprot = 1\n");
        let message = error_of(ConfigSources {
            file: Some(file.path().into()),
            ..Default::default()
        });
        assert!(
            message.contains("dicom") && message.contains("prot"),
            "{message}"
        );

        let message = error_of(ConfigSources {
            env: env(&[("STRATA_DICOM__PROT", "1")]),
            ..Default::default()
        });
        assert!(
            message.contains("dicom.prot") && message.contains("STRATA_DICOM__PROT"),
            "{message}"
        );
    }

    #[test]
    fn bad_values_are_named() {
        let message = error_of(ConfigSources {
            env: env(&[("STRATA_DICOM__PORT", "eleven")]),
            ..Default::default()
        });
        assert!(message.contains("dicom.port"), "{message}");

        let file = file_with("[dicom]\nport = 70000\n");
        let message = error_of(ConfigSources {
            file: Some(file.path().into()),
            ..Default::default()
        });
        assert!(message.contains("dicom.port"), "{message}");

        let file = file_with("[dicom]\nduplicate_policy = \"sometimes\"\n");
        let message = error_of(ConfigSources {
            file: Some(file.path().into()),
            ..Default::default()
        });
        assert!(message.contains("dicom.duplicate_policy"), "{message}");

        let file = file_with("[[online.filesystems]]\npath = \"/x\"\nmin_free = \"3 parsecs\"\n");
        let message = error_of(ConfigSources {
            file: Some(file.path().into()),
            ..Default::default()
        });
        assert!(message.contains("online.filesystems"), "{message}");
    }

    #[test]
    fn validation_names_the_key() {
        let message = error_of(ConfigSources {
            overrides: vec![("dicom.ae_title".into(), "THIS_TITLE_IS_TOO_LONG".into())],
            ..Default::default()
        });
        assert!(message.contains("dicom.ae_title"), "{message}");

        let message = error_of(ConfigSources {
            overrides: vec![("database_url".into(), "mysql://x".into())],
            ..Default::default()
        });
        assert!(message.contains("database_url"), "{message}");
    }

    #[test]
    fn missing_file_is_a_clear_error() {
        let message = error_of(ConfigSources {
            file: Some("/nonexistent/strata.toml".into()),
            ..Default::default()
        });
        assert!(message.contains("/nonexistent/strata.toml"), "{message}");
    }
}
