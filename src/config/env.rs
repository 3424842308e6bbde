//! `PONTE_<SECTION>_<KEY>` environment variables, for every key of the configuration.
//!
//! Nothing here lists the keys: the sections and keys are those of the configuration as
//! serde sees it (`Config::default()` serialized, `None` keys included), so a key added to
//! any section struct is settable from the environment at once. A variable names a section
//! (`PONTE_MQTT_MAX_INFLIGHT` → `[mqtt] max_inflight`) or a top-level key (`PONTE_HOST`).
//! Its text is read as the key's type (`8080`, `true`, a string as is, a list as
//! `a,b` or TOML `["a", "b"]`), checked by deserializing the whole configuration, so a bad
//! value is refused with the variable's name. Arrays of tables (`[[bridge]]`) have no
//! variables. A `PONTE_` variable that names no section and no key (`PONTE_BIN` of a
//! script) is reported as a warning and otherwise ignored; one that names a section but no
//! key of it is an error, like an unknown key in the file.

use serde::Deserialize;
use serde_json::Value;

use super::{Config, ConfigError};

/// The prefix of every configuration variable.
pub const PREFIX: &str = "PONTE_";

/// What the environment changed.
#[derive(Debug, Default)]
pub struct Applied {
    /// `(key path, variable)` of every key a variable set, e.g. `("mqtt.port", "PONTE_MQTT_PORT")`.
    pub set: Vec<(String, String)>,
    /// Variables that start with `PONTE_` but name no key (ignored).
    pub ignored: Vec<String>,
}

/// The variable that sets `section.key` (or the top-level `key` when `section` is empty).
pub fn var_name(section: &str, key: &str) -> String {
    if section.is_empty() {
        format!("{PREFIX}{}", key.to_ascii_uppercase())
    } else {
        format!(
            "{PREFIX}{}_{}",
            section.to_ascii_uppercase(),
            key.to_ascii_uppercase()
        )
    }
}

/// Apply `vars` (name, value) over `table` (the file's, or empty). Only names starting with
/// [`PREFIX`] are looked at, in name order.
pub fn apply(
    table: &mut toml::Table,
    vars: impl IntoIterator<Item = (String, String)>,
) -> Result<Applied, ConfigError> {
    let defaults = serde_json::to_value(Config::default()).unwrap_or(Value::Null);
    let Value::Object(defaults) = defaults else {
        return Ok(Applied::default());
    };
    let mut sections: Vec<&String> = defaults
        .iter()
        .filter(|(_, v)| v.is_object() || v.is_array())
        .map(|(k, _)| k)
        .collect();
    // Longest first, so a section whose name extends another's is found first.
    sections.sort_by_key(|s| std::cmp::Reverse(s.len()));
    let mut vars: Vec<(String, String)> = vars
        .into_iter()
        .filter(|(k, _)| k.starts_with(PREFIX))
        .collect();
    vars.sort();
    let mut applied = Applied::default();
    for (var, text) in vars {
        let rest = var[PREFIX.len()..].to_ascii_lowercase();
        let section = sections
            .iter()
            .find(|s| rest.starts_with(&format!("{s}_")))
            .map(|s| s.as_str());
        let (section, key, default) = match section {
            Some(s) => {
                let key = rest[s.len() + 1..].to_string();
                let Some(Value::Object(keys)) = defaults.get(s) else {
                    return Err(ConfigError::Env {
                        var,
                        message: format!("[[{s}]] entries cannot be set from the environment; use the config file"),
                    });
                };
                let Some(default) = keys.get(&key) else {
                    let known: Vec<String> = keys.keys().map(|k| var_name(s, k)).collect();
                    return Err(ConfigError::Env {
                        var,
                        message: format!(
                            "[{s}] has no key {key:?}; its variables are {}",
                            known.join(", ")
                        ),
                    });
                };
                (s.to_string(), key, default.clone())
            }
            None => match defaults.get(&rest) {
                Some(d) if !d.is_object() && !d.is_array() => (String::new(), rest, d.clone()),
                _ => {
                    applied.ignored.push(var);
                    continue;
                }
            },
        };
        let mut first_error = None;
        let mut accepted = false;
        for candidate in candidates(&text, &default) {
            let mut trial = table.clone();
            let slot = if section.is_empty() {
                &mut trial
            } else {
                match trial
                    .entry(section.clone())
                    .or_insert_with(|| toml::Value::Table(toml::Table::new()))
                {
                    toml::Value::Table(t) => t,
                    _ => {
                        return Err(ConfigError::Env {
                            var,
                            message: format!("the config file's {section:?} is not a table"),
                        })
                    }
                }
            };
            slot.insert(key.clone(), candidate);
            match Config::deserialize(toml::Value::Table(trial.clone())) {
                Ok(_) => {
                    *table = trial;
                    accepted = true;
                    break;
                }
                Err(e) => {
                    first_error.get_or_insert_with(|| e.to_string().trim().replace('\n', " "));
                }
            }
        }
        if !accepted {
            return Err(ConfigError::Env {
                var,
                message: first_error.unwrap_or_else(|| "not a valid value".into()),
            });
        }
        let path = if section.is_empty() {
            key
        } else {
            format!("{section}.{key}")
        };
        applied.set.push((path, var));
    }
    Ok(applied)
}

/// The values `text` may stand for, most likely first, given the key's default.
fn candidates(text: &str, default: &Value) -> Vec<toml::Value> {
    let mut out = Vec::new();
    let literal = || {
        toml::from_str::<toml::Table>(&format!("v = {text}"))
            .ok()
            .and_then(|mut t| t.remove("v"))
    };
    match default {
        Value::Bool(_) => match text.trim().to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => out.push(toml::Value::Boolean(true)),
            "false" | "0" | "no" | "off" => out.push(toml::Value::Boolean(false)),
            _ => {}
        },
        Value::Number(_) => {
            if let Ok(n) = text.trim().replace('_', "").parse::<i64>() {
                out.push(toml::Value::Integer(n));
            } else if let Ok(f) = text.trim().parse::<f64>() {
                out.push(toml::Value::Float(f));
            }
        }
        Value::Array(_) => {
            if text.trim_start().starts_with('[') {
                out.extend(literal());
            } else {
                let items = text
                    .split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(|s| toml::Value::String(s.to_string()))
                    .collect();
                out.push(toml::Value::Array(items));
            }
        }
        Value::String(_) => {}
        _ => out.extend(literal()),
    }
    out.push(toml::Value::String(text.to_string()));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(vars: &[(&str, &str)]) -> Result<(Config, Applied), ConfigError> {
        let mut t = toml::Table::new();
        let applied = apply(
            &mut t,
            vars.iter().map(|(k, v)| (k.to_string(), v.to_string())),
        )?;
        Ok((Config::deserialize(toml::Value::Table(t)).unwrap(), applied))
    }

    #[test]
    fn every_kind_of_key_is_settable() {
        let (c, applied) = env(&[
            ("PONTE_HTTP_PORT", "8080"),
            ("PONTE_MQTT_MAX_INFLIGHT", "64"),
            ("PONTE_HOST", "127.0.0.1"),
            ("PONTE_COAP_TCP", "false"),
            ("PONTE_MQTT_OVERFLOW", "drop-oldest"),
            (
                "PONTE_HTTP_CORS_ORIGINS",
                "https://a.example, https://b.example",
            ),
            ("PONTE_HTTP_TLS_PORT", "8443"),
            (
                "PONTE_AUTH_JWT_HS256_SECRET",
                "12345678901234567890123456789012",
            ),
            ("PONTE_STORE_DB", "/var/lib/ponte"),
            ("PONTE_BIN", "target/debug/ponte"),
            ("HOME", "/root"),
        ])
        .unwrap();
        assert_eq!(c.http.port, 8080);
        assert_eq!(c.mqtt.max_inflight, 64);
        assert_eq!(c.host.to_string(), "127.0.0.1");
        assert!(!c.coap.tcp);
        assert_eq!(
            c.mqtt.overflow,
            crate::broker::mailbox::OverflowPolicy::DropOldest
        );
        assert_eq!(
            c.http.cors_origins,
            ["https://a.example", "https://b.example"]
        );
        assert_eq!(c.http.tls_port, Some(8443));
        assert_eq!(
            c.auth.jwt_hs256_secret.as_deref(),
            Some("12345678901234567890123456789012"),
            "digits stay a string where a string is expected"
        );
        assert_eq!(c.store.db, std::path::PathBuf::from("/var/lib/ponte"));
        assert_eq!(applied.ignored, ["PONTE_BIN"]);
        assert!(applied
            .set
            .contains(&("mqtt.max_inflight".into(), "PONTE_MQTT_MAX_INFLIGHT".into())));
    }

    #[test]
    fn a_bad_value_or_key_names_the_variable() {
        for (var, value, says) in [
            ("PONTE_HTTP_PORT", "eighty", "PONTE_HTTP_PORT"),
            ("PONTE_HTTP_PORT", "70000", "PONTE_HTTP_PORT"),
            ("PONTE_MQTT_OVERFLOW", "sometimes", "PONTE_MQTT_OVERFLOW"),
            ("PONTE_HTTP_PROT", "1", "PONTE_HTTP_PORT"),
            ("PONTE_COAP_TCP", "perhaps", "PONTE_COAP_TCP"),
        ] {
            let e = env(&[(var, value)]).unwrap_err().to_string();
            assert!(e.contains(var) && e.contains(says), "{var}={value}: {e}");
        }
    }
}
