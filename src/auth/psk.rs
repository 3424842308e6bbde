//! The PSK file: pre-shared keys for DTLS (`coaps://`, RFC 7252 §9.1.3.1), in mosquitto's
//! `psk_file` format so one file can serve both brokers.
//!
//! One `identity:hexkey` per line; the identity is everything before the first `:`, the key
//! is hexadecimal (no `0x`). Lines starting with `#` and blank lines are ignored; surrounding
//! whitespace (and a Windows `\r`) is trimmed. Anything else — no `:`, an empty identity, a
//! key that is not whole hex bytes, an identity listed twice — is an error naming the line,
//! so a typo never silently locks a device out or lets the wrong key in.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Longest key accepted, in bytes: RFC 4279 §5.3 asks implementations to support keys up
/// to 64 bytes, so clients cannot be counted on to hold a longer one: it is a mistake.
pub const MAX_KEY_LEN: usize = 64;

/// Longest identity accepted, in bytes (RFC 4279 §5.3: at least 128 must be supported).
pub const MAX_IDENTITY_LEN: usize = 128;

/// The identities and keys of a PSK file.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct PskFile {
    /// Key by identity; identities are compared byte for byte, as they arrive in the
    /// DTLS ClientKeyExchange.
    keys: HashMap<Vec<u8>, Vec<u8>>,
}

/// What is wrong with one line of a PSK file.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LineError {
    /// The line has no `:` between identity and key.
    #[error("expected `identity:hexkey`, found no `:`")]
    MissingColon,
    /// Nothing before the `:`.
    #[error("the identity before `:` is empty")]
    EmptyIdentity,
    /// The identity is longer than [`MAX_IDENTITY_LEN`].
    #[error("the identity is {len} bytes long; at most {MAX_IDENTITY_LEN} are allowed")]
    IdentityTooLong {
        /// Its length.
        len: usize,
    },
    /// Nothing after the `:`.
    #[error("the key after `:` is empty")]
    EmptyKey,
    /// The key has a character that is not a hex digit.
    #[error("the key has {found:?} at position {position}, which is not a hex digit")]
    NotHex {
        /// The offending character.
        found: char,
        /// Its 1-based position within the key.
        position: usize,
    },
    /// The key has an odd number of hex digits, so it is not whole bytes.
    #[error("the key has {digits} hex digits; a key is whole bytes, so an even number")]
    OddLength {
        /// How many digits it has.
        digits: usize,
    },
    /// The key is longer than [`MAX_KEY_LEN`].
    #[error("the key is {len} bytes long; at most {MAX_KEY_LEN} are allowed")]
    KeyTooLong {
        /// Its length in bytes.
        len: usize,
    },
    /// The identity was already given a key on an earlier line.
    #[error("identity {identity:?} was already given a key on line {first}")]
    Duplicate {
        /// The identity.
        identity: String,
        /// The line that first defined it.
        first: usize,
    },
}

/// Why a PSK file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum PskError {
    /// The file could not be read.
    #[error("cannot read PSK file {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A line is malformed (`path` is `None` for text given to [`PskFile::parse`]).
    #[error("{}line {line}: {reason}", path.as_ref().map(|p| format!("PSK file {}: ", p.display())).unwrap_or_default())]
    Line {
        /// The file, when read from one.
        path: Option<PathBuf>,
        /// 1-based line number.
        line: usize,
        /// What is wrong with it.
        reason: LineError,
    },
}

impl PskFile {
    /// Read and parse the file at `path`.
    pub fn load(path: impl AsRef<Path>) -> Result<PskFile, PskError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| PskError::Read {
            path: path.to_owned(),
            source,
        })?;
        PskFile::parse(&text).map_err(|e| match e {
            PskError::Line { line, reason, .. } => PskError::Line {
                path: Some(path.to_owned()),
                line,
                reason,
            },
            other => other,
        })
    }

    /// Parse the text of a PSK file.
    pub fn parse(text: &str) -> Result<PskFile, PskError> {
        let mut keys = HashMap::new();
        let mut first_line: HashMap<Vec<u8>, usize> = HashMap::new();
        for (index, raw) in text.lines().enumerate() {
            let line = index + 1;
            let trimmed = raw.trim();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            let bad = |reason| PskError::Line {
                path: None,
                line,
                reason,
            };
            let (identity, key) = parse_line(trimmed).map_err(bad)?;
            if let Some(first) = first_line.get(&identity) {
                return Err(bad(LineError::Duplicate {
                    identity: String::from_utf8_lossy(&identity).into_owned(),
                    first: *first,
                }));
            }
            first_line.insert(identity.clone(), line);
            keys.insert(identity, key);
        }
        Ok(PskFile { keys })
    }

    /// The key of `identity`, if the file has it.
    pub fn key(&self, identity: &[u8]) -> Option<&[u8]> {
        self.keys.get(identity).map(Vec::as_slice)
    }

    /// How many identities the file has.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether the file has no identity at all.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

/// Keys never appear in logs or panics: only the identities are shown.
impl std::fmt::Debug for PskFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut ids: Vec<String> = self
            .keys
            .keys()
            .map(|i| String::from_utf8_lossy(i).into_owned())
            .collect();
        ids.sort();
        f.debug_struct("PskFile")
            .field("identities", &ids)
            .finish_non_exhaustive()
    }
}

/// One non-comment line, already trimmed: identity and decoded key.
fn parse_line(line: &str) -> Result<(Vec<u8>, Vec<u8>), LineError> {
    let (identity, hex) = line.split_once(':').ok_or(LineError::MissingColon)?;
    if identity.is_empty() {
        return Err(LineError::EmptyIdentity);
    }
    if identity.len() > MAX_IDENTITY_LEN {
        return Err(LineError::IdentityTooLong {
            len: identity.len(),
        });
    }
    if hex.is_empty() {
        return Err(LineError::EmptyKey);
    }
    if let Some((i, c)) = hex
        .chars()
        .enumerate()
        .find(|(_, c)| !c.is_ascii_hexdigit())
    {
        return Err(LineError::NotHex {
            found: c,
            position: i + 1,
        });
    }
    // All ASCII hex digits from here on, so bytes and characters coincide.
    if hex.len() % 2 != 0 {
        return Err(LineError::OddLength { digits: hex.len() });
    }
    if hex.len() / 2 > MAX_KEY_LEN {
        return Err(LineError::KeyTooLong { len: hex.len() / 2 });
    }
    let key = hex
        .as_bytes()
        .chunks_exact(2)
        .map(|pair| (nibble(pair[0]) << 4) | nibble(pair[1]))
        .collect();
    Ok((identity.as_bytes().to_vec(), key))
}

/// The value of one ASCII hex digit (callers checked it is one).
fn nibble(c: u8) -> u8 {
    match c {
        b'0'..=b'9' => c - b'0',
        b'a'..=b'f' => c - b'a' + 10,
        b'A'..=b'F' => c - b'A' + 10,
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line_error(text: &str) -> (usize, LineError) {
        match PskFile::parse(text) {
            Err(PskError::Line { line, reason, .. }) => (line, reason),
            other => panic!("expected a line error, got {other:?}"),
        }
    }

    #[test]
    fn mosquitto_format_with_comments_and_blank_lines() {
        let f = PskFile::parse(
            "# devices\n\nsensor1:0123456789abcdef\r\n  lamp:DEADBEEF  \n\t# tab comment\n",
        )
        .unwrap();
        assert_eq!(f.len(), 2);
        assert_eq!(
            f.key(b"sensor1"),
            Some(&[0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef][..])
        );
        assert_eq!(f.key(b"lamp"), Some(&[0xde, 0xad, 0xbe, 0xef][..]));
        assert_eq!(f.key(b"Lamp"), None, "identities are exact bytes");
        assert_eq!(f.key(b""), None);
        assert!(PskFile::parse("").unwrap().is_empty());
    }

    #[test]
    fn identity_ends_at_the_first_colon() {
        let (line, e) = line_error("a:b:00\n");
        assert_eq!(line, 1);
        assert_eq!(
            e,
            LineError::NotHex {
                found: ':',
                position: 2
            }
        );
    }

    #[test]
    fn bad_lines_name_their_line_number() {
        assert_eq!(line_error("# c\n\nnocolon\n"), (3, LineError::MissingColon));
        assert_eq!(line_error("ok:00\n:00\n"), (2, LineError::EmptyIdentity));
        assert_eq!(line_error("id:\n"), (1, LineError::EmptyKey));
        assert_eq!(
            line_error("id:0x00\n"),
            (
                1,
                LineError::NotHex {
                    found: 'x',
                    position: 2
                }
            )
        );
        assert_eq!(
            line_error("id:abc\n"),
            (1, LineError::OddLength { digits: 3 })
        );
        assert_eq!(
            line_error(&format!("id:{}\n", "00".repeat(65))),
            (1, LineError::KeyTooLong { len: 65 })
        );
        assert_eq!(
            line_error(&format!("{}:00\n", "i".repeat(129))),
            (1, LineError::IdentityTooLong { len: 129 })
        );
        assert_eq!(
            line_error("a:00\nb:11\na:22\n"),
            (
                3,
                LineError::Duplicate {
                    identity: "a".into(),
                    first: 1
                }
            )
        );
    }

    #[test]
    fn error_messages_name_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("psk");
        std::fs::write(&path, "good:00\nbad line\n").unwrap();
        let e = PskFile::load(&path).unwrap_err().to_string();
        assert!(e.contains("line 2"), "{e}");
        assert!(e.contains(&path.display().to_string()), "{e}");
        let e = PskFile::load(dir.path().join("missing")).unwrap_err();
        assert!(matches!(e, PskError::Read { .. }), "{e}");
        assert!(e.to_string().contains("missing"), "{e}");
    }

    #[test]
    fn debug_output_never_shows_keys() {
        let f = PskFile::parse("alice:cafebabe\n").unwrap();
        let shown = format!("{f:?}");
        assert!(shown.contains("alice"), "{shown}");
        assert!(!shown.to_lowercase().contains("cafebabe"), "{shown}");
    }
}
