//! Conditional requests (RFC 9110 §13): parsing `If-Match` / `If-None-Match` and turning
//! them into the core's [`Precondition`].
//!
//! ponte's entity tags are the retained value's version in lowercase hex, quoted
//! (`"1f"`, see [`RetainedValue::http_etag`]). A tag in any other form is valid syntax but
//! can never match a current value, so it is kept as "matches nothing" rather than refused.
//! `If-Match` uses the strong comparison (weak tags never match, RFC 9110 §13.1.1);
//! `If-None-Match` uses the weak one (§13.1.2).

use http::header::{HeaderName, IF_MATCH, IF_NONE_MATCH};
use http::HeaderMap;

use super::problem::Problem;
use crate::broker::retained::{Precondition, TagSet};
use crate::model::RetainedValue;

/// One entity tag from a request header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct EntityTag {
    /// `W/` prefix: usable only with the weak comparison.
    pub weak: bool,
    /// The version the opaque tag names, or `None` when it is not one of ours (then it
    /// matches nothing).
    pub version: Option<u64>,
}

/// The value of an `If-Match` or `If-None-Match` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum TagList {
    /// `*`: any current representation.
    Any,
    /// A list of entity tags.
    Tags(Vec<EntityTag>),
}

impl TagList {
    /// The core condition for `If-Match` (strong comparison: weak tags drop out).
    pub(super) fn strong_set(&self) -> TagSet {
        match self {
            TagList::Any => TagSet::Any,
            TagList::Tags(t) => TagSet::Versions(
                t.iter()
                    .filter(|t| !t.weak)
                    .filter_map(|t| t.version)
                    .collect(),
            ),
        }
    }

    /// The core condition for `If-None-Match` (weak comparison).
    pub(super) fn weak_set(&self) -> TagSet {
        match self {
            TagList::Any => TagSet::Any,
            TagList::Tags(t) => TagSet::Versions(t.iter().filter_map(|t| t.version).collect()),
        }
    }

    /// Whether `value` matches with the weak comparison (`If-None-Match` on GET).
    pub(super) fn matches_weak(&self, value: &RetainedValue) -> bool {
        match self {
            TagList::Any => true,
            TagList::Tags(t) => t.iter().any(|t| t.version == Some(value.version)),
        }
    }

    /// Whether `value` matches with the strong comparison (`If-Match`).
    pub(super) fn matches_strong(&self, value: &RetainedValue) -> bool {
        match self {
            TagList::Any => true,
            TagList::Tags(t) => t
                .iter()
                .any(|t| !t.weak && t.version == Some(value.version)),
        }
    }
}

/// The conditional headers of one request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Conditions {
    /// `If-Match`, when present.
    pub if_match: Option<TagList>,
    /// `If-None-Match`, when present.
    pub if_none_match: Option<TagList>,
}

impl Conditions {
    /// Parse `If-Match` and `If-None-Match`; malformed syntax is a 400 naming the header.
    pub(super) fn from_headers(headers: &HeaderMap) -> Result<Self, Problem> {
        Ok(Conditions {
            if_match: parse_header(headers, &IF_MATCH, "If-Match")?,
            if_none_match: parse_header(headers, &IF_NONE_MATCH, "If-None-Match")?,
        })
    }

    /// The precondition of a write (PUT/POST).
    pub(super) fn precondition(&self) -> Precondition {
        Precondition {
            if_match: self.if_match.as_ref().map(TagList::strong_set),
            if_none_match: self.if_none_match.as_ref().map(TagList::weak_set),
        }
    }
}

/// Parse every line of header `name` into one tag list (`None` when absent).
fn parse_header(
    headers: &HeaderMap,
    name: &HeaderName,
    label: &str,
) -> Result<Option<TagList>, Problem> {
    let mut tags = Vec::new();
    let mut any = false;
    let mut present = false;
    for value in headers.get_all(name) {
        present = true;
        let text = value.to_str().map_err(|_| {
            Problem::bad_request(format!(
                "the {label} header is not visible ASCII ({value:?}); it must be \"*\" or a list of quoted entity tags such as \"1f\""
            ))
        })?;
        match parse_list(text) {
            Some(TagList::Any) => any = true,
            Some(TagList::Tags(t)) => tags.extend(t),
            None => {
                return Err(Problem::bad_request(format!(
                    "the {label} header {text:?} is not \"*\" or a comma-separated list of entity tags such as \"1f\" or W/\"1f\" (RFC 9110 §8.8.3)"
                )))
            }
        }
    }
    Ok(match (present, any) {
        (false, _) => None,
        (true, true) => Some(TagList::Any),
        (true, false) => Some(TagList::Tags(tags)),
    })
}

/// Parse `*` or `#entity-tag` (RFC 9110 §13.1.1); `None` on a syntax error.
fn parse_list(text: &str) -> Option<TagList> {
    let trimmed = text.trim();
    if trimmed == "*" {
        return Some(TagList::Any);
    }
    let mut tags = Vec::new();
    let mut rest = trimmed;
    loop {
        rest = rest.trim_start_matches([' ', '\t', ',']);
        if rest.is_empty() {
            break;
        }
        let (weak, after) = match rest.strip_prefix("W/") {
            Some(r) => (true, r),
            None => (false, rest),
        };
        let inner = after.strip_prefix('"')?;
        let end = inner.find('"')?;
        let opaque = &inner[..end];
        if !opaque
            .bytes()
            .all(|b| b == 0x21 || (0x23..=0x7e).contains(&b) || b >= 0x80)
        {
            return None;
        }
        tags.push(EntityTag {
            weak,
            version: our_version(opaque),
        });
        rest = &inner[end + 1..];
        let next = rest.trim_start_matches([' ', '\t']);
        if !(next.is_empty() || next.starts_with(',')) {
            return None;
        }
        rest = next;
    }
    if tags.is_empty() {
        return None;
    }
    Some(TagList::Tags(tags))
}

/// The version an opaque tag names, if it is exactly one ponte would send.
fn our_version(opaque: &str) -> Option<u64> {
    let v = u64::from_str_radix(opaque, 16).ok()?;
    (format!("{v:x}") == opaque).then_some(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc9110_8_8_3_entity_tag_lists_parse() {
        assert_eq!(parse_list("*"), Some(TagList::Any));
        assert_eq!(
            parse_list(r#""1f", W/"2" , "xyzzy""#),
            Some(TagList::Tags(vec![
                EntityTag {
                    weak: false,
                    version: Some(0x1f)
                },
                EntityTag {
                    weak: true,
                    version: Some(2)
                },
                EntityTag {
                    weak: false,
                    version: None
                },
            ]))
        );
        assert_eq!(parse_list("1f"), None);
        assert_eq!(parse_list(r#""1f"x"#), None);
        assert_eq!(parse_list(""), None);
        assert_eq!(
            parse_list(r#""01""#),
            Some(TagList::Tags(vec![EntityTag {
                weak: false,
                version: None
            }]))
        );
    }

    #[test]
    fn rfc9110_13_1_1_if_match_uses_strong_comparison() {
        let l = parse_list(r#"W/"5", "6""#).unwrap_or(TagList::Any);
        assert_eq!(l.strong_set(), TagSet::Versions(vec![6]));
        assert_eq!(l.weak_set(), TagSet::Versions(vec![5, 6]));
    }
}
