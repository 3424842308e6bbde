//! CoAP Content-Format registry (RFC 7252 §12.3 and the IANA
//! "CoAP Content-Formats" registry): maps numeric Content-Format / Accept
//! values to HTTP media types and back, so the HTTP and CoAP views of one
//! store agree (RFC 8075).

/// Registered (number, canonical media type) pairs.
const REGISTRY: &[(u16, &str)] = &[
    (0, "text/plain;charset=utf-8"),
    (16, "application/cose;cose-type=\"cose-encrypt0\""),
    (17, "application/cose;cose-type=\"cose-mac0\""),
    (18, "application/cose;cose-type=\"cose-sign1\""),
    (19, "application/ace+cbor"),
    (21, "image/gif"),
    (22, "image/jpeg"),
    (23, "image/png"),
    (40, "application/link-format"),
    (41, "application/xml"),
    (42, "application/octet-stream"),
    (47, "application/exi"),
    (50, "application/json"),
    (51, "application/json-patch+json"),
    (52, "application/merge-patch+json"),
    (60, "application/cbor"),
    (61, "application/cwt"),
    (62, "application/multipart-core"),
    (63, "application/cbor-seq"),
    (101, "application/cose-key"),
    (102, "application/cose-key-set"),
    (110, "application/senml+json"),
    (111, "application/sensml+json"),
    (112, "application/senml+cbor"),
    (113, "application/sensml+cbor"),
    (114, "application/senml-exi"),
    (115, "application/sensml-exi"),
    (256, "application/coap-group+json"),
    (310, "application/senml+xml"),
    (311, "application/sensml+xml"),
    (432, "application/td+json"),
    (10000, "application/vnd.ocf+cbor"),
    (10001, "application/oscore"),
    (10002, "application/javascript"),
    (11542, "application/vnd.oma.lwm2m+tlv"),
    (11543, "application/vnd.oma.lwm2m+json"),
    (11544, "application/vnd.oma.lwm2m+cbor"),
    (20000, "text/css"),
    (30000, "image/svg+xml"),
];

/// Returns the Content-Format number of an HTTP media type, ignoring case
/// and whitespace around parameters. Bare `text/plain` maps to 0 because
/// CoAP has no other plain-text format and HTTP clients often omit charset.
pub fn from_media_type(media_type: &str) -> Option<u16> {
    let normalized: String = media_type
        .split(';')
        .map(|part| part.trim().to_ascii_lowercase())
        .filter(|part| !part.is_empty())
        .collect::<Vec<_>>()
        .join(";");
    if normalized == "text/plain" {
        return Some(0);
    }
    REGISTRY
        .iter()
        .find(|(_, name)| *name == normalized)
        .map(|(number, _)| *number)
}

/// Returns the canonical media type of a Content-Format number.
pub fn to_media_type(content_format: u16) -> Option<&'static str> {
    REGISTRY
        .iter()
        .find(|(number, _)| *number == content_format)
        .map(|(_, name)| *name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc7252_12_3_registry_round_trips() {
        for (number, name) in REGISTRY {
            assert_eq!(from_media_type(name), Some(*number));
            assert_eq!(to_media_type(*number), Some(*name));
        }
    }

    #[test]
    fn rfc7252_12_3_text_plain_variants_are_format_0() {
        assert_eq!(from_media_type("text/plain"), Some(0));
        assert_eq!(from_media_type("Text/Plain; charset=UTF-8"), Some(0));
        assert_eq!(from_media_type("application/json"), Some(50));
        assert_eq!(from_media_type("application/cbor"), Some(60));
        assert_eq!(from_media_type("application/x-unknown"), None);
        assert_eq!(to_media_type(9999), None);
    }
}
