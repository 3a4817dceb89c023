//! Checks that serde cannot express: ranges, AE title rules, references between keys.

use super::{Config, ConfigError, FilesystemMode};
use std::collections::HashSet;
use std::net::SocketAddr;

/// PS3.8 limits: an AE title is 1–16 characters of the default repertoire, no backslash.
pub fn check_ae_title(title: &str) -> Result<(), String> {
    let trimmed = title.trim();
    if trimmed.is_empty() || title.len() > 16 {
        return Err(format!("`{title}` must be 1 to 16 characters"));
    }
    if title
        .chars()
        .any(|c| !c.is_ascii() || c.is_ascii_control() || c == '\\')
    {
        return Err(format!(
            "`{title}` may only contain printable ASCII characters without backslash"
        ));
    }
    Ok(())
}

/// A certificate and its key are given together or not at all; the error names the missing one.
fn both_or_neither<T>(
    first: &Option<T>,
    first_key: &str,
    second: &Option<T>,
    second_key: &str,
) -> Result<(), ConfigError> {
    match (first, second) {
        (Some(_), None) => Err(ConfigError::key(
            second_key,
            format!("is needed with {first_key}"),
        )),
        (None, Some(_)) => Err(ConfigError::key(
            first_key,
            format!("is needed with {second_key}"),
        )),
        _ => Ok(()),
    }
}

impl Config {
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        let url = self.effective_database_url();
        if !(url.starts_with("sqlite:")
            || url.starts_with("postgres://")
            || url.starts_with("postgresql://"))
        {
            return Err(ConfigError::key(
                "database_url",
                "must start with sqlite:// or postgres://",
            ));
        }
        if !self.audit.syslog.is_empty() {
            let address = self.audit.syslog_address().ok_or_else(|| {
                ConfigError::key(
                    "audit.syslog",
                    "must be udp://host:port (or empty for none)",
                )
            })?;
            if address
                .rsplit_once(':')
                .is_none_or(|(host, port)| host.is_empty() || port.parse::<u16>().is_err())
            {
                return Err(ConfigError::key(
                    "audit.syslog",
                    format!("`{address}` is not host:port"),
                ));
            }
        }
        let tls = &self.dicom.tls;
        both_or_neither(&tls.cert, "dicom.tls.cert", &tls.key, "dicom.tls.key")?;
        if tls.identity().is_some() && (tls.port == 0 || tls.port == self.dicom.port) {
            return Err(ConfigError::key(
                "dicom.tls.port",
                "must be a port other than dicom.port",
            ));
        }
        if tls.identity().is_none() && (tls.client_ca.is_some() || tls.peer_ca.is_some()) {
            return Err(ConfigError::key(
                "dicom.tls.cert",
                "is needed when dicom.tls.client_ca or peer_ca is set",
            ));
        }
        let http = &self.http;
        both_or_neither(
            &http.tls_cert,
            "http.tls_cert",
            &http.tls_key,
            "http.tls_key",
        )?;
        check_ae_title(&self.dicom.ae_title).map_err(|m| ConfigError::key("dicom.ae_title", m))?;
        if self.dicom.port == 0 {
            return Err(ConfigError::key(
                "dicom.port",
                "must be between 1 and 65535",
            ));
        }
        if !(4096..=4_194_304).contains(&self.dicom.max_pdu) {
            return Err(ConfigError::key(
                "dicom.max_pdu",
                "must be between 4096 and 4194304 bytes",
            ));
        }
        if self.dicom.max_associations == 0 {
            return Err(ConfigError::key(
                "dicom.max_associations",
                "must be at least 1",
            ));
        }
        if self.dicom.max_find_results == 0 {
            return Err(ConfigError::key(
                "dicom.max_find_results",
                "must be at least 1",
            ));
        }
        if self.dicom.idle_timeout_secs == 0 {
            return Err(ConfigError::key(
                "dicom.idle_timeout_secs",
                "must be at least 1",
            ));
        }
        for (key, value) in [
            ("dicom.artim_timeout_secs", self.dicom.artim_timeout_secs),
            ("dicom.max_pending", self.dicom.max_pending.into()),
            (
                "dicom.max_pending_per_host",
                self.dicom.max_pending_per_host.into(),
            ),
            ("http.header_timeout_secs", self.http.header_timeout_secs),
            ("http.max_connections", self.http.max_connections.into()),
            (
                "http.max_connections_per_client",
                self.http.max_connections_per_client.into(),
            ),
            ("http.max_body_bytes", self.http.max_body_bytes.0),
            ("http.stow_max_bytes", self.http.stow_max_bytes.0),
        ] {
            if value == 0 {
                return Err(ConfigError::key(key, "must be at least 1"));
            }
        }
        let base = &self.http.dicomweb_base;
        if !base.starts_with('/')
            || base.ends_with('/')
            || base.contains(['?', '#', ' '])
            || ["/api", "/ui", "/viewer", "/wado", "/metrics", "/healthz"]
                .iter()
                .any(|taken| base == taken || base.starts_with(&format!("{taken}/")))
        {
            return Err(ConfigError::key(
                "http.dicomweb_base",
                format!("`{base}` must be a path like /dicom-web: starting with /, not ending with /, and not under /api, /ui, /viewer, /wado, /metrics or /healthz"),
            ));
        }
        for (i, origin) in self.http.cors_origins.iter().enumerate() {
            if !(origin.starts_with("http://") || origin.starts_with("https://"))
                || origin.trim_end_matches('/').matches('/').count() != 2
            {
                return Err(ConfigError::key(
                    format!("http.cors_origins[{i}]"),
                    format!("`{origin}` must be an origin like https://viewer.example.org (scheme, host, optional port; no path)"),
                ));
            }
        }
        for (i, peer) in self.dicom.peers.iter().enumerate() {
            check_ae_title(&peer.ae_title)
                .map_err(|m| ConfigError::key(format!("dicom.peers[{i}].ae_title"), m))?;
            if peer.host != "*" && peer.host.parse::<std::net::IpAddr>().is_err() {
                return Err(ConfigError::key(
                    format!("dicom.peers[{i}].host"),
                    format!("`{}` must be an IP address or `*`", peer.host),
                ));
            }
        }
        if self.http.listen.parse::<SocketAddr>().is_err() {
            return Err(ConfigError::key(
                "http.listen",
                format!(
                    "`{}` is not an address like 127.0.0.1:8080",
                    self.http.listen
                ),
            ));
        }
        self.validate_filesystems()?;
        self.validate_lifecycle()?;
        self.validate_retention()
    }

    fn validate_filesystems(&self) -> Result<(), ConfigError> {
        let filesystems = self.effective_filesystems();
        let mut seen = HashSet::new();
        for (i, fs) in filesystems.iter().enumerate() {
            if fs.path.as_os_str().is_empty() {
                return Err(ConfigError::key(
                    format!("online.filesystems[{i}].path"),
                    "must not be empty",
                ));
            }
            if !seen.insert(&fs.path) {
                return Err(ConfigError::key(
                    format!("online.filesystems[{i}].path"),
                    format!("{} is listed twice", fs.path.display()),
                ));
            }
        }
        let writable = filesystems
            .iter()
            .any(|fs| fs.group == self.online.store_group && fs.mode == FilesystemMode::Rw);
        if !writable {
            return Err(ConfigError::key(
                "online.store_group",
                format!(
                    "group `{}` has no read-write filesystem in online.filesystems",
                    self.online.store_group
                ),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::check_ae_title;

    #[test]
    fn ae_title_rules() {
        assert!(check_ae_title("STRATA").is_ok());
        assert!(check_ae_title("").is_err());
        assert!(check_ae_title("   ").is_err());
        assert!(check_ae_title("ABCDEFGHIJKLMNOPQ").is_err());
        assert!(check_ae_title("BAD\\AE").is_err());
    }
}
