//! The cache of recently verified passwords (see [`super::Policy`]).

/// How long a verified password is remembered.
pub(super) const VERIFIED_TTL: std::time::Duration = std::time::Duration::from_secs(300);
/// Most remembered (user, password) pairs; when full, the cache starts over.
pub(super) const VERIFIED_MAX: usize = 4096;

/// The cache of [`super::Policy`]'s `verified`: username → (keyed digest of the password, when).
/// Only a keyed SHA-256 of the password is kept, never the password, and the key is random
/// per policy, so the table is useless outside this process.
#[derive(Default)]
pub(super) struct Verified {
    /// Random key mixed into every digest.
    key: [u8; 32],
    /// Username → digest and time of verification.
    entries: std::collections::HashMap<String, ([u8; 32], std::time::Instant)>,
}

impl Verified {
    /// A cache with a fresh random key.
    pub(super) fn new() -> Self {
        use argon2::password_hash::rand_core::{OsRng, RngCore};
        let mut key = [0u8; 32];
        OsRng.fill_bytes(&mut key);
        Verified {
            key,
            entries: std::collections::HashMap::new(),
        }
    }

    /// The keyed digest of `password`.
    fn digest(&self, password: &[u8]) -> [u8; 32] {
        use sha2::{Digest, Sha256};
        let mut d = Sha256::new();
        d.update(self.key);
        d.update(password);
        d.finalize().into()
    }

    /// Was this exact password verified for `user` recently?
    pub(super) fn hit(&self, user: &str, password: &[u8], now: std::time::Instant) -> bool {
        use subtle::ConstantTimeEq;
        match self.entries.get(user) {
            Some((d, at)) if now.saturating_duration_since(*at) < VERIFIED_TTL => {
                self.digest(password).ct_eq(d).into()
            }
            _ => false,
        }
    }

    /// Remember a successful verification.
    pub(super) fn insert(&mut self, user: &str, password: &[u8], now: std::time::Instant) {
        if self.entries.len() >= VERIFIED_MAX {
            self.entries.clear();
        }
        let d = self.digest(password);
        self.entries.insert(user.to_owned(), (d, now));
    }
}
