//! The header values describing a stored value (`ETag`, `Last-Modified`, `Content-Type`,
//! `Content-Length`, and the whole header set of a 200 answer), formatted once per value
//! version and per worker thread instead of once per response.
//!
//! The cache key is everything the headers are made of: the version, the second of the
//! update, the payload's length and the media type. The version alone is not enough:
//! it is unique within one gateway (one counter assigns them and a value never changes
//! under its version), but several gateways can run in one process (tests, embedders), and
//! a `Content-Length` taken from another gateway's value of the same version would frame
//! the answer wrongly. Each runtime worker keeps the headers of the last few versions it served in
//! a thread-local; a hit is one reference count, a miss formats them without intermediate
//! `String`s. This takes the per-GET `format!`, `fmt_http_date` and header allocations off
//! the hot path (issue 6, fix 4). A 200 answer clones [`ValueHeaders::ok`] whole (two
//! allocations and a copy) instead of hashing seven headers into an empty map one by one
//! (BENCHMARKS.md, "HTTP GET overhead").

use std::cell::RefCell;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_LENGTH, CONTENT_TYPE, ETAG, LAST_MODIFIED};
use http::{HeaderMap, HeaderValue};

use crate::model::RetainedValue;

/// The media type of a value stored without one.
pub(super) const DEFAULT_TYPE: &str = "application/octet-stream";

/// Values change at any time: caches must revalidate (cheap, thanks to the ETag).
pub(super) const CACHE_POLICY: &str = "no-cache";

/// Versions remembered per worker: enough for a handful of hot values, small enough that a
/// linear scan beats hashing.
const SLOTS: usize = 8;

/// The formatted headers of one value version.
pub(super) struct ValueHeaders {
    /// The value these belong to (the cache key).
    key: Key,
    /// `ETag`: the version in lowercase hex, quoted (RFC 9110 §8.8.3).
    pub etag: HeaderValue,
    /// `Last-Modified` (IMF-fixdate), at the one-second resolution HTTP dates have.
    pub last_modified: HeaderValue,
    /// Every header of a 200 answer carrying the whole value: the two above,
    /// `Content-Type` (the stored media type, or [`DEFAULT_TYPE`] when it has none or it is
    /// not a valid header value), `Content-Length`, `Cache-Control` and the sandbox headers
    /// of the edge (`edge.rs`), in a map sized for exactly these. `Content-Length` is set here so no layer formats it into a fresh
    /// allocation per response.
    pub ok: HeaderMap,
}

/// What the headers of a value are made of.
#[derive(PartialEq, Eq)]
struct Key {
    /// The version (the ETag).
    version: u64,
    /// The second of the update (Last-Modified).
    updated: u64,
    /// The payload's length (Content-Length).
    len: usize,
    /// The stored media type (Content-Type).
    content_type: Option<Arc<str>>,
}

impl Key {
    /// The key of `value`.
    fn of(value: &RetainedValue) -> Self {
        Key {
            version: value.version,
            updated: seconds(value.updated),
            len: value.payload.len(),
            content_type: value.content_type.clone(),
        }
    }

    /// Whether `value` has this key (without building one).
    fn matches(&self, value: &RetainedValue) -> bool {
        self.version == value.version
            && self.len == value.payload.len()
            && self.updated == seconds(value.updated)
            && self.content_type.as_deref() == value.content_type.as_deref()
    }
}

/// Whole seconds since the epoch (0 before it), the resolution of HTTP dates.
fn seconds(when: SystemTime) -> u64 {
    when.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Per-worker cache: the last [`SLOTS`] versions served, replaced round-robin.
struct Cache {
    /// The remembered versions.
    slots: Vec<Arc<ValueHeaders>>,
    /// The slot the next miss overwrites once `slots` is full.
    next: usize,
    /// The last formatted date and the second it names: writes in the same second (the
    /// common case under load) share one `Last-Modified` even when their versions differ.
    date: Option<(u64, HeaderValue)>,
}

thread_local! {
    static CACHE: RefCell<Cache> = const {
        RefCell::new(Cache {
            slots: Vec::new(),
            next: 0,
            date: None,
        })
    };
}

/// The headers of `value`, from this worker's cache or freshly formatted.
pub(super) fn of(value: &RetainedValue) -> Arc<ValueHeaders> {
    CACHE.with(|cache| {
        let mut cache = cache.borrow_mut();
        if let Some(hit) = cache.slots.iter().find(|h| h.key.matches(value)) {
            return hit.clone();
        }
        let last_modified = cache.date_of(value.updated);
        let headers = Arc::new(ValueHeaders::new(value, last_modified));
        if cache.slots.len() < SLOTS {
            cache.slots.push(headers.clone());
        } else {
            let i = cache.next;
            cache.slots[i] = headers.clone();
            cache.next = (i + 1) % SLOTS;
        }
        headers
    })
}

impl ValueHeaders {
    /// Format the headers of `value`, dated `last_modified`.
    fn new(value: &RetainedValue, last_modified: HeaderValue) -> Self {
        let etag = etag(value.version);
        let content_type = value
            .content_type
            .as_deref()
            .and_then(|t| HeaderValue::from_str(t).ok())
            .unwrap_or(HeaderValue::from_static(DEFAULT_TYPE));
        let mut ok = HeaderMap::with_capacity(7);
        ok.insert(CONTENT_TYPE, content_type);
        ok.insert(CONTENT_LENGTH, HeaderValue::from(value.payload.len()));
        ok.insert(ETAG, etag.clone());
        ok.insert(LAST_MODIFIED, last_modified.clone());
        ok.insert(CACHE_CONTROL, HeaderValue::from_static(CACHE_POLICY));
        super::edge::sandbox(&mut ok);
        ValueHeaders {
            key: Key::of(value),
            etag,
            last_modified,
            ok,
        }
    }
}

impl Cache {
    /// `Last-Modified` for `when`, reusing the last one when it names the same second.
    fn date_of(&mut self, when: SystemTime) -> HeaderValue {
        let secs = seconds(when);
        if let Some((s, v)) = &self.date {
            if *s == secs {
                return v.clone();
            }
        }
        let text = httpdate::fmt_http_date(when);
        let v = HeaderValue::from_maybe_shared(Bytes::from(text))
            .unwrap_or(HeaderValue::from_static("Thu, 01 Jan 1970 00:00:00 GMT"));
        self.date = Some((secs, v.clone()));
        v
    }
}

/// The entity tag of `version`: `"` + lowercase hex + `"`, formatted on the stack (the same
/// text as [`RetainedValue::http_etag`]).
pub(super) fn etag(version: u64) -> HeaderValue {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut buf = [0u8; 18];
    let digits = (16 - version.leading_zeros() as usize / 4).max(1);
    buf[0] = b'"';
    for i in 0..digits {
        let nibble = (version >> (4 * (digits - 1 - i))) & 0xf;
        buf[1 + i] = HEX[nibble as usize];
    }
    buf[1 + digits] = b'"';
    HeaderValue::from_bytes(&buf[..digits + 2]).expect("hex digits and quotes are visible ASCII")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etag_matches_the_value_formatting() {
        for v in [0u64, 1, 0xf, 0x10, 0x1f, 0xabc, u64::MAX >> 4, u64::MAX] {
            let value = RetainedValue {
                payload: Bytes::new(),
                content_type: None,
                qos: crate::model::QoS::AtLeastOnce,
                version: v,
                updated: SystemTime::now(),
            };
            assert_eq!(etag(v).to_str().unwrap(), value.http_etag());
        }
    }

    /// Two gateways in one process number their values independently: the same version
    /// with another length, type or date must not get the other's headers.
    #[test]
    fn the_same_version_of_another_value_gets_its_own_headers() {
        let at = |secs| UNIX_EPOCH + std::time::Duration::from_secs(secs);
        let mk = |payload: &'static str, ct: Option<&str>, updated| RetainedValue {
            payload: Bytes::from_static(payload.as_bytes()),
            content_type: ct.map(Into::into),
            qos: crate::model::QoS::AtLeastOnce,
            version: 77_777,
            updated,
        };
        let a = of(&mk("abc", None, at(1_700_000_000)));
        assert_eq!(a.ok[CONTENT_LENGTH], "3");
        let b = of(&mk("abcdef", None, at(1_700_000_000)));
        assert_eq!(b.ok[CONTENT_LENGTH], "6");
        let c = of(&mk("abcdef", Some("text/plain"), at(1_700_000_000)));
        assert_eq!(c.ok[CONTENT_TYPE], "text/plain");
        let d = of(&mk("abcdef", Some("text/plain"), at(1_700_000_001)));
        assert_eq!(d.last_modified, "Tue, 14 Nov 2023 22:13:21 GMT");
        assert!(Arc::ptr_eq(
            &d,
            &of(&mk("ghijkl", Some("text/plain"), at(1_700_000_001)))
        ));
    }

    #[test]
    fn cached_headers_follow_the_version() {
        let mk = |version, ct: Option<&str>| RetainedValue {
            payload: Bytes::new(),
            content_type: ct.map(Into::into),
            qos: crate::model::QoS::AtLeastOnce,
            version,
            updated: UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000),
        };
        for round in 0..3 {
            for v in 1..=(SLOTS as u64 * 2) {
                let ct = if v % 2 == 0 { Some("text/plain") } else { None };
                let h = of(&mk(v + round, ct));
                assert_eq!(h.etag, etag(v + round));
                assert_eq!(h.last_modified, "Tue, 14 Nov 2023 22:13:20 GMT");
            }
        }
        assert_eq!(
            of(&mk(1000, Some("text/plain"))).ok[CONTENT_TYPE],
            "text/plain"
        );
        assert_eq!(of(&mk(1001, None)).ok[CONTENT_TYPE], DEFAULT_TYPE);
        assert_eq!(
            of(&mk(1002, Some("bad\nvalue"))).ok[CONTENT_TYPE],
            DEFAULT_TYPE
        );
        let ok = &of(&mk(1003, Some("text/plain"))).ok;
        let names: Vec<_> = ok.keys().map(|k| k.as_str()).collect();
        assert_eq!(
            names,
            [
                "content-type",
                "content-length",
                "etag",
                "last-modified",
                "cache-control",
                "content-security-policy",
                "x-content-type-options"
            ]
        );
        assert_eq!(ok[CONTENT_LENGTH], "0");
        assert_eq!(ok[ETAG], etag(1003));
        assert_eq!(ok[CONTENT_TYPE], "text/plain");
    }
}
