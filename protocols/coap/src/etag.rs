//! [`ETag`]: an entity tag of 1 to 8 bytes (RFC 7252 §5.10.6), held inline.

use std::fmt;
use std::ops::Deref;

/// A CoAP entity tag: 1 to 8 opaque bytes (RFC 7252 §5.10.6.1), the only lengths the
/// option may carry, so a value of this type can always be sent. Inline: answering with
/// one costs no allocation.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ETag {
    /// How many bytes of `bytes` are the tag (1..=8).
    len: u8,
    /// The tag, then zeros.
    bytes: [u8; 8],
}

impl ETag {
    /// The tag `bytes`; `None` unless it has 1 to 8 of them.
    pub fn new(bytes: &[u8]) -> Option<ETag> {
        let len = u8::try_from(bytes.len())
            .ok()
            .filter(|l| (1..=8).contains(l))?;
        let mut tag = ETag { len, bytes: [0; 8] };
        tag.bytes[..bytes.len()].copy_from_slice(bytes);
        Some(tag)
    }

    /// The shortest tag for a number: its big-endian bytes without leading zeros (one
    /// zero byte for 0).
    pub fn from_u64(n: u64) -> ETag {
        let len = (8 - n.leading_zeros() / 8).max(1) as u8;
        let mut bytes = [0; 8];
        bytes[..usize::from(len)].copy_from_slice(&n.to_be_bytes()[8 - usize::from(len)..]);
        ETag { len, bytes }
    }
}

impl Deref for ETag {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

impl fmt::Debug for ETag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ETag(")?;
        for b in &**self {
            write!(f, "{b:02x}")?;
        }
        write!(f, ")")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc7252_5_10_6_1_an_etag_has_1_to_8_bytes() {
        assert_eq!(ETag::new(&[]), None);
        assert_eq!(ETag::new(&[0; 9]), None);
        assert_eq!(ETag::new(b"v1").as_deref(), Some(&b"v1"[..]));
        assert_eq!(&*ETag::new(&[7; 8]).unwrap(), &[7; 8]);
    }

    #[test]
    fn rfc7252_5_10_6_1_numbers_lose_leading_zeros() {
        assert_eq!(&*ETag::from_u64(0), &[0]);
        assert_eq!(&*ETag::from_u64(1), &[1]);
        assert_eq!(&*ETag::from_u64(256), &[1, 0]);
        assert_eq!(&*ETag::from_u64(u64::MAX), &[0xFF; 8]);
        assert_eq!(format!("{:?}", ETag::from_u64(0x1A2B)), "ETag(1a2b)");
    }
}
