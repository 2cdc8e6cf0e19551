//! TLS for the tests: certificates made with `openssl`, and a raw TLS client.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

/// A CA and a server certificate it signed, for localhost, 127.0.0.1 and ::1.
pub struct Certificates {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

fn openssl(dir: &Path, args: &[&str]) {
    let output = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run openssl (the TLS tests need it)");
    assert!(
        output.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

impl Certificates {
    /// Makes a new CA and server certificate in `dir`, files named after `name`.
    pub fn generate(dir: &Path, name: &str) -> Certificates {
        let file = |suffix: &str| format!("{name}-{suffix}");
        openssl(
            dir,
            &[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-days",
                "2",
                "-keyout",
                &file("ca.key"),
                "-out",
                &file("ca.pem"),
                "-subj",
                "/CN=test CA",
            ],
        );
        openssl(
            dir,
            &[
                "req",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-keyout",
                &file("server.key"),
                "-out",
                &file("server.csr"),
                "-subj",
                "/CN=localhost",
            ],
        );
        std::fs::write(
            dir.join(file("server.ext")),
            "subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1\nbasicConstraints=CA:FALSE\n",
        )
        .unwrap();
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &file("server.csr"),
                "-CA",
                &file("ca.pem"),
                "-CAkey",
                &file("ca.key"),
                "-CAcreateserial",
                "-days",
                "2",
                "-extfile",
                &file("server.ext"),
                "-out",
                &file("server.pem"),
            ],
        );
        Certificates {
            ca: dir.join(file("ca.pem")),
            cert: dir.join(file("server.pem")),
            key: dir.join(file("server.key")),
        }
    }

    /// The server settings that make it speak TLS with these certificates.
    pub fn server_env(&self) -> [(&'static str, String); 2] {
        [
            ("SERVER_TLS_CERT", self.cert.display().to_string()),
            ("SERVER_TLS_KEY", self.key.display().to_string()),
        ]
    }
}

/// A TLS stream to the server at 127.0.0.1:`port`, trusting `ca`.
pub type TlsStream = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

pub fn tls_connect(port: u16, ca: &Path) -> TlsStream {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for certificate in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(certificate.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let session = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    rustls::StreamOwned::new(session, super::connect(port))
}
