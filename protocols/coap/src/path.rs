//! [`UriPath`]: a request's Uri-Path segments in one buffer (RFC 7252 §5.10.1, §6.4).

use std::fmt;

/// The Uri-Path of a request: its segments, each valid UTF-8 (RFC 7252 §5.10.1 requires
/// it; the endpoint answers 4.00 otherwise), held as one string instead of one allocation
/// per segment. `/r/a/b` is the segments `r`, `a`, `b` and the text `r/a/b`.
///
/// A segment may itself contain `/` (`%2F` in a URI): then the text alone would not say
/// where segments end, and the ends are kept beside it.
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct UriPath {
    /// The segments joined by `/`.
    text: String,
    /// How many segments there are (`""` is no segment or one empty one).
    count: usize,
    /// Where each segment ends in `text`, kept only once a segment contains `/`; while
    /// it is `None`, the separators are exactly the `/`s of `text`.
    ends: Option<Vec<usize>>,
}

/// A [`UriPath`] being read from Uri-Path options: bytes, checked as UTF-8 once, all
/// together, when the last segment is in (a `/` joins two segments, so the text is UTF-8
/// exactly when every segment is).
#[derive(Debug, Default)]
pub(crate) struct RawPath {
    /// The segments joined by `/`.
    bytes: Vec<u8>,
    /// See [`UriPath::count`].
    count: usize,
    /// See [`UriPath::ends`].
    ends: Option<Vec<usize>>,
}

impl RawPath {
    /// A path with room for `capacity` bytes of text.
    pub(crate) fn with_capacity(capacity: usize) -> Self {
        Self {
            bytes: Vec::with_capacity(capacity),
            ..Self::default()
        }
    }

    /// Appends a segment.
    pub(crate) fn push(&mut self, segment: &[u8]) {
        if self.ends.is_none() && segment.contains(&b'/') {
            // Until now every `/` was a separator.
            let separators = self.bytes.iter().enumerate().filter(|(_, b)| **b == b'/');
            let ends = separators.map(|(i, _)| i);
            let last = (self.count > 0).then_some(self.bytes.len());
            self.ends = Some(ends.chain(last).collect());
        }
        if self.count > 0 {
            self.bytes.push(b'/');
        }
        self.bytes.extend_from_slice(segment);
        self.count += 1;
        if let Some(ends) = &mut self.ends {
            ends.push(self.bytes.len());
        }
    }

    /// The path, or the index of the first segment that is not UTF-8.
    pub(crate) fn finish(self) -> Result<UriPath, usize> {
        match String::from_utf8(self.bytes) {
            Ok(text) => Ok(UriPath {
                text,
                count: self.count,
                ends: self.ends,
            }),
            Err(e) => {
                let bytes = e.into_bytes();
                let mut at = 0;
                for index in 0..self.count {
                    let end = segment_end(&bytes, self.ends.as_deref(), index, at);
                    if std::str::from_utf8(bytes.get(at..end).unwrap_or_default()).is_err() {
                        return Err(index);
                    }
                    at = end + 1;
                }
                Err(0)
            }
        }
    }
}

/// Where segment `index`, which starts at `at`, ends in `text`.
fn segment_end(text: &[u8], ends: Option<&[usize]>, index: usize, at: usize) -> usize {
    match ends.and_then(|e| e.get(index)) {
        Some(end) => *end,
        None => text
            .get(at..)
            .and_then(|rest| rest.iter().position(|b| *b == b'/'))
            .map_or(text.len(), |i| at + i),
    }
}

impl UriPath {
    /// The segments, in order.
    pub fn segments(&self) -> Segments<'_> {
        Segments {
            path: self,
            index: 0,
            at: 0,
        }
    }

    /// Number of segments.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether there is no segment (the path `/`).
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The segments joined by `/`, without a leading one: `r/a/b`.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// When the first segment is `first` and at least one follows: the segments after it,
    /// joined by `/` (`r/a/b` after `r` is `a/b`), without copying them.
    pub fn after(&self, first: &str) -> Option<&str> {
        let mut segments = self.segments();
        if self.count < 2 || segments.next() != Some(first) {
            return None;
        }
        self.text.get(first.len() + 1..)
    }
}

impl<S: AsRef<str>> FromIterator<S> for UriPath {
    fn from_iter<I: IntoIterator<Item = S>>(segments: I) -> Self {
        let mut path = RawPath::default();
        for segment in segments {
            path.push(segment.as_ref().as_bytes());
        }
        // Joined `str`s are UTF-8.
        path.finish().unwrap_or_default()
    }
}

impl<S: AsRef<str>> PartialEq<[S]> for UriPath {
    fn eq(&self, other: &[S]) -> bool {
        self.count == other.len() && self.segments().zip(other).all(|(a, b)| a == b.as_ref())
    }
}

impl<S: AsRef<str>, const N: usize> PartialEq<[S; N]> for UriPath {
    fn eq(&self, other: &[S; N]) -> bool {
        *self == other[..]
    }
}

impl<S: AsRef<str>> PartialEq<Vec<S>> for UriPath {
    fn eq(&self, other: &Vec<S>) -> bool {
        *self == other[..]
    }
}

impl fmt::Debug for UriPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.segments()).finish()
    }
}

/// The segments of a [`UriPath`].
#[derive(Debug, Clone)]
pub struct Segments<'a> {
    /// The path.
    path: &'a UriPath,
    /// Index of the next segment.
    index: usize,
    /// Where it starts in the text.
    at: usize,
}

impl<'a> Iterator for Segments<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        if self.index >= self.path.count {
            return None;
        }
        let text = &self.path.text;
        let end = segment_end(
            text.as_bytes(),
            self.path.ends.as_deref(),
            self.index,
            self.at,
        );
        let segment = text.get(self.at..end)?;
        self.index += 1;
        self.at = end + 1;
        Some(segment)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc7252_6_4_segments_and_text() {
        let path: UriPath = ["r", "kitchen", "temp"].into_iter().collect();
        assert_eq!(path, ["r", "kitchen", "temp"]);
        assert_eq!(path.as_str(), "r/kitchen/temp");
        assert_eq!(path.len(), 3);
        assert_eq!(path.after("r"), Some("kitchen/temp"));
        assert_eq!(path.after("x"), None);
        assert_eq!(format!("{path:?}"), r#"["r", "kitchen", "temp"]"#);
    }

    #[test]
    fn rfc7252_6_4_empty_segments_count() {
        let none = UriPath::default();
        assert!(none.is_empty());
        assert_eq!(none.segments().count(), 0);
        let one_empty: UriPath = [""].into_iter().collect();
        assert_eq!(one_empty, [""]);
        assert_ne!(none, one_empty);
        let r_empty: UriPath = ["r", ""].into_iter().collect();
        assert_eq!(r_empty.after("r"), Some(""));
        let r_only: UriPath = ["r"].into_iter().collect();
        assert_eq!(r_only.after("r"), None);
        let slashes: UriPath = ["r", "", ""].into_iter().collect();
        assert_eq!(slashes.after("r"), Some("/"));
    }

    #[test]
    fn rfc7252_5_10_1_the_first_segment_that_is_not_utf8_is_named() {
        for (segments, bad) in [
            (&[&b"r"[..], b"ok", b"\xff"][..], 2),
            (&[&b"\xc3"[..], b"\xa9"], 0),
            (&[&b"a/b"[..], b"\xe2\x82", b"c"], 1),
        ] {
            let mut raw = RawPath::default();
            for s in segments {
                raw.push(s);
            }
            assert_eq!(raw.finish(), Err(bad), "{segments:?}");
        }
        let mut raw = RawPath::with_capacity(8);
        raw.push("é".as_bytes());
        raw.push(b"x");
        assert_eq!(
            raw.finish().map(|p| p.as_str().to_owned()),
            Ok("é/x".to_owned())
        );
    }

    #[test]
    fn rfc7252_6_4_a_segment_may_contain_a_slash() {
        let path: UriPath = ["a", "b/c", "", "d"].into_iter().collect();
        assert_eq!(path, ["a", "b/c", "", "d"]);
        assert_eq!(path.as_str(), "a/b/c//d");
        assert_ne!(path, ["a", "b", "c", "", "d"]);
        let joined: UriPath = ["a", "b", "c", "", "d"].into_iter().collect();
        assert_ne!(path, joined, "same text, other segments");
        let leading: UriPath = ["x/", "y"].into_iter().collect();
        assert_eq!(leading, ["x/", "y"]);
        assert_eq!(leading.segments().last(), Some("y"));
        let first: UriPath = ["r/x", "y"].into_iter().collect();
        assert_eq!(first.after("r"), None);
        assert_eq!(first.after("r/x"), Some("y"));
    }
}
