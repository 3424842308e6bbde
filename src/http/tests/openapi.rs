//! The router agrees with `openapi/ponte.yaml`.

use super::*;

/// The declared response codes of `method` on `path` in the spec.
pub(super) fn declared(spec: &serde_yaml::Value, path: &str, method: &str) -> Option<Vec<u16>> {
    let op = spec.get("paths")?.get(path)?.get(method)?;
    let responses = op.get("responses")?.as_mapping()?;
    Some(
        responses
            .keys()
            .filter_map(|k| {
                k.as_str()
                    .and_then(|s| s.parse().ok())
                    .or_else(|| k.as_u64().and_then(|n| u16::try_from(n).ok()))
            })
            .collect(),
    )
}

#[tokio::test]
async fn openapi_spec_and_router_agree() {
    let spec: serde_yaml::Value =
        serde_yaml::from_str(crate::http::OPENAPI_YAML).expect("openapi/ponte.yaml parses");
    assert_eq!(spec["openapi"].as_str(), Some("3.1.0"));
    let paths = spec["paths"].as_mapping().expect("paths");
    let methods = [
        "get", "head", "put", "post", "delete", "options", "patch", "trace",
    ];
    // Every declared operation is routed; every undeclared method is 405.
    for (template, _) in paths {
        let template = template.as_str().expect("path");
        let concrete = template.replace("{topic}", "spec/t");
        for m in methods {
            let h = harness();
            h.put("/resources/spec/t", "v").await;
            let method = Method::from_bytes(m.to_ascii_uppercase().as_bytes()).expect("method");
            let r = h.call(method, &concrete, "").await;
            match declared(&spec, template, m) {
                Some(codes) => {
                    assert!(
                        codes.contains(&r.status().as_u16()),
                        "{m} {concrete} gave {} not declared in {codes:?}",
                        r.status()
                    );
                }
                None => assert_eq!(
                    r.status(),
                    StatusCode::METHOD_NOT_ALLOWED,
                    "{m} {template} is not in the spec"
                ),
            }
        }
    }

    // Every status the tests provoke is declared for its operation.
    let t = "/resources/{topic}";
    let h = harness();
    let mut seen: Vec<(&str, u16)> = Vec::new();
    let mut record = |m: &'static str, r: &Response| seen.push((m, r.status().as_u16()));
    let with = |m: Method, uri: &str, name: http::HeaderName, v: &str, body: &'static str| {
        req(m, uri)
            .header(name, v)
            .body(Body::from(body))
            .expect("request")
    };
    let r = h.put("/resources/p", "1").await;
    record("put", &r);
    let tag = etag(&r);
    record("put", &h.put("/resources/p", "2").await);
    record("post", &h.call(Method::POST, "/resources/q", "1").await);
    record("post", &h.call(Method::POST, "/resources/q", "2").await);
    record("put", &h.put("/resources/+", "1").await);
    record("post", &h.call(Method::POST, "/resources/#", "1").await);
    record(
        "put",
        &h.send(with(Method::PUT, "/resources/p", IF_MATCH, &tag, "3"))
            .await,
    );
    record(
        "post",
        &h.send(with(Method::POST, "/resources/p", IF_NONE_MATCH, "*", "3"))
            .await,
    );
    record("get", &h.call(Method::GET, "/resources/p", "").await);
    record("head", &h.call(Method::HEAD, "/resources/p", "").await);
    record("get", &h.call(Method::GET, "/resources/none", "").await);
    record("head", &h.call(Method::HEAD, "/resources/none", "").await);
    record("get", &h.call(Method::GET, "/resources/+", "").await);
    record("head", &h.call(Method::HEAD, "/resources/+", "").await);
    record(
        "get",
        &h.send(with(Method::GET, "/resources/p", IF_NONE_MATCH, "*", ""))
            .await,
    );
    record(
        "head",
        &h.send(with(Method::HEAD, "/resources/p", IF_NONE_MATCH, "*", ""))
            .await,
    );
    record(
        "get",
        &h.send(with(Method::GET, "/resources/p", IF_MATCH, "\"0\"", ""))
            .await,
    );
    record(
        "head",
        &h.send(with(Method::HEAD, "/resources/p", IF_MATCH, "\"0\"", ""))
            .await,
    );
    record("get", &h.send(sse_request("/resources/p")).await);
    record(
        "delete",
        &h.send(with(Method::DELETE, "/resources/p", IF_MATCH, "\"0\"", ""))
            .await,
    );
    record("delete", &h.call(Method::DELETE, "/resources/p", "").await);
    record("delete", &h.call(Method::DELETE, "/resources/p", "").await);
    record("delete", &h.call(Method::DELETE, "/resources/+", "").await);
    record(
        "options",
        &h.call(Method::OPTIONS, "/resources/p", "").await,
    );
    let mut small = Config::ephemeral();
    small.http.max_body = 1;
    let hs = harness_with(small);
    record("put", &hs.put("/resources/p", "too big").await);
    record(
        "post",
        &hs.call(Method::POST, "/resources/p", "too big").await,
    );
    let hf = failing_harness();
    record("put", &hf.put("/resources/p", "v").await);
    record("post", &hf.call(Method::POST, "/resources/p", "v").await);
    for (m, status) in &seen {
        let codes = declared(&spec, t, m).unwrap_or_default();
        assert!(
            codes.contains(status),
            "{m} {t} answered {status}, which the spec does not declare ({codes:?})"
        );
    }
    let distinct: std::collections::BTreeSet<u16> = seen.iter().map(|(_, s)| *s).collect();
    for expected in [200, 201, 204, 304, 400, 404, 412, 413, 503] {
        assert!(
            distinct.contains(&expected),
            "{expected} was not provoked: {distinct:?}"
        );
    }
}
