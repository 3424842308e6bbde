//! Topic names and topic filters: parsed once at the protocol boundary.
//!
//! A *thing* in ponte is an MQTT topic name. HTTP `/resources/T` and CoAP `/r/T` address the
//! same topic `T`. Every front-end turns what it received into a [`TopicName`] (for writes and
//! reads) or a [`TopicFilter`] (for subscriptions) through the constructors here, so the rest of
//! the core never sees an unchecked string.

use std::fmt;
use std::sync::Arc;

/// The longest topic MQTT can encode: a UTF-8 string is prefixed by a 16-bit length
/// (MQTT-1.5.3).
pub const MAX_TOPIC_LEN: usize = 65_535;

/// Why a topic name or filter was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopicError {
    /// MQTT-4.7.3-1: topic names and filters are at least one character long.
    #[error("the topic is empty (MQTT-4.7.3-1)")]
    Empty,
    /// MQTT-1.5.3-1: the encoded string may not exceed 65,535 bytes.
    #[error("the topic is {0} bytes long, more than the 65,535 MQTT can carry (MQTT-1.5.3)")]
    TooLong(usize),
    /// MQTT-4.7.3-2: U+0000 is not allowed anywhere in a topic.
    #[error("the topic contains the NUL character U+0000 (MQTT-4.7.3-2)")]
    Nul,
    /// MQTT-3.3.2-2: a topic name (what is published to or read) has no wildcards.
    #[error("the topic name contains the wildcard {0:?}; names of things cannot contain '+' or '#' (MQTT-3.3.2-2)")]
    Wildcard(char),
    /// MQTT-4.7.1-2: `#` must be the last character and occupy a whole level.
    #[error("'#' must stand alone as the last level of a filter (MQTT-4.7.1-2), got {0:?}")]
    MisplacedHash(String),
    /// MQTT-4.7.1-3: `+` must occupy a whole level.
    #[error("'+' must occupy a whole level of a filter (MQTT-4.7.1-3), got {0:?}")]
    MisplacedPlus(String),
    /// A path segment could not be percent-decoded into UTF-8.
    #[error("path segment {0:?} is not valid UTF-8 once percent-decoded")]
    NotUtf8(String),
    /// A percent-encoded `/` would silently change the topic's levels.
    #[error("path segment {0:?} decodes to a '/', which would change the topic levels; use a plain '/' instead")]
    EncodedSlash(String),
}

/// A validated topic name: UTF-8, 1..=65,535 bytes, no NUL, no wildcard.
///
/// Cheap to clone (`Arc<str>`) because one name is shared by the retained store, every
/// delivery and every front-end that reports it.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicName(Arc<str>);

impl TopicName {
    /// Parse a topic name received from any protocol.
    pub fn parse(s: &str) -> Result<Self, TopicError> {
        check_common(s)?;
        // Bytes, not chars: `+` and `#` are ASCII, so in UTF-8 they are only ever
        // themselves, and a byte loop costs no decoding (every CoAP and HTTP write names a
        // topic through here).
        if let Some(b) = s.bytes().find(|b| *b == b'+' || *b == b'#') {
            return Err(TopicError::Wildcard(char::from(b)));
        }
        Ok(TopicName(Arc::from(s)))
    }

    /// A name that a protocol decoder has already checked against exactly the rules of
    /// [`TopicName::parse`] (ponte-mqtt's PUBLISH and will topics: UTF-8 without U+0000,
    /// MQTT-1.5.3; not empty, MQTT-4.7.3-1; no wildcard, MQTT-3.3.2-2; at most 65,535 bytes
    /// by its 16-bit length), so a PUBLISH's topic is validated once, not twice. Checked
    /// again in debug builds.
    pub(crate) fn trusted(s: &str) -> Self {
        debug_assert_eq!(Self::parse(s).err(), None, "{s:?} is not a topic name");
        TopicName(Arc::from(s))
    }

    /// Build a topic from URL path segments that are still percent-encoded (HTTP), decoding
    /// each segment on its own. `["", "x"]` is the topic `/x`.
    pub fn from_encoded_segments<'a, I>(segments: I) -> Result<Self, TopicError>
    where
        I: IntoIterator<Item = &'a str>,
    {
        let mut topic = String::new();
        for (i, seg) in segments.into_iter().enumerate() {
            if i > 0 {
                topic.push('/');
            }
            let decoded = percent_encoding::percent_decode_str(seg)
                .decode_utf8()
                .map_err(|_| TopicError::NotUtf8(seg.to_owned()))?;
            if decoded.contains('/') {
                return Err(TopicError::EncodedSlash(seg.to_owned()));
            }
            topic.push_str(&decoded);
        }
        Self::parse(&topic)
    }

    /// Build a topic from already-decoded path segments (CoAP Uri-Path options).
    pub fn from_segments<S: AsRef<str>>(segments: &[S]) -> Result<Self, TopicError> {
        let mut topic = String::new();
        for (i, seg) in segments.iter().enumerate() {
            if i > 0 {
                topic.push('/');
            }
            topic.push_str(seg.as_ref());
        }
        Self::parse(&topic)
    }

    /// The topic as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The topic's levels, split at `/`.
    pub fn levels(&self) -> impl Iterator<Item = &str> {
        self.0.split('/')
    }

    /// The shared string, so a delivery can name the topic without copying it.
    pub fn as_arc(&self) -> &Arc<str> {
        &self.0
    }

    /// `$`-topics (such as `$SYS/...`) are not matched by a leading wildcard (MQTT-4.7.2-1).
    pub fn is_system(&self) -> bool {
        self.0.starts_with('$')
    }
}

impl fmt::Debug for TopicName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for TopicName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for TopicName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// A validated topic filter: a topic name that may use `+` and `#` in whole levels.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct TopicFilter(Arc<str>);

impl TopicFilter {
    /// Parse a subscription filter (MQTT-4.7.1).
    pub fn parse(s: &str) -> Result<Self, TopicError> {
        check_common(s)?;
        let mut levels = s.split('/').peekable();
        while let Some(level) = levels.next() {
            if level.contains('#') && (level != "#" || levels.peek().is_some()) {
                return Err(TopicError::MisplacedHash(s.to_owned()));
            }
            if level.contains('+') && level != "+" {
                return Err(TopicError::MisplacedPlus(s.to_owned()));
            }
        }
        Ok(TopicFilter(Arc::from(s)))
    }

    /// The filter that matches exactly one topic name.
    pub fn exact(name: &TopicName) -> Self {
        TopicFilter(name.0.clone())
    }

    /// The filter as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The filter's levels, split at `/`.
    pub fn levels(&self) -> impl Iterator<Item = &str> {
        self.0.split('/')
    }

    /// Whether this filter matches `topic`, by the rules of MQTT 4.7 (including MQTT-4.7.2-1:
    /// a leading wildcard does not match a `$`-topic).
    pub fn matches(&self, topic: &TopicName) -> bool {
        let mut f = self.levels();
        let mut t = topic.levels();
        let mut first = true;
        loop {
            match (f.next(), t.next()) {
                (Some("#"), _) => return !(first && topic.is_system()),
                (Some("+"), Some(_)) => {
                    if first && topic.is_system() {
                        return false;
                    }
                }
                (Some(fl), Some(tl)) => {
                    if fl != tl {
                        return false;
                    }
                }
                (None, None) => return true,
                _ => return false,
            }
            first = false;
        }
    }
}

impl fmt::Debug for TopicFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for TopicFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn check_common(s: &str) -> Result<(), TopicError> {
    if s.is_empty() {
        return Err(TopicError::Empty);
    }
    if s.len() > MAX_TOPIC_LEN {
        return Err(TopicError::TooLong(s.len()));
    }
    if s.contains('\0') {
        return Err(TopicError::Nul);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(filter: &str, topic: &str) -> bool {
        TopicFilter::parse(filter)
            .unwrap()
            .matches(&TopicName::parse(topic).unwrap())
    }

    #[test]
    fn mqtt_4_7_1_2_hash_matches_parent_and_children() {
        assert!(m("sport/tennis/player1/#", "sport/tennis/player1"));
        assert!(m("sport/tennis/player1/#", "sport/tennis/player1/ranking"));
        assert!(m("sport/#", "sport"));
        assert!(m("#", "a/b/c"));
        assert!(!m("sport/tennis/#", "sport/football"));
    }

    #[test]
    fn mqtt_4_7_1_3_plus_matches_one_level() {
        assert!(m("sport/+/player1", "sport/tennis/player1"));
        assert!(!m("sport/+", "sport/tennis/player1"));
        assert!(m("+/+", "/finance"));
        assert!(m("/+", "/finance"));
        assert!(!m("+", "/finance"));
        assert!(m("sport/+", "sport/"));
    }

    #[test]
    fn mqtt_4_7_2_1_dollar_topics_not_matched_by_leading_wildcard() {
        assert!(!m("#", "$SYS/broker"));
        assert!(!m("+/broker", "$SYS/broker"));
        assert!(m("$SYS/#", "$SYS/broker"));
        assert!(m("$SYS/+", "$SYS/broker"));
    }

    #[test]
    fn mqtt_4_7_1_filters_validated() {
        assert!(TopicFilter::parse("a/#/b").is_err());
        assert!(TopicFilter::parse("a#").is_err());
        assert!(TopicFilter::parse("a/b+").is_err());
        assert!(TopicFilter::parse("").is_err());
        assert!(TopicFilter::parse("a/+/#").is_ok());
    }

    #[test]
    fn mqtt_3_3_2_2_names_have_no_wildcards() {
        assert_eq!(TopicName::parse("a/+"), Err(TopicError::Wildcard('+')));
        assert_eq!(TopicName::parse("a/#"), Err(TopicError::Wildcard('#')));
        assert_eq!(TopicName::parse("a\0b"), Err(TopicError::Nul));
        assert!(matches!(
            TopicName::parse(&"x".repeat(65_536)),
            Err(TopicError::TooLong(65_536))
        ));
    }

    #[test]
    fn http_segments_are_decoded_one_by_one() {
        let t = TopicName::from_encoded_segments(["", "x"]).unwrap();
        assert_eq!(t.as_str(), "/x");
        let t = TopicName::from_encoded_segments(["a%20b", "c"]).unwrap();
        assert_eq!(t.as_str(), "a b/c");
        assert!(matches!(
            TopicName::from_encoded_segments(["a%2Bb"]),
            Err(TopicError::Wildcard('+'))
        ));
        assert!(matches!(
            TopicName::from_encoded_segments(["a%2Fb"]),
            Err(TopicError::EncodedSlash(_))
        ));
        assert!(matches!(
            TopicName::from_encoded_segments(["%FF"]),
            Err(TopicError::NotUtf8(_))
        ));
    }
}
