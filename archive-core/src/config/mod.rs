//! Strata's configuration: one serde struct, read from a TOML file, then overridden by
//! `STRATA_*` environment variables, then by command-line flags (in that order).
//!
//! Every error names the key that caused it, so an admin can fix the file without reading code.

mod byte_size;
mod lifecycle;
mod load;
mod retention;
mod validate;

pub use byte_size::ByteSize;
pub use lifecycle::{
    parse_schedule, CopyRuleConfig, LifecycleConfig, NearlineConfig, TargetKind, TargetSpec,
    DEFAULT_TARGET,
};
pub use load::{load, ConfigSources};
pub use retention::RetentionRuleConfig;
pub use validate::check_ae_title;

use serde::{Deserialize, Serialize};
use std::fmt;
use std::path::PathBuf;

/// The name of the file-system group new objects go to unless configured otherwise.
pub const DEFAULT_ONLINE_GROUP: &str = "ONLINE_STORAGE";

#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Root of everything Strata keeps locally when paths are not given explicitly.
    pub data_dir: PathBuf,
    /// `sqlite://…` or `postgres://…`; empty means `sqlite://<data_dir>/index.db`.
    pub database_url: String,
    pub dicom: DicomConfig,
    pub http: HttpConfig,
    pub online: OnlineConfig,
    pub nearline: NearlineConfig,
    pub lifecycle: LifecycleConfig,
    pub audit: AuditConfig,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    /// Also send every audit event to an IHE ATNA audit record repository:
    /// `udp://host:port` (RFC 5424 syslog over UDP, DICOM audit message XML). Empty: off
    /// (events are always kept in the index).
    pub syslog: String,
}

impl AuditConfig {
    /// `host:port` of the syslog receiver, if one is configured.
    pub fn syslog_address(&self) -> Option<&str> {
        self.syslog.strip_prefix("udp://")
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DicomConfig {
    pub ae_title: String,
    pub bind: String,
    pub port: u16,
    /// Largest P-DATA PDU we accept (and announce in A-ASSOCIATE-AC).
    pub max_pdu: u32,
    /// Associations served at once; further ones are rejected (transient).
    pub max_associations: u32,
    /// Seconds without a PDU before an association is aborted.
    pub idle_timeout_secs: u64,
    /// ARTIM timer (PS3.8 §9.1.5): seconds a new connection has to deliver its complete
    /// A-ASSOCIATE-RQ, and seconds we wait for the peer's A-RELEASE-RP or close after we
    /// release or abort.
    pub artim_timeout_secs: u64,
    /// Connections still negotiating (no association yet) from hosts that are neither loopback
    /// nor a listed peer's; further ones are closed at once. They do not take association slots.
    pub max_pending: u32,
    /// Connections still negotiating from one such host.
    pub max_pending_per_host: u32,
    pub duplicate_policy: DuplicatePolicy,
    /// Most matches one C-FIND returns; beyond it the answer ends with 0xA700 and says so.
    pub max_find_results: u32,
    /// Accept calling AE titles that are not in `peers` when they connect from loopback.
    pub accept_unknown_from_loopback: bool,
    pub peers: Vec<AllowedPeer>,
    pub tls: DicomTlsConfig,
}

/// DICOM over TLS (PS3.15 B.1 / BCP 195): a second listener, and TLS on C-MOVE
/// sub-associations to peers marked `tls`. Off unless `cert` and `key` are given.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct DicomTlsConfig {
    pub port: u16,
    /// Our certificate chain (PEM, leaf first).
    pub cert: Option<PathBuf>,
    /// Its private key (PEM); read once at start, never logged.
    pub key: Option<PathBuf>,
    /// CA certificates (PEM): when set, only clients with a certificate they signed may
    /// connect to the TLS port (mutual TLS).
    pub client_ca: Option<PathBuf>,
    /// CA certificates (PEM) that peers' certificates must chain to when Strata connects to
    /// them (C-MOVE to peers marked `tls`); default `client_ca`.
    pub peer_ca: Option<PathBuf>,
}

impl Default for DicomTlsConfig {
    fn default() -> Self {
        DicomTlsConfig {
            port: 2762,
            cert: None,
            key: None,
            client_ca: None,
            peer_ca: None,
        }
    }
}

impl DicomTlsConfig {
    /// Certificate and key, when TLS is on.
    pub fn identity(&self) -> Option<(&std::path::Path, &std::path::Path)> {
        Some((self.cert.as_deref()?, self.key.as_deref()?))
    }

    /// The CA file peers' certificates are checked against.
    pub fn effective_peer_ca(&self) -> Option<&std::path::Path> {
        self.peer_ca.as_deref().or(self.client_ca.as_deref())
    }
}

/// A calling AE title and the host it may connect from (`*` for any host).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct AllowedPeer {
    pub ae_title: String,
    pub host: String,
}

/// What to do when a SOP Instance UID arrives that is already stored.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "kebab-case")]
pub enum DuplicatePolicy {
    /// Keep the stored copy, discard the new one, answer success.
    #[default]
    KeepFirst,
    /// Store the new copy in place of the old one.
    Replace,
    /// Refuse the new copy with status 0x0111 (duplicate SOP instance).
    Reject,
    /// Give the new copy to an instance that has no ONLINE file (one held only in a pack),
    /// keep the stored copy otherwise. Not a configuration choice (`dicom.duplicate_policy`
    /// cannot name it): imports and `rebuild-index` use it for the files they find.
    #[serde(skip)]
    FillMissing,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    pub listen: String,
    /// File holding the API token (`Authorization: Bearer …`); default `<data_dir>/admin-token`,
    /// created with a random token (printed once) on first start.
    pub admin_token_file: Option<PathBuf>,
    /// Seconds a client has to send a complete request header, counted from the moment the
    /// connection is ready for a request; an idle kept-alive connection is closed after it too.
    pub header_timeout_secs: u64,
    /// Connections open at once from hosts other than loopback; further ones are closed.
    pub max_connections: u32,
    /// Connections open at once from one host other than loopback (a reverse proxy on this
    /// machine connects from loopback and is not capped by this).
    pub max_connections_per_client: u32,
    /// Largest request body read into memory (JSON, forms); larger ones get 413.
    pub max_body_bytes: ByteSize,
    /// Where DICOMweb (QIDO-RS, WADO-RS, STOW-RS) is served.
    pub dicomweb_base: String,
    /// Largest STOW-RS request (all parts together); parts stream to disk, never to memory.
    pub stow_max_bytes: ByteSize,
    /// Files each holding one read-only token: it may use the GET routes of DICOMweb only.
    pub viewer_token_files: Vec<PathBuf>,
    /// Origins (`https://viewer.example.org`) whose pages may call DICOMweb from a browser.
    pub cors_origins: Vec<String>,
    /// An OHIF Viewer build (scripts/install-viewer.sh) to serve at `/viewer/`.
    pub viewer_dir: Option<PathBuf>,
    /// HTTPS: certificate chain (PEM, leaf first) and private key (PEM). Both or neither.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OnlineConfig {
    /// The file-system group C-STORE writes to.
    pub store_group: String,
    /// Empty means one read-write filesystem `<data_dir>/online` in `store_group`.
    pub filesystems: Vec<FilesystemConfig>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct FilesystemConfig {
    #[serde(default = "default_group")]
    pub group: String,
    pub path: PathBuf,
    #[serde(default)]
    pub mode: FilesystemMode,
    /// Below this much free space the filesystem takes no new objects.
    #[serde(default = "default_min_free")]
    pub min_free: ByteSize,
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum FilesystemMode {
    #[default]
    Rw,
    Ro,
}

impl FilesystemMode {
    pub fn as_str(self) -> &'static str {
        match self {
            FilesystemMode::Rw => "rw",
            FilesystemMode::Ro => "ro",
        }
    }
}

fn default_group() -> String {
    DEFAULT_ONLINE_GROUP.to_string()
}

fn default_min_free() -> ByteSize {
    ByteSize(1 << 30)
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("./strata-data"),
            database_url: String::new(),
            dicom: DicomConfig::default(),
            http: HttpConfig::default(),
            online: OnlineConfig::default(),
            nearline: NearlineConfig::default(),
            lifecycle: LifecycleConfig::default(),
            audit: AuditConfig::default(),
        }
    }
}

impl Default for DicomConfig {
    fn default() -> Self {
        DicomConfig {
            ae_title: "STRATA".into(),
            bind: "0.0.0.0".into(),
            port: 11112,
            max_pdu: 65536,
            max_associations: 64,
            idle_timeout_secs: 120,
            artim_timeout_secs: 30,
            max_pending: 128,
            max_pending_per_host: 8,
            duplicate_policy: DuplicatePolicy::KeepFirst,
            max_find_results: 2000,
            accept_unknown_from_loopback: true,
            peers: Vec::new(),
            tls: DicomTlsConfig::default(),
        }
    }
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: "127.0.0.1:8080".into(),
            admin_token_file: None,
            header_timeout_secs: 10,
            max_connections: 1024,
            max_connections_per_client: 64,
            max_body_bytes: ByteSize(1 << 20),
            dicomweb_base: "/dicom-web".into(),
            stow_max_bytes: ByteSize(4 << 30),
            viewer_token_files: Vec::new(),
            cors_origins: Vec::new(),
            viewer_dir: None,
            tls_cert: None,
            tls_key: None,
        }
    }
}

impl Default for OnlineConfig {
    fn default() -> Self {
        OnlineConfig {
            store_group: DEFAULT_ONLINE_GROUP.into(),
            filesystems: Vec::new(),
        }
    }
}

impl Config {
    /// The database URL with the documented default filled in.
    pub fn effective_database_url(&self) -> String {
        if self.database_url.is_empty() {
            format!("sqlite://{}/index.db", self.data_dir.display())
        } else {
            self.database_url.clone()
        }
    }

    /// The ONLINE filesystems with the documented default filled in.
    pub fn effective_filesystems(&self) -> Vec<FilesystemConfig> {
        if self.online.filesystems.is_empty() {
            vec![FilesystemConfig {
                group: self.online.store_group.clone(),
                path: self.data_dir.join("online"),
                mode: FilesystemMode::Rw,
                min_free: default_min_free(),
            }]
        } else {
            self.online.filesystems.clone()
        }
    }
}

/// `Debug` hides the database password: configs end up in logs and bug reports.
impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("data_dir", &self.data_dir)
            .field("database_url", &redact_url(&self.database_url))
            .field("dicom", &self.dicom)
            .field("http", &self.http)
            .field("online", &self.online)
            .field("nearline", &self.nearline)
            .field("lifecycle", &self.lifecycle)
            .field("audit", &self.audit)
            .finish()
    }
}

/// Replaces the password of a `scheme://user:password@host/…` URL with `***`.
pub fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_string();
    };
    let rest = &url[scheme_end + 3..];
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    match (authority.rfind('@'), authority.find(':')) {
        (Some(at), Some(colon)) if colon < at => format!(
            "{}{}:***{}",
            &url[..scheme_end + 3],
            &authority[..colon],
            &rest[at..]
        ),
        _ => url.to_string(),
    }
}

/// A configuration problem, always naming the key (or file) it comes from.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path} is not valid TOML: {message}")]
    Syntax { path: PathBuf, message: String },
    #[error("config key `{key}`: {message}")]
    Key { key: String, message: String },
}

impl ConfigError {
    pub(crate) fn key(key: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError::Key {
            key: key.into(),
            message: message.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_password_but_keeps_user_and_host() {
        assert_eq!(
            redact_url("postgres://strata:s3cret@db.example:5432/pacs"),
            "postgres://strata:***@db.example:5432/pacs"
        );
        assert_eq!(
            redact_url("sqlite://./strata-data/index.db"),
            "sqlite://./strata-data/index.db"
        );
        assert_eq!(
            redact_url("postgres://root@127.0.0.1/x"),
            "postgres://root@127.0.0.1/x"
        );
    }

    #[test]
    fn debug_output_never_contains_the_password() {
        let config = Config {
            database_url: "postgres://u:hunter2@h/db".into(),
            ..Config::default()
        };
        let shown = format!("{config:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("postgres://u:***@h/db"));
    }
}
