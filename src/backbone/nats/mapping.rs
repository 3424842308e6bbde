//! MQTT topics ↔ NATS subjects and KV keys, losslessly (issue 11, point 9).
//!
//! A NATS subject is `.`-separated tokens; a token may not be empty nor contain space, `.`,
//! `*` or `>`, and KV keys allow only `[-/_=.a-zA-Z0-9]`. An MQTT level may contain any of
//! those, or be empty. So every level is *escaped*: bytes in `[A-Za-z0-9-]` stay, every other
//! byte becomes `_XX` (two upper-case hex digits), and the empty level is the lone token `_`
//! (which no escaped level can be: an `_` is always followed by two hex digits). The encoding
//! is injective per level and the levels keep their order, so a topic and its subject
//! determine each other; its tokens are valid in subjects and in KV keys alike.
//!
//! Topics live in three namespaces under the configured prefix:
//! - `<prefix>.m.<levels>`: ordinary topics;
//! - `<prefix>.d.<levels>`: `$`-topics. A filter that starts with a wildcard maps into `m`
//!   only, so `#` and `+/…` never match a `$`-topic (MQTT-4.7.2-1) — on NATS's side, not
//!   only after the fact;
//! - `<prefix>.h.<sha-256 of the topic>`: topics whose subject would be longer than
//!   [`MAX_SUBJECT`] (MQTT topics reach 65,535 bytes; NATS refuses control lines longer than
//!   4 KiB by default). The full topic then travels inside the message
//!   ([`super::envelope`]); a filter subscribes to `h.>` as well and the receiver checks the
//!   topic itself.
//!
//! Because `*` and `>` inside a *name* are escaped (`_2A`, `_3E`), a topic `a/>` is the
//! literal subject `…m.a._3E`, never the wildcard `…m.a.>` (the bug nats-server's own MQTT
//! had, PR #8225).

use std::fmt::Write as _;

use sha2::{Digest, Sha256};

use crate::model::{TopicFilter, TopicName};

/// Longest subject (or KV key) ponte builds from a topic before it hashes the topic
/// instead: well inside NATS's default 4 KiB control line, which also carries the
/// command, a reply inbox and the sizes.
pub const MAX_SUBJECT: usize = 1024;

/// The namespace token of ordinary topics.
const NS_PLAIN: &str = "m";
/// The namespace token of `$`-topics.
const NS_DOLLAR: &str = "d";
/// The namespace token of hashed (long) topics.
const NS_HASHED: &str = "h";

/// Append the escaped form of one MQTT level to `out`.
pub fn encode_level(level: &str, out: &mut String) {
    if level.is_empty() {
        out.push('_');
        return;
    }
    for b in level.bytes() {
        if b.is_ascii_alphanumeric() || b == b'-' {
            out.push(b as char);
        } else {
            let _ = write!(out, "_{b:02X}");
        }
    }
}

/// Why a token is not one [`encode_level`] makes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MappingError {
    /// An `_` not followed by two upper-case hex digits, or a byte outside the alphabet.
    #[error("subject token {0:?} is not an escaped MQTT level")]
    BadToken(String),
    /// The escaped bytes are not UTF-8.
    #[error("subject token {0:?} does not decode to UTF-8")]
    NotUtf8(String),
    /// The subject is not under this prefix's namespaces.
    #[error("subject {0:?} is not a ponte topic subject")]
    Foreign(String),
    /// The decoded topic is not a valid MQTT topic name.
    #[error("subject {0:?} decodes to an invalid topic: {1}")]
    Topic(String, crate::model::TopicError),
}

/// Decode one token made by [`encode_level`].
pub fn decode_level(token: &str) -> Result<String, MappingError> {
    if token == "_" {
        return Ok(String::new());
    }
    let bad = || MappingError::BadToken(token.to_owned());
    let bytes = token.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'_' {
            let hex = bytes.get(i + 1..i + 3).ok_or_else(bad)?;
            let digit = |c: u8| match c {
                b'0'..=b'9' => Some(c - b'0'),
                b'A'..=b'F' => Some(c - b'A' + 10),
                _ => None,
            };
            let (Some(h), Some(l)) = (digit(hex[0]), digit(hex[1])) else {
                return Err(bad());
            };
            let v = h << 4 | l;
            // The escape is canonical: a byte that may stand for itself never is escaped,
            // so every level has exactly one token.
            if v.is_ascii_alphanumeric() || v == b'-' {
                return Err(bad());
            }
            out.push(v);
            i += 3;
        } else if b.is_ascii_alphanumeric() || b == b'-' {
            out.push(b);
            i += 1;
        } else {
            return Err(bad());
        }
    }
    String::from_utf8(out).map_err(|_| MappingError::NotUtf8(token.to_owned()))
}

/// A topic's place in NATS: the tokens after the prefix (`m.a.b`, `d._24SYS.x`,
/// `h.<hash>`), which are both its subject suffix and its KV key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Key {
    /// `m.…`, `d.…` or `h.…`.
    pub key: String,
    /// Whether the topic was too long and is hashed: the full topic must travel with the
    /// message.
    pub hashed: bool,
}

/// The key (subject suffix and KV key) of `topic`; `room` is how many bytes the prefix and
/// the rest of the subject take, so the whole stays under [`MAX_SUBJECT`].
pub fn topic_key(topic: &TopicName, room: usize) -> Key {
    let s = topic.as_str();
    let ns = if s.starts_with('$') {
        NS_DOLLAR
    } else {
        NS_PLAIN
    };
    let mut key = String::with_capacity(s.len() + 8);
    key.push_str(ns);
    for level in topic.levels() {
        key.push('.');
        encode_level(level, &mut key);
        if key.len() + room > MAX_SUBJECT {
            return hashed(s);
        }
    }
    Key { key, hashed: false }
}

/// The hashed key of a long topic.
fn hashed(topic: &str) -> Key {
    let digest = Sha256::digest(topic.as_bytes());
    let mut key = String::with_capacity(2 + 64);
    key.push_str(NS_HASHED);
    key.push('.');
    for b in digest {
        let _ = write!(key, "{b:02x}");
    }
    Key { key, hashed: true }
}

/// What a key decodes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decoded {
    /// The topic itself.
    Topic(TopicName),
    /// A hashed topic: the full topic travels in the message.
    Hashed,
}

/// Decode a key made by [`topic_key`].
pub fn decode_key(key: &str) -> Result<Decoded, MappingError> {
    let foreign = || MappingError::Foreign(key.to_owned());
    let (ns, rest) = key.split_once('.').ok_or_else(foreign)?;
    match ns {
        NS_HASHED => return Ok(Decoded::Hashed),
        NS_PLAIN | NS_DOLLAR => {}
        _ => return Err(foreign()),
    }
    let mut topic = String::with_capacity(rest.len());
    for (i, token) in rest.split('.').enumerate() {
        if i > 0 {
            topic.push('/');
        }
        topic.push_str(&decode_level(token)?);
    }
    // A `$`-topic in `m` or an ordinary one in `d` was not made here.
    if topic.starts_with('$') != (ns == NS_DOLLAR) {
        return Err(foreign());
    }
    TopicName::parse(&topic)
        .map(Decoded::Topic)
        .map_err(|e| MappingError::Topic(key.to_owned(), e))
}

/// The NATS filter subjects (after `<prefix>.`) that cover an MQTT filter: `+` → `*`;
/// `#` → `>` plus the parent level itself (`a/#` matches `a`, MQTT-4.7.1-2), so `a/#` is
/// `m.a` and `m.a.>`; `#` alone is `m.>`; plus `h.>` because a hashed topic could match
/// anything (the receiver checks). A filter whose first level is a wildcard stays in `m`
/// (MQTT-4.7.2-1); one starting with `$` maps into `d`. Long filters fall back to the
/// namespace (`m.>` or `d.>`), also checked by the receiver.
pub fn filter_subjects(filter: &TopicFilter, room: usize) -> Vec<String> {
    let s = filter.as_str();
    let ns = if s.starts_with('$') {
        NS_DOLLAR
    } else {
        NS_PLAIN
    };
    let mut out = Vec::with_capacity(3);
    let mut subject = String::with_capacity(s.len() + 8);
    subject.push_str(ns);
    let mut too_long = false;
    for level in filter.levels() {
        match level {
            "#" => {
                // The parent level itself, then everything below it.
                if subject != ns {
                    out.push(subject.clone());
                }
                subject.push_str(".>");
            }
            "+" => subject.push_str(".*"),
            l => {
                subject.push('.');
                encode_level(l, &mut subject);
            }
        }
        if subject.len() + room > MAX_SUBJECT {
            too_long = true;
            break;
        }
    }
    if too_long {
        out.clear();
        out.push(format!("{ns}.>"));
    } else {
        out.push(subject);
    }
    out.push(format!("{NS_HASHED}.>"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn t(s: &str) -> TopicName {
        TopicName::parse(s).unwrap()
    }

    fn roundtrip(s: &str) -> String {
        let k = topic_key(&t(s), 10);
        assert!(!k.hashed, "{s:?} should not be hashed");
        match decode_key(&k.key).unwrap() {
            Decoded::Topic(back) => back.as_str().to_owned(),
            Decoded::Hashed => panic!("hashed"),
        }
    }

    /// A token is valid in a subject and a KV key: non-empty, only `[-/_=.a-zA-Z0-9]`
    /// minus `.`, no space, `*` or `>`.
    fn valid_token(tok: &str) -> bool {
        !tok.is_empty()
            && tok
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    }

    #[test]
    fn nasty_levels_are_escaped_and_come_back() {
        for s in [
            "a/b",
            "a.b/c",
            "a b/c d",
            "a/*/b",
            "a/>",
            ">",
            "*",
            "/",
            "//",
            "/a",
            "a/",
            "a//b",
            "$SYS/broker/node",
            "$",
            "_",
            "__",
            "_41",
            "ünïcödé/東京/🙂",
            "a=b/c:d/e%20f",
            "-",
            "\t\r\n",
            "+x",
        ] {
            // `+x` is not a valid name (wildcard); skip what TopicName refuses.
            if TopicName::parse(s).is_err() {
                continue;
            }
            assert_eq!(roundtrip(s), s, "round trip of {s:?}");
            let k = topic_key(&t(s), 10).key;
            for tok in k.split('.') {
                assert!(valid_token(tok), "token {tok:?} of {s:?} in {k:?}");
            }
        }
    }

    #[test]
    fn wildcards_in_names_are_not_wildcards_pr_8225() {
        assert_eq!(topic_key(&t("foo/>"), 0).key, "m.foo._3E");
        assert_eq!(topic_key(&t("foo/*"), 0).key, "m.foo._2A");
        assert_eq!(topic_key(&t("a.b"), 0).key, "m.a_2Eb");
        assert_eq!(topic_key(&t("/"), 0).key, "m._._");
        assert_eq!(topic_key(&t("$SYS/x"), 0).key, "d._24SYS.x");
    }

    #[test]
    fn non_canonical_tokens_are_refused() {
        // `_41` would be "A", which is never escaped: refusing it keeps the code injective.
        assert!(decode_key("m._41").is_err());
        assert!(decode_key("m._4").is_err());
        assert!(decode_key("m._zz").is_err());
        assert!(decode_key("m.a b").is_err());
        assert!(decode_key("x.a").is_err());
        assert!(decode_key("m._24SYS").is_err(), "a $-topic outside d");
        assert!(decode_key("d.a").is_err(), "an ordinary topic inside d");
        assert!(decode_key("m._FF").is_err(), "not UTF-8");
    }

    #[test]
    fn mqtt_4_7_1_2_hash_covers_the_parent_level() {
        let f = |s: &str| filter_subjects(&TopicFilter::parse(s).unwrap(), 0);
        assert_eq!(f("a/#"), vec!["m.a", "m.a.>", "h.>"]);
        assert_eq!(f("#"), vec!["m.>", "h.>"]);
        assert_eq!(f("a/+/c"), vec!["m.a.*.c", "h.>"]);
        assert_eq!(f("+"), vec!["m.*", "h.>"]);
        // MQTT-4.7.2-1: leading wildcards stay out of the `$` namespace.
        assert_eq!(f("$SYS/#"), vec!["d._24SYS", "d._24SYS.>", "h.>"]);
        assert_eq!(f("a.b/*"), vec!["m.a_2Eb._2A", "h.>"]);
    }

    #[test]
    fn long_topics_are_hashed_and_long_filters_widen() {
        let long = "x/".repeat(2000) + "end";
        let k = topic_key(&t(&long), 20);
        assert!(k.hashed);
        assert_eq!(k.key.len(), 2 + 64);
        assert_eq!(decode_key(&k.key).unwrap(), Decoded::Hashed);
        // Two different long topics get different keys.
        let other = "x/".repeat(2000) + "enD";
        assert_ne!(topic_key(&t(&other), 20).key, k.key);
        let max = "é".repeat(32_767);
        assert!(topic_key(&t(&max), 20).hashed);
        let f = TopicFilter::parse(&(long.clone() + "/#")).unwrap();
        assert_eq!(filter_subjects(&f, 20), vec!["m.>", "h.>"]);
    }

    /// A NATS subject filter matches a subject (tokens, `*`, `>`), as nats-server does.
    fn nats_matches(filter: &str, subject: &str) -> bool {
        let f: Vec<&str> = filter.split('.').collect();
        let s: Vec<&str> = subject.split('.').collect();
        for (i, ft) in f.iter().enumerate() {
            match *ft {
                ">" => return s.len() > i,
                "*" => {
                    if s.get(i).is_none() {
                        return false;
                    }
                }
                lit => {
                    if s.get(i) != Some(&lit) {
                        return false;
                    }
                }
            }
        }
        f.len() == s.len()
    }

    fn level() -> impl Strategy<Value = String> {
        // Levels from an alphabet heavy in the characters that matter: separators of
        // NATS, escapes, wildcards-as-text, `$`, empty levels and non-ASCII.
        proptest::collection::vec(
            prop_oneof![
                Just(".".to_string()),
                Just(" ".to_string()),
                Just("*".to_string()),
                Just(">".to_string()),
                Just("_".to_string()),
                Just("$".to_string()),
                Just("-".to_string()),
                Just("=".to_string()),
                Just("é".to_string()),
                Just("🙂".to_string()),
                "[a-zA-Z0-9]",
                any::<char>()
                    .prop_filter("no NUL, /, wildcards", |c| !matches!(
                        c,
                        '\0' | '/' | '+' | '#'
                    ))
                    .prop_map(|c| c.to_string()),
            ],
            0..6,
        )
        .prop_map(|v| v.concat())
    }

    fn topic() -> impl Strategy<Value = String> {
        proptest::collection::vec(level(), 1..6)
            .prop_map(|v| v.join("/"))
            .prop_filter("valid topic", |s| TopicName::parse(s).is_ok())
    }

    proptest! {
        #[test]
        fn topic_round_trips_through_subject_and_key(s in topic()) {
            let name = t(&s);
            let k = topic_key(&name, 16);
            prop_assume!(!k.hashed);
            for tok in k.key.split('.') {
                prop_assert!(valid_token(tok), "token {:?} of {:?}", tok, s);
            }
            prop_assert_eq!(decode_key(&k.key).unwrap(), Decoded::Topic(name));
        }

        #[test]
        fn nats_filters_match_exactly_what_mqtt_filters_match(s in topic(), mask in proptest::collection::vec(0u8..3, 1..6)) {
            // A filter derived from the topic (some levels turned into `+`, maybe cut
            // with `#`), and a check on a sibling topic too.
            let name = t(&s);
            let levels: Vec<&str> = s.split('/').collect();
            let mut f = Vec::new();
            for (i, l) in levels.iter().enumerate() {
                match mask.get(i).copied().unwrap_or(0) {
                    1 => f.push("+".to_string()),
                    2 => { f.push("#".to_string()); break; }
                    _ => f.push(l.to_string()),
                }
            }
            let filter = TopicFilter::parse(&f.join("/")).unwrap();
            let key = topic_key(&name, 0);
            prop_assume!(!key.hashed);
            let subjects = filter_subjects(&filter, 0);
            let nats = subjects.iter().any(|fs| nats_matches(fs, &key.key));
            prop_assert_eq!(nats, filter.matches(&name), "filter {:?} topic {:?} subjects {:?}", filter, s, subjects);
            let sibling = t(&format!("{s}/x"));
            let sk = topic_key(&sibling, 0);
            if !sk.hashed {
                let nats = subjects.iter().any(|fs| nats_matches(fs, &sk.key));
                prop_assert_eq!(nats, filter.matches(&sibling));
            }
        }
    }
}
