//! The password file: mosquitto's format, so an existing `mosquitto_passwd` file works as is.
//!
//! One `user:hash` per line; blank lines and lines starting with `#` are ignored. Hashes
//! ponte writes are argon2id PHC strings (`$argon2id$v=19$…`). Hashes it also verifies, so
//! that files made by `mosquitto_passwd` keep working:
//!
//! * `$7$ITERATIONS$SALT$HASH`: PBKDF2-HMAC-SHA512, 64-byte key (mosquitto ≥ 2.0's default);
//! * `$6$SALT$HASH`: SHA-512 over the password followed by the salt (mosquitto ≤ 1.6).
//!
//! SALT and HASH are standard base64. The whole file is parsed at load: a malformed line is an
//! error naming its number, so a typo is found when the file is (re)loaded, not when that user
//! first connects.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use sha2::{Digest, Sha512};
use subtle::ConstantTimeEq;

/// Why a password file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum PasswordFileError {
    /// The file could not be read or written.
    #[error("password file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A line is not `user:hash` with a hash this file format knows.
    #[error("password file line {line}: {reason}")]
    Line {
        /// 1-based line number.
        line: usize,
        /// What is wrong with it.
        reason: String,
    },
}

/// A parsed, verifiable hash.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Hash {
    /// An argon2 PHC string (kept as text: the `argon2` crate parses it on verification).
    Argon2(String),
    /// mosquitto `$7$`: PBKDF2-HMAC-SHA512.
    Pbkdf2 {
        /// Iteration count from the line.
        iterations: u32,
        /// Decoded salt.
        salt: Vec<u8>,
        /// Decoded derived key (its length is the key length to derive).
        hash: Vec<u8>,
    },
    /// mosquitto `$6$`: SHA-512(password ‖ salt).
    Sha512 {
        /// Decoded salt.
        salt: Vec<u8>,
        /// Decoded digest.
        hash: Vec<u8>,
    },
}

impl Hash {
    /// Parse the part of a line after the first `:`.
    fn parse(text: &str) -> Result<Hash, String> {
        let b64 = |what: &str, s: &str| {
            STANDARD
                .decode(s)
                .map_err(|e| format!("{what} is not base64 ({e})"))
        };
        if text.starts_with("$argon2") {
            PasswordHash::new(text).map_err(|e| format!("bad argon2 hash: {e}"))?;
            return Ok(Hash::Argon2(text.to_owned()));
        }
        if let Some(rest) = text.strip_prefix("$7$") {
            let mut parts = rest.split('$');
            let (Some(iter), Some(salt), Some(hash), None) =
                (parts.next(), parts.next(), parts.next(), parts.next())
            else {
                return Err("a $7$ hash is $7$ITERATIONS$SALT$HASH".into());
            };
            let iterations: u32 = iter
                .parse()
                .ok()
                .filter(|&n| n > 0)
                .ok_or_else(|| format!("iteration count {iter:?} is not a positive number"))?;
            let salt = b64("salt", salt)?;
            let hash = b64("hash", hash)?;
            if hash.is_empty() || hash.len() > 64 {
                return Err(format!(
                    "a PBKDF2-SHA512 hash is 1..=64 bytes, got {}",
                    hash.len()
                ));
            }
            return Ok(Hash::Pbkdf2 {
                iterations,
                salt,
                hash,
            });
        }
        if let Some(rest) = text.strip_prefix("$6$") {
            let Some((salt, hash)) = rest.split_once('$') else {
                return Err("a $6$ hash is $6$SALT$HASH".into());
            };
            let salt = b64("salt", salt)?;
            let hash = b64("hash", hash)?;
            if hash.len() != 64 {
                return Err(format!("a SHA-512 hash is 64 bytes, got {}", hash.len()));
            }
            return Ok(Hash::Sha512 { salt, hash });
        }
        Err("unknown hash format (expected $argon2id$, $7$ or $6$; plain-text passwords are not accepted)".into())
    }

    /// Does `password` match? Constant-time in the comparison of derived values.
    fn verify(&self, password: &[u8]) -> bool {
        match self {
            Hash::Argon2(phc) => match PasswordHash::new(phc) {
                Ok(parsed) => Argon2::default().verify_password(password, &parsed).is_ok(),
                Err(_) => false,
            },
            Hash::Pbkdf2 {
                iterations,
                salt,
                hash,
            } => {
                let mut out = vec![0u8; hash.len()];
                pbkdf2::pbkdf2_hmac::<Sha512>(password, salt, *iterations, &mut out);
                out.ct_eq(hash).into()
            }
            Hash::Sha512 { salt, hash } => {
                let mut d = Sha512::new();
                d.update(password);
                d.update(salt);
                d.finalize().as_slice().ct_eq(hash).into()
            }
        }
    }
}

/// Hash a password the way ponte stores it: argon2id with a random salt, the `argon2`
/// crate's default parameters (OWASP's minimum: 19 MiB, 2 passes, 1 lane).
pub fn hash_password(password: &str) -> Result<String, String> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| e.to_string())
}

/// The users of a password file.
#[derive(Debug, Clone, Default)]
pub struct PasswordFile {
    /// Username → hash.
    users: HashMap<String, Hash>,
    /// The lines in file order, so `ponte passwd` rewrites a file keeping its order and
    /// comments.
    lines: Vec<Line>,
}

/// One line of the file as read, for rewriting.
#[derive(Debug, Clone)]
enum Line {
    /// A comment or blank line, kept verbatim.
    Other(String),
    /// A user's entry (the hash text verbatim).
    User(String, String),
}

/// A placeholder hash that never verifies, checked when the user does not exist so that the
/// time taken does not tell an attacker which usernames exist.
const DUMMY: &str = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$2y0eC8wHSvvvwwL1dFrqCNYbrCVwVo1ENr9nh/rpHAk";

impl PasswordFile {
    /// Read and parse a file.
    pub fn load(path: &Path) -> Result<Self, PasswordFileError> {
        let text = std::fs::read_to_string(path).map_err(|source| PasswordFileError::Io {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text)
    }

    /// Parse the text of a file.
    pub fn parse(text: &str) -> Result<Self, PasswordFileError> {
        let mut file = PasswordFile::default();
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim_end_matches('\r');
            let trimmed = line.trim();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                file.lines.push(Line::Other(line.to_owned()));
                continue;
            }
            let err = |reason: String| PasswordFileError::Line {
                line: i + 1,
                reason,
            };
            let Some((user, hash)) = line.split_once(':') else {
                return Err(err("expected user:hash".into()));
            };
            if user.is_empty() {
                return Err(err("empty username".into()));
            }
            let parsed = Hash::parse(hash).map_err(err)?;
            if file.users.insert(user.to_owned(), parsed).is_some() {
                return Err(err(format!("user {user:?} appears twice")));
            }
            file.lines
                .push(Line::User(user.to_owned(), hash.to_owned()));
        }
        Ok(file)
    }

    /// Does `user` exist with this password? Takes about as long when the user is unknown.
    pub fn verify(&self, user: &str, password: &[u8]) -> bool {
        match self.users.get(user) {
            Some(h) => h.verify(password),
            None => {
                let _ = Hash::Argon2(DUMMY.to_owned()).verify(password);
                false
            }
        }
    }

    /// Is there such a user?
    pub fn contains(&self, user: &str) -> bool {
        self.users.contains_key(user)
    }

    /// How many users.
    pub fn len(&self) -> usize {
        self.users.len()
    }

    /// No users at all.
    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    /// Add or replace a user's hash (the hash text must be one `Hash::parse` accepts).
    pub fn set(&mut self, user: &str, hash: String) -> Result<(), String> {
        if user.is_empty() || user.contains(':') {
            return Err("a username must be non-empty and must not contain ':'".into());
        }
        let parsed = Hash::parse(&hash)?;
        self.users.insert(user.to_owned(), parsed);
        match self
            .lines
            .iter_mut()
            .find(|l| matches!(l, Line::User(u, _) if u == user))
        {
            Some(Line::User(_, h)) => *h = hash,
            _ => self.lines.push(Line::User(user.to_owned(), hash)),
        }
        Ok(())
    }

    /// Remove a user; false when there was none.
    pub fn remove(&mut self, user: &str) -> bool {
        self.lines
            .retain(|l| !matches!(l, Line::User(u, _) if u == user));
        self.users.remove(user).is_some()
    }

    /// The file's text, comments and order kept.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        for l in &self.lines {
            match l {
                Line::Other(t) => out.push_str(t),
                Line::User(u, h) => {
                    out.push_str(u);
                    out.push(':');
                    out.push_str(h);
                }
            }
            out.push('\n');
        }
        out
    }

    /// Write the file atomically (temporary file + rename), readable by its owner only.
    pub fn save(&self, path: &Path) -> Result<(), PasswordFileError> {
        let io = |source| PasswordFileError::Io {
            path: path.to_owned(),
            source,
        };
        let tmp = path.with_extension("tmp-ponte-passwd");
        {
            use std::io::Write as _;
            let mut opts = std::fs::OpenOptions::new();
            opts.write(true).create(true).truncate(true);
            #[cfg(unix)]
            {
                use std::os::unix::fs::OpenOptionsExt as _;
                opts.mode(0o600);
            }
            let mut f = opts.open(&tmp).map_err(io)?;
            f.write_all(self.to_text().as_bytes()).map_err(io)?;
            f.sync_all().map_err(io)?;
        }
        std::fs::rename(&tmp, path).map_err(io)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Made by mosquitto 2.0.11's `mosquitto_passwd -b` (alice, `$7$` default) and
    /// `mosquitto_passwd -H sha512 -b` (bob).
    const MOSQUITTO: &str = "\
alice:$7$101$SGEgJ2Sm1ZP3isec$QutH5lqlLjn/tqIV1wfmPD7IxrczAsw4KUqqGpxAyCMZgwna1uI8ZrNU7GJJGgJjbCuFdMq6Tg93KW+hjyvD5Q==
bob:$6$6aBdJb9oMc4ZDzPZ$WMlL6mKN1Uto1uoJcoSIcWtnmfqMB0y1Iroon0nimkaEuGsYiQ9JsMFhRMNgQwqWQ1e8T06F1p7LLkdzs/6RVQ==
";

    #[test]
    fn mosquitto_pbkdf2_and_sha512_hashes_verify() {
        let f = PasswordFile::parse(MOSQUITTO).unwrap();
        assert!(f.verify("alice", b"s3cret!"));
        assert!(!f.verify("alice", b"s3cret"));
        assert!(f.verify("bob", b"hunter2"));
        assert!(!f.verify("bob", b"hunter3"));
        assert!(!f.verify("carol", b"hunter2"));
    }

    #[test]
    fn argon2id_round_trip_and_rewrite_keeps_comments() {
        let mut f = PasswordFile::parse(&format!("# users\n{MOSQUITTO}")).unwrap();
        let h = hash_password("pa:ss wörd").unwrap();
        assert!(h.starts_with("$argon2id$"));
        f.set("carol", h).unwrap();
        assert!(f.remove("bob"));
        let again = PasswordFile::parse(&f.to_text()).unwrap();
        assert!(again.verify("carol", "pa:ss wörd".as_bytes()));
        assert!(again.verify("alice", b"s3cret!"));
        assert!(!again.contains("bob"));
        assert!(f.to_text().starts_with("# users\nalice:"));
    }

    #[test]
    fn malformed_lines_are_errors_naming_the_line() {
        for (text, needle) in [
            ("alice\n", "expected user:hash"),
            ("alice:plaintext\n", "unknown hash format"),
            ("a:$7$x$AAAA$AAAA\n", "iteration count"),
            ("a:$6$AAAA$AAAA\n", "64 bytes"),
            ("a:$6$!!$AAAA\n", "not base64"),
            (":$6$AAAA$AAAA\n", "empty username"),
        ] {
            let e = PasswordFile::parse(&format!("# c\n{text}")).unwrap_err();
            let msg = e.to_string();
            assert!(msg.contains("line 2") && msg.contains(needle), "{msg}");
        }
        let dup = format!(
            "{MOSQUITTO}alice:{}\n",
            MOSQUITTO.lines().nth(1).unwrap().split_once(':').unwrap().1
        );
        assert!(PasswordFile::parse(&dup)
            .unwrap_err()
            .to_string()
            .contains("twice"));
    }
}
