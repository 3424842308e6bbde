//! `ponte config`: the effective configuration as a complete, commented TOML file.
//!
//! Every key is printed — a key that is not set as a commented-out line with its type — and
//! preceded by its meaning, which is the doc comment of its field (read through `schemars`,
//! so the text cannot drift from the code, and a key without a doc comment fails the test
//! below). The output parses back to the same configuration.

use serde_json::Value;

use super::env::var_name;
use super::Config;

/// Width of the comment lines.
const WIDTH: usize = 92;

/// The configuration as commented TOML.
pub fn to_commented_toml(config: &Config) -> String {
    let schema = schema();
    let value = serde_json::to_value(config).unwrap_or(Value::Null);
    let Value::Object(top) = value else {
        return String::new();
    };
    let mut out = String::new();
    out.push_str(
        "# ponte configuration, as in effect: the defaults, then the config file (-c), then\n\
         # PONTE_<SECTION>_<KEY> environment variables, then the flags. Every key is listed\n\
         # with its meaning; a commented-out key is not set. `ponte -c THIS_FILE` reads it back.\n",
    );
    for (key, v) in &top {
        if v.is_object() || is_table_array(v) {
            continue;
        }
        out.push('\n');
        key_line(&mut out, &schema, &schema, "", key, v);
    }
    for (section, v) in &top {
        let prop = property(&schema, &schema, section);
        match v {
            Value::Object(keys) => {
                out.push('\n');
                comment(&mut out, &description(&prop));
                out.push_str(&format!("[{section}]\n"));
                let def = resolve(&schema, &prop);
                for (key, v) in keys {
                    key_line(&mut out, &schema, &def, section, key, v);
                }
            }
            Value::Array(items) if is_table_array(v) => {
                out.push('\n');
                comment(&mut out, &description(&prop));
                if items.is_empty() {
                    out.push_str(&format!("# [[{section}]]  (none)\n"));
                }
                let item_schema = prop
                    .get("items")
                    .map(|i| resolve(&schema, i))
                    .unwrap_or(Value::Null);
                for item in items {
                    out.push_str(&format!("[[{section}]]\n"));
                    if let Value::Object(keys) = item {
                        for (key, v) in keys {
                            key_line(&mut out, &schema, &item_schema, "", key, v);
                        }
                    }
                }
            }
            _ => {}
        }
    }
    out
}

/// Whether `v` is a non-scalar array (an array of tables, or an empty one that the schema
/// says holds tables — printed apart from plain keys either way).
fn is_table_array(v: &Value) -> bool {
    matches!(v, Value::Array(items) if items.first().is_some_and(Value::is_object))
}

/// One key: its meaning, then `key = value` (commented out when not set).
fn key_line(out: &mut String, root: &Value, def: &Value, section: &str, key: &str, v: &Value) {
    let prop = property(root, def, key);
    comment(out, &description(&prop));
    let var = var_name(section, key);
    match to_toml(v) {
        Some(t) => out.push_str(&format!("{key} = {t}  # {var}\n")),
        None => out.push_str(&format!("# {key} = <{}>  # {var}\n", type_of(root, &prop))),
    }
}

/// The schema of the whole configuration, as JSON.
pub fn schema() -> Value {
    schemars::schema_for!(Config).to_value()
}

/// The schema of `key` in the object schema `def`.
fn property(root: &Value, def: &Value, key: &str) -> Value {
    let def = resolve(root, def);
    def.get("properties")
        .and_then(|p| p.get(key))
        .cloned()
        .unwrap_or(Value::Null)
}

/// Follow a `$ref` (also inside a one-branch `allOf`/`anyOf` with `null`).
fn resolve(root: &Value, s: &Value) -> Value {
    if let Some(r) = s.get("$ref").and_then(Value::as_str) {
        let name = r.rsplit('/').next().unwrap_or("");
        return root
            .get("$defs")
            .and_then(|d| d.get(name))
            .cloned()
            .unwrap_or(Value::Null);
    }
    for combinator in ["anyOf", "allOf", "oneOf"] {
        if let Some(Value::Array(branches)) = s.get(combinator) {
            if let Some(b) = branches
                .iter()
                .find(|b| b.get("$ref").is_some() && b.get("type") != Some(&Value::from("null")))
            {
                return resolve(root, b);
            }
        }
    }
    s.clone()
}

/// A field's doc comment, as one paragraph per blank line, rustdoc links made plain.
pub fn description(prop: &Value) -> String {
    let raw = prop
        .get("description")
        .and_then(Value::as_str)
        .unwrap_or("")
        .trim();
    let mut text = String::with_capacity(raw.len());
    let mut rest = raw;
    // [`x`](path) and [`x`] → `x`
    while let Some(i) = rest.find("[`") {
        text.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        match after.find("`]") {
            Some(j) => {
                text.push_str(&after[..j + 1]);
                let mut tail = &after[j + 2..];
                if tail.starts_with('(') {
                    if let Some(k) = tail.find(')') {
                        tail = &tail[k + 1..];
                    }
                }
                rest = tail;
            }
            None => {
                text.push_str("[`");
                rest = after.get(1..).unwrap_or("");
            }
        }
    }
    text.push_str(rest);
    text
}

/// `text` as `# ` lines of at most [`WIDTH`] columns, paragraphs kept.
fn comment(out: &mut String, text: &str) {
    for paragraph in text.split("\n\n") {
        let mut line = String::from("#");
        for word in paragraph.split_whitespace() {
            if line.len() + 1 + word.len() > WIDTH && line.len() > 1 {
                out.push_str(&line);
                out.push('\n');
                line = String::from("#");
            }
            line.push(' ');
            line.push_str(word);
        }
        out.push_str(&line);
        out.push('\n');
    }
}

/// A placeholder naming the type of a key that is not set.
fn type_of(root: &Value, prop: &Value) -> String {
    let types: Vec<String> = match prop.get("type") {
        Some(Value::String(t)) => vec![t.clone()],
        Some(Value::Array(ts)) => ts
            .iter()
            .filter_map(|t| t.as_str().map(String::from))
            .collect(),
        _ => {
            let resolved = resolve(root, prop);
            if (resolved.get("anyOf").is_some() || resolved.get("type").is_some())
                && resolved != *prop
            {
                return type_of(root, &resolved);
            }
            vec![]
        }
    };
    let t = types.iter().find(|t| *t != "null");
    match t.map(String::as_str) {
        Some("integer") => "integer".into(),
        Some("boolean") => "true|false".into(),
        Some("string") => "string".into(),
        Some("array") => "list".into(),
        _ => "address or host name".into(),
    }
}

/// A JSON value as a TOML value (`None` for null: not set).
fn to_toml(v: &Value) -> Option<toml::Value> {
    Some(match v {
        Value::Null => return None,
        Value::Bool(b) => toml::Value::Boolean(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => toml::Value::Integer(i),
            None => toml::Value::Float(n.as_f64().unwrap_or(0.0)),
        },
        Value::String(s) => toml::Value::String(s.clone()),
        Value::Array(a) => toml::Value::Array(a.iter().filter_map(to_toml).collect()),
        Value::Object(o) => toml::Value::Table(
            o.iter()
                .filter_map(|(k, v)| Some((k.clone(), to_toml(v)?)))
                .collect(),
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every key of every section needs a description: a key added without a doc comment
    /// fails here, so `ponte config` never prints a key without its meaning.
    #[test]
    fn every_key_has_a_description() {
        let root = schema();
        let Value::Object(top) = serde_json::to_value(Config::default()).unwrap() else {
            panic!("the configuration serializes to a table");
        };
        let mut missing = Vec::new();
        for (key, v) in &top {
            let prop = property(&root, &root, key);
            if description(&prop).is_empty() {
                missing.push(key.clone());
            }
            let def = resolve(&root, &prop);
            let item = resolve(&root, prop.get("items").unwrap_or(&Value::Null));
            let keys: Vec<String> = match v {
                Value::Object(keys) => keys.keys().cloned().collect(),
                _ => item
                    .get("properties")
                    .and_then(Value::as_object)
                    .map(|p| p.keys().cloned().collect())
                    .unwrap_or_default(),
            };
            let def = if v.is_object() { def } else { item };
            for k in keys {
                if description(&property(&root, &def, &k)).is_empty() {
                    missing.push(format!("{key}.{k}"));
                }
            }
        }
        assert!(
            missing.is_empty(),
            "keys without a doc comment: {missing:?}"
        );
    }

    #[test]
    fn the_output_parses_back_to_the_same_configuration() {
        let d = Config::default();
        let text = to_commented_toml(&d);
        assert_eq!(Config::from_toml(&text).unwrap(), d, "{text}");
        let mut c = Config::default();
        c.http.port = 8080;
        c.http.tls_port = Some(8443);
        c.http.cors_origins = vec!["*".into()];
        c.mqtt.session_expiry_secs = Some(60);
        c.host = super::super::Hosts::parse("127.0.0.1,::1").unwrap();
        c.auth.jwt_issuer = Some("https://auth.example".into());
        let text = to_commented_toml(&c);
        assert_eq!(Config::from_toml(&text).unwrap(), c, "{text}");
        assert!(
            text.contains("\ntls_port = 8443  # PONTE_HTTP_TLS_PORT\n"),
            "{text}"
        );
        assert!(
            text.contains("[mqtt]\n")
                && text.contains("\n# wss_port = <integer>  # PONTE_MQTT_WSS_PORT\n"),
            "{text}"
        );
        assert!(
            text.contains("\nmax_inflight = 32  # PONTE_MQTT_MAX_INFLIGHT\n"),
            "{text}"
        );
    }
}
