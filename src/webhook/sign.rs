//! Standard Webhooks 1.0 signatures (<https://www.standardwebhooks.com/>): the receiver
//! gets `webhook-id`, `webhook-timestamp` (Unix seconds) and
//! `webhook-signature: v1,<base64 of HMAC-SHA256(key, "<id>.<timestamp>.<body>")>`, and
//! recomputes the HMAC over the raw body to check it (in constant time), refusing
//! timestamps too far from its clock (the standard suggests 5 minutes) against replays.
//!
//! The key file holds, as the standard's secrets do, `whsec_` followed by the base64 of
//! the key bytes; a file without that prefix is used as raw key bytes (one trailing
//! newline removed), for keys made with e.g. `head -c 32 /dev/urandom`.

use std::path::Path;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Shorter keys are refused: HMAC-SHA256 keys should be at least as long as the hash
/// (the standard's secrets are 24 to 64 bytes); 16 is the floor below which a key is not
/// a secret.
pub const MIN_KEY: usize = 16;

/// A signing key.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Vec<u8>);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Secret({} bytes)", self.0.len())
    }
}

impl Secret {
    /// Read a key file (see the module documentation). Errors name the file, never the
    /// key.
    pub fn read(path: &Path) -> Result<Secret, String> {
        let bytes =
            std::fs::read(path).map_err(|e| format!("secret_file {}: {e}", path.display()))?;
        Secret::parse(&bytes).map_err(|e| format!("secret_file {}: {e}", path.display()))
    }

    /// The key in `bytes` (a file's content).
    pub fn parse(bytes: &[u8]) -> Result<Secret, String> {
        let text = bytes
            .strip_suffix(b"\r\n")
            .or_else(|| bytes.strip_suffix(b"\n"))
            .unwrap_or(bytes);
        let key = match text.strip_prefix(b"whsec_") {
            Some(b64) => STANDARD
                .decode(b64)
                .map_err(|e| format!("the text after whsec_ is not base64: {e}"))?,
            None => text.to_vec(),
        };
        if key.len() < MIN_KEY {
            return Err(format!(
                "the key is {} bytes; use at least {MIN_KEY} random bytes (e.g. whsec_ + base64 of 32)",
                key.len()
            ));
        }
        Ok(Secret(key))
    }

    /// The `webhook-signature` header value for one attempt.
    pub fn sign(&self, id: &str, timestamp: u64, body: &[u8]) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes any key length");
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
    }

    /// Whether `header` (space-separated `v1,<sig>` entries, as the standard allows
    /// during key rotation) holds a valid signature: the receiver's check, in constant
    /// time.
    pub fn verify(&self, id: &str, timestamp: u64, body: &[u8], header: &str) -> bool {
        header.split(' ').any(|entry| {
            let Some(sig) = entry.strip_prefix("v1,") else {
                return false;
            };
            let Ok(sig) = STANDARD.decode(sig) else {
                return false;
            };
            let mut mac =
                Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes any key length");
            mac.update(format!("{id}.{timestamp}.").as_bytes());
            mac.update(body);
            mac.verify_slice(&sig).is_ok()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standard_webhooks_reference_vector() {
        // From the Standard Webhooks reference libraries' tests.
        let s = Secret::parse(b"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let body = br#"{"test": 2432232314}"#;
        let sig = s.sign("msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body);
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
        assert!(s.verify(
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            body,
            &format!("v1,bm90IGl0 {sig}")
        ));
        assert!(!s.verify("msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265331, body, &sig));
    }

    #[test]
    fn raw_keys_and_bad_files() {
        let raw = Secret::parse(b"0123456789abcdef0123\n").unwrap();
        assert_eq!(raw, Secret(b"0123456789abcdef0123".to_vec()));
        assert!(Secret::parse(b"short").unwrap_err().contains("5 bytes"));
        assert!(Secret::parse(b"whsec_!!!")
            .unwrap_err()
            .contains("not base64"));
        assert!(
            !format!("{raw:?}").contains("0123"),
            "Debug never shows the key"
        );
    }
}
