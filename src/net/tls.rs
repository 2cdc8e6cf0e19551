//! TLS settings: the server's certificate and key, the client's trusted CA.
//!
//! rustls with its `ring` provider does the cryptography; this module only
//! reads the PEM files the user names and builds rustls's configurations, with
//! errors that name the setting and the file.

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// What is wrong with the TLS settings.
#[derive(Debug)]
pub enum TlsError {
    /// A PEM file could not be read or holds nothing usable.
    File {
        variable: &'static str,
        path: PathBuf,
        reason: String,
    },
    /// rustls refused the certificate and key together.
    Config { reason: String },
    /// The name to verify the server's certificate against is not a DNS name or an IP.
    ServerName { name: String },
}

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TlsError::File {
                variable,
                path,
                reason,
            } => write!(f, "{variable}={}: {reason}", crate::text::shown(path)),
            TlsError::Config { reason } => write!(
                f,
                "the certificate and key (SERVER_TLS_CERT, SERVER_TLS_KEY) do not make a TLS \
                 server: {reason}"
            ),
            TlsError::ServerName { name } => write!(
                f,
                "{name:?} is not a host name or IP address to check the server's certificate \
                 against; set CLI_TLS_SERVER_NAME"
            ),
        }
    }
}

impl std::error::Error for TlsError {}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn certificates(
    variable: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let error = |reason: String| TlsError::File {
        variable,
        path: path.to_path_buf(),
        reason,
    };
    let certificates: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .map_err(|e| error(format!("could not read PEM certificates: {e}")))?
        .collect::<Result<_, _>>()
        .map_err(|e| error(format!("not a PEM certificate file: {e}")))?;
    if certificates.is_empty() {
        return Err(error("holds no PEM certificate".to_string()));
    }
    Ok(certificates)
}

/// The server's TLS configuration from its certificate chain and key (PEM files).
pub(crate) fn server_config(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, TlsError> {
    let chain = certificates("SERVER_TLS_CERT", cert)?;
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| TlsError::File {
        variable: "SERVER_TLS_KEY",
        path: key.to_path_buf(),
        reason: format!("not a PEM private key: {e}"),
    })?;
    let config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config {
            reason: e.to_string(),
        })?
        .with_no_client_auth()
        .with_single_cert(chain, key_der)
        .map_err(|e| TlsError::Config {
            reason: e.to_string(),
        })?;
    Ok(Arc::new(config))
}

/// The client's TLS configuration: it trusts the certificates in `ca` (a CA,
/// or the server's own self-signed certificate) and nothing else.
pub(crate) fn client_config(ca: &Path) -> Result<Arc<ClientConfig>, TlsError> {
    let mut roots = RootCertStore::empty();
    for certificate in certificates("CLI_TLS_CA", ca)? {
        roots.add(certificate).map_err(|e| TlsError::File {
            variable: "CLI_TLS_CA",
            path: ca.to_path_buf(),
            reason: format!("not a usable CA certificate: {e}"),
        })?;
    }
    let config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config {
            reason: e.to_string(),
        })?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// The name the server's certificate must match: a DNS name or an IP address.
pub(crate) fn server_name(name: &str) -> Result<ServerName<'static>, TlsError> {
    ServerName::try_from(name.to_string()).map_err(|_| TlsError::ServerName {
        name: name.to_string(),
    })
}
