//! A private PKI for TLS tests: a CA, a server certificate for 127.0.0.1 signed by it, and
//! a second, unrelated CA (to show a handshake fails against the wrong one), as PEM files
//! in a temporary directory.

use std::path::PathBuf;

/// The files of [`Pki::new`], removed with it.
pub struct Pki {
    /// Holds `ca.pem`, `other-ca.pem`, `server.pem` and `server.key` (and whatever a test
    /// writes beside them).
    pub dir: tempfile::TempDir,
}

impl Pki {
    /// A CA named `name`, a server certificate for 127.0.0.1 (common name `server_cn`)
    /// signed by it, and an unrelated CA.
    pub fn new(name: &str, server_cn: &str) -> Pki {
        use rcgen::{
            BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair,
            KeyUsagePurpose,
        };
        let dir = tempfile::tempdir().unwrap();
        let ca = |cn: &str| {
            let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
            p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            p.distinguished_name.push(DnType::CommonName, cn);
            p.key_usages = vec![
                KeyUsagePurpose::KeyCertSign,
                KeyUsagePurpose::DigitalSignature,
            ];
            CertifiedIssuer::self_signed(p, KeyPair::generate().unwrap()).unwrap()
        };
        let good = ca(name);
        let other = ca("some other CA");
        let mut p = CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
        p.distinguished_name.push(DnType::CommonName, server_cn);
        let key = KeyPair::generate().unwrap();
        let cert = p.signed_by(&key, &good).unwrap();
        let write = |n: &str, pem: String| std::fs::write(dir.path().join(n), pem).unwrap();
        write("ca.pem", good.pem());
        write("other-ca.pem", other.pem());
        write("server.pem", cert.pem());
        write("server.key", key.serialize_pem());
        Pki { dir }
    }

    /// A file in the directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}
