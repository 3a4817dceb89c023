//! TLS settings for the DICOM and HTTP listeners and for C-MOVE sub-associations, built once
//! at start from PEM files. rustls with the aws-lc-rs provider (already in the tree for S3);
//! its defaults are BCP 195 (RFC 9325): TLS 1.2 and 1.3 only, ECDHE key exchange, AEAD
//! ciphers (AES-GCM, ChaCha20-Poly1305), no renegotiation, no compression.
//!
//! Errors name the file and the config key, never the key material.

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use std::path::Path;
use std::sync::Arc;

pub use rustls;

#[derive(Debug, thiserror::Error)]
#[error("config key `{key}`: {message}")]
pub struct TlsError {
    pub key: String,
    pub message: String,
}

fn error(key: &str, message: impl Into<String>) -> TlsError {
    TlsError {
        key: key.into(),
        message: message.into(),
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// A certificate chain (leaf first) from a PEM file.
fn certificates(path: &Path, key: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let chain = CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| {
            error(
                key,
                format!("cannot read certificates from {}: {e}", path.display()),
            )
        })?;
    if chain.is_empty() {
        return Err(error(
            key,
            format!("{} holds no certificate", path.display()),
        ));
    }
    Ok(chain)
}

fn private_key(path: &Path, key: &str) -> Result<PrivateKeyDer<'static>, TlsError> {
    // The error of the PEM reader says what it expected, never what it read.
    PrivateKeyDer::from_pem_file(path).map_err(|e| {
        error(
            key,
            format!("cannot read a private key from {}: {e}", path.display()),
        )
    })
}

fn roots(path: &Path, key: &str) -> Result<Arc<RootCertStore>, TlsError> {
    let mut store = RootCertStore::empty();
    for certificate in certificates(path, key)? {
        store
            .add(certificate)
            .map_err(|e| error(key, format!("{}: {e}", path.display())))?;
    }
    Ok(Arc::new(store))
}

/// Where a listener's TLS material comes from, with the config keys to name in errors.
pub struct ServerTls<'a> {
    pub cert: &'a Path,
    pub key: &'a Path,
    /// Only clients with a certificate signed by one of these (mutual TLS).
    pub client_ca: Option<&'a Path>,
    /// The config section, e.g. `dicom.tls` or `http`.
    pub section: &'a str,
    pub cert_key: &'a str,
    pub key_key: &'a str,
}

/// A listener's configuration.
pub fn server_config(tls: &ServerTls<'_>) -> Result<Arc<ServerConfig>, TlsError> {
    let section = tls.section;
    let chain = certificates(tls.cert, &format!("{section}.{}", tls.cert_key))?;
    let key = private_key(tls.key, &format!("{section}.{}", tls.key_key))?;
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| error(section, e.to_string()))?;
    let builder = match tls.client_ca {
        Some(ca) => {
            let ca_key = format!("{section}.client_ca");
            let verifier =
                WebPkiClientVerifier::builder_with_provider(roots(ca, &ca_key)?, provider())
                    .build()
                    .map_err(|e| error(&ca_key, e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let config = builder.with_single_cert(chain, key).map_err(|e| {
        error(
            &format!("{section}.{}", tls.key_key),
            format!("the key does not fit the certificate: {e}"),
        )
    })?;
    Ok(Arc::new(config))
}

/// The client side of TLS associations we open (C-MOVE to peers marked `tls`): peers'
/// certificates must chain to `trust`; ours (`identity`) is shown to peers that ask for one.
pub fn client_config(
    trust: &Path,
    trust_key: &str,
    identity: Option<(&Path, &Path)>,
    section: &str,
) -> Result<Arc<ClientConfig>, TlsError> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| error(section, e.to_string()))?
        .with_root_certificates(roots(trust, trust_key)?);
    let config = match identity {
        Some((cert, key)) => builder
            .with_client_auth_cert(
                certificates(cert, &format!("{section}.cert"))?,
                private_key(key, &format!("{section}.key"))?,
            )
            .map_err(|e| error(&format!("{section}.key"), e.to_string()))?,
        None => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}
