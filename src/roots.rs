//! Trust anchors for the connections ponte opens itself (MQTT bridges, webhooks): the CA
//! certificates of a configured `ca_file`, or the system's roots (rustls-native-certs:
//! `SSL_CERT_FILE`/`SSL_CERT_DIR`, else the platform store), read once per process.

use std::path::Path;
use std::sync::OnceLock;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;

/// The certificates to trust: every one in `ca_file` (PEM), or the system's roots when
/// `None`. An unreadable file, or one without a certificate, is an error naming it.
pub fn load(ca_file: Option<&Path>) -> Result<Vec<CertificateDer<'static>>, String> {
    match ca_file {
        Some(path) => {
            let certs = CertificateDer::pem_file_iter(path)
                .map_err(|e| format!("ca_file {}: {e}", path.display()))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("ca_file {}: {e}", path.display()))?;
            if certs.is_empty() {
                return Err(format!(
                    "ca_file {}: no PEM certificate in it",
                    path.display()
                ));
            }
            Ok(certs)
        }
        None => system(),
    }
}

/// The system's roots, loaded on first use.
fn system() -> Result<Vec<CertificateDer<'static>>, String> {
    static SYSTEM: OnceLock<Result<Vec<CertificateDer<'static>>, String>> = OnceLock::new();
    SYSTEM
        .get_or_init(|| match rustls_native_certs::load_native_certs() {
            Ok(certs) if !certs.is_empty() => Ok(certs),
            Ok(_) => Err("no system CA certificates found; set ca_file".to_string()),
            Err(e) => Err(format!(
                "cannot read the system CA certificates ({e}); set ca_file"
            )),
        })
        .clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_without_certificates_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("empty.pem");
        std::fs::write(&p, "not a certificate\n").unwrap();
        let e = load(Some(&p)).unwrap_err();
        assert!(
            e.contains("empty.pem") && e.contains("no PEM certificate"),
            "{e}"
        );
        let e = load(Some(&dir.path().join("missing.pem"))).unwrap_err();
        assert!(e.contains("missing.pem"), "{e}");
    }
}
