//! The ACL file: mosquitto's format, one policy for HTTP, CoAP and MQTT.
//!
//! ```text
//! # anonymous clients: rules before the first `user` line
//! topic read public/#
//! user alice
//! topic readwrite alice/#
//! topic deny alice/secret
//! # every client, %u = username, %c = client id
//! pattern write devices/%u/+
//! ```
//!
//! A rule is `topic [read|write|readwrite|deny] FILTER` or `pattern [...] FILTER`; without an
//! access word it is `readwrite` (mosquitto's default). The filter is the rest of the line, so it
//! may contain spaces, and it is an MQTT topic filter (`+`, `#`, and the rule that wildcards at
//! the first level do not match `$` topics — so `#` never grants `$SYS`; grant `$SYS/#` for that).
//!
//! Evaluation for one client and one topic: if any applicable `deny` rule matches, denied; else
//! allowed if an applicable rule grants the access; else denied. Applicable rules are the
//! client's block (its `user` block, or the anonymous block when it has no username) and every
//! `pattern`. A pattern that mentions `%u` (`%c`) does not apply to a client without a username
//! (client id), nor to one whose username (client id) contains `+`, `#` or `/`: substituting
//! those would widen the rule (mosquitto's rule too).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// What a client wants to do with a topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// HTTP GET/HEAD/SSE, CoAP GET/Observe, MQTT SUBSCRIBE and delivery.
    Read,
    /// HTTP PUT/POST/DELETE, CoAP PUT/POST/DELETE, MQTT PUBLISH and the will.
    Write,
}

/// What a rule does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Grant {
    /// Grants reading.
    Read,
    /// Grants writing.
    Write,
    /// Grants both.
    ReadWrite,
    /// Denies both, whatever else grants them.
    Deny,
}

impl Grant {
    /// Does this rule grant `access`?
    fn grants(self, access: Access) -> bool {
        matches!(
            (self, access),
            (Grant::ReadWrite, _) | (Grant::Read, Access::Read) | (Grant::Write, Access::Write)
        )
    }
}

/// One rule.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Rule {
    /// What it grants or denies.
    grant: Grant,
    /// The topic filter, split into levels once (patterns still hold `%u`/`%c`).
    levels: Vec<String>,
}

/// Why an ACL file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum AclError {
    /// The file could not be read.
    #[error("ACL file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A line is not a rule this format knows.
    #[error("ACL file line {line}: {reason}")]
    Line {
        /// 1-based line number.
        line: usize,
        /// What is wrong with it.
        reason: String,
    },
}

/// A parsed ACL.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Acl {
    /// Rules for clients without a username.
    anonymous: Vec<Rule>,
    /// Rules per username.
    users: HashMap<String, Vec<Rule>>,
    /// Rules for every client, with `%u`/`%c` still in them.
    patterns: Vec<Rule>,
}

/// Who is asking, as far as the ACL cares.
#[derive(Debug, Clone, Copy)]
pub struct Subject<'a> {
    /// The username; `None` for anonymous clients.
    pub username: Option<&'a str>,
    /// The MQTT client id, if the protocol has one.
    pub client_id: Option<&'a str>,
}

impl Acl {
    /// How many rules the file has (anonymous, per user and patterns together).
    pub fn rule_count(&self) -> usize {
        self.anonymous.len()
            + self.users.values().map(Vec::len).sum::<usize>()
            + self.patterns.len()
    }

    /// Read and parse a file.
    pub fn load(path: &Path) -> Result<Self, AclError> {
        let text = std::fs::read_to_string(path).map_err(|source| AclError::Io {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text)
    }

    /// Parse the text of a file.
    pub fn parse(text: &str) -> Result<Self, AclError> {
        let mut acl = Acl::default();
        let mut current: Option<String> = None;
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let err = |reason: String| AclError::Line {
                line: i + 1,
                reason,
            };
            let (keyword, rest) = line.split_once([' ', '\t']).unwrap_or((line, ""));
            let rest = rest.trim_start();
            match keyword {
                "user" => {
                    if rest.is_empty() {
                        return Err(err("`user` needs a username".into()));
                    }
                    acl.users.entry(rest.to_owned()).or_default();
                    current = Some(rest.to_owned());
                }
                "topic" | "pattern" => {
                    let rule = parse_rule(rest).map_err(err)?;
                    if keyword == "pattern" {
                        acl.patterns.push(rule);
                    } else if let Some(u) = &current {
                        acl.users.entry(u.clone()).or_default().push(rule);
                    } else {
                        acl.anonymous.push(rule);
                    }
                }
                other => {
                    return Err(err(format!(
                        "unknown keyword {other:?} (expected user, topic or pattern)"
                    )))
                }
            }
        }
        Ok(acl)
    }

    /// An ACL of explicit grants (for a JWT's claims): `read` and `write` filters for whoever
    /// presents it.
    pub fn from_grants(read: &[String], write: &[String]) -> Result<Self, String> {
        let mut acl = Acl::default();
        for (filters, grant) in [(read, Grant::Read), (write, Grant::Write)] {
            for f in filters {
                check_filter(f)?;
                acl.patterns.push(Rule {
                    grant,
                    levels: f.split('/').map(str::to_owned).collect(),
                });
            }
        }
        Ok(acl)
    }

    /// Is `who` allowed `access` on the topic name `topic`?
    pub fn allows(&self, who: Subject<'_>, access: Access, topic: &str) -> bool {
        let mut granted = false;
        for rule in self.applicable(who) {
            let Some(levels) = rule.levels_for(who) else {
                continue;
            };
            if !filter_matches(&levels, topic) {
                continue;
            }
            if rule.grant == Grant::Deny {
                return false;
            }
            granted |= rule.grant.grants(access);
        }
        granted
    }

    /// May `who` subscribe to `filter`? Yes when some topic matching it could be read (what it
    /// then receives is checked topic by topic), and no `deny` rule covers all of it.
    pub fn allows_subscribe(&self, who: Subject<'_>, filter: &str) -> bool {
        let sub: Vec<&str> = filter.split('/').collect();
        let mut possible = false;
        for rule in self.applicable(who) {
            let Some(levels) = rule.levels_for(who) else {
                continue;
            };
            if rule.grant == Grant::Deny {
                if covers(&levels, &sub) {
                    return false;
                }
            } else if rule.grant.grants(Access::Read) && intersects(&levels, &sub) {
                possible = true;
            }
        }
        possible
    }

    /// May `who` read *every* topic `filter` matches? Used where a delivery refused later
    /// could not go to someone else instead (MQTT shared subscriptions). Conservative: yes
    /// only when one applicable rule grants reading all of `filter` and no `deny` rule meets
    /// it, so grants that cover a filter only together answer no.
    pub fn allows_read_all(&self, who: Subject<'_>, filter: &str) -> bool {
        let sub: Vec<&str> = filter.split('/').collect();
        let mut covered = false;
        for rule in self.applicable(who) {
            let Some(levels) = rule.levels_for(who) else {
                continue;
            };
            if rule.grant == Grant::Deny {
                if intersects(&levels, &sub) {
                    return false;
                }
            } else if rule.grant.grants(Access::Read) && covers(&levels, &sub) {
                covered = true;
            }
        }
        covered
    }

    /// The rules that apply to `who`: its block, then every pattern.
    fn applicable<'s>(&'s self, who: Subject<'_>) -> impl Iterator<Item = &'s Rule> {
        let block = match who.username {
            Some(u) => self.users.get(u).map(Vec::as_slice).unwrap_or(&[]),
            None => &self.anonymous,
        };
        block.iter().chain(self.patterns.iter())
    }
}

impl Rule {
    /// The rule's levels with `%u`/`%c` substituted for `who`; `None` when the rule needs a
    /// value `who` lacks or has in a form that would widen the rule.
    fn levels_for(&self, who: Subject<'_>) -> Option<Vec<std::borrow::Cow<'_, str>>> {
        let safe = |v: Option<&str>| {
            v.filter(|s| !s.is_empty() && !s.contains(['+', '#', '/']))
                .map(str::to_owned)
        };
        let mut out = Vec::with_capacity(self.levels.len());
        for l in &self.levels {
            if l.contains("%u") || l.contains("%c") {
                let mut s = l.clone();
                if s.contains("%u") {
                    s = s.replace("%u", &safe(who.username)?);
                }
                if s.contains("%c") {
                    s = s.replace("%c", &safe(who.client_id)?);
                }
                out.push(std::borrow::Cow::Owned(s));
            } else {
                out.push(std::borrow::Cow::Borrowed(l.as_str()));
            }
        }
        Some(out)
    }
}

/// Parse `[access] FILTER`.
fn parse_rule(rest: &str) -> Result<Rule, String> {
    let (first, after) = rest.split_once([' ', '\t']).unwrap_or((rest, ""));
    let (grant, filter) = match first {
        "read" => (Grant::Read, after.trim_start()),
        "write" => (Grant::Write, after.trim_start()),
        "readwrite" => (Grant::ReadWrite, after.trim_start()),
        "deny" => (Grant::Deny, after.trim_start()),
        _ => (Grant::ReadWrite, rest),
    };
    check_filter(filter)?;
    Ok(Rule {
        grant,
        levels: filter.split('/').map(str::to_owned).collect(),
    })
}

/// A rule's filter must be a valid MQTT topic filter.
fn check_filter(filter: &str) -> Result<(), String> {
    if filter.is_empty() {
        return Err("missing topic filter".into());
    }
    let levels: Vec<&str> = filter.split('/').collect();
    for (i, l) in levels.iter().enumerate() {
        if (l.contains('#') && (*l != "#" || i + 1 != levels.len()))
            || (l.contains('+') && *l != "+")
        {
            return Err(format!(
                "{filter:?} is not a topic filter: `#` must be a whole last level and `+` a whole level"
            ));
        }
    }
    Ok(())
}

/// Is a wildcard at this position one that does not reach `$` topics (MQTT-4.7.2-1)?
fn dollar_guard(i: usize, level: &str) -> bool {
    i == 0 && level.starts_with('$')
}

/// Does the filter (levels) match the topic name?
fn filter_matches<S: AsRef<str>>(filter: &[S], topic: &str) -> bool {
    let mut t = topic.split('/');
    for (i, f) in filter.iter().enumerate() {
        let f = f.as_ref();
        if f == "#" {
            // `a/#` matches `a` too; `#` at the first level never matches `$x`.
            return !(i == 0 && topic.starts_with('$'));
        }
        match t.next() {
            None => return false,
            Some(level) => {
                if f == "+" {
                    if dollar_guard(i, level) {
                        return false;
                    }
                } else if f != level {
                    return false;
                }
            }
        }
    }
    t.next().is_none()
}

/// Could some topic match both filters?
fn intersects<S: AsRef<str>>(a: &[S], b: &[&str]) -> bool {
    let mut i = 0;
    loop {
        match (a.get(i).map(AsRef::as_ref), b.get(i).copied()) {
            (None, None) => return true,
            (Some("#"), Some(x)) | (Some(x), Some("#")) => {
                // A `#`/`+` at level 0 on one side cannot meet a `$` level on the other.
                return !(i == 0 && x.starts_with('$'));
            }
            (Some("#"), None) | (None, Some("#")) => return true,
            (None, Some(_)) | (Some(_), None) => return false,
            (Some(x), Some(y)) => {
                let ok = match (x, y) {
                    ("+", "+") => true,
                    ("+", l) | (l, "+") => !dollar_guard(i, l),
                    (l, m) => l == m,
                };
                if !ok {
                    return false;
                }
            }
        }
        i += 1;
    }
}

/// Does every topic matching `sub` also match `deny`?
fn covers<S: AsRef<str>>(deny: &[S], sub: &[&str]) -> bool {
    let mut i = 0;
    loop {
        match (deny.get(i).map(AsRef::as_ref), sub.get(i).copied()) {
            (None, None) => return true,
            (Some("#"), s) => {
                // `#` at level 0 does not cover `$` topics a literal `$` level would reach.
                return !(i == 0 && s.is_some_and(|s| s.starts_with('$')));
            }
            (Some("+"), Some(s)) if s != "#" => {
                if dollar_guard(i, s) {
                    return false;
                }
            }
            (Some(d), Some(s)) if d == s && s != "+" && s != "#" => {}
            _ => return false,
        }
        i += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn anon() -> Subject<'static> {
        Subject {
            username: None,
            client_id: Some("c1"),
        }
    }

    fn user(u: &'static str) -> Subject<'static> {
        Subject {
            username: Some(u),
            client_id: Some("dev-1"),
        }
    }

    const FILE: &str = "\
# anonymous
topic read public/#
user alice
topic readwrite alice/#
topic deny alice/secret
topic write shared/in
user bob
topic bob has spaces/+
pattern write devices/%u/+
pattern read clients/%c
";

    #[test]
    fn anonymous_rules_come_before_the_first_user_line() {
        let acl = Acl::parse(FILE).unwrap();
        assert!(acl.allows(anon(), Access::Read, "public/a/b"));
        assert!(!acl.allows(anon(), Access::Write, "public/a"));
        assert!(!acl.allows(user("alice"), Access::Read, "public/a"));
    }

    #[test]
    fn user_block_deny_wins_and_omitted_access_is_readwrite() {
        let acl = Acl::parse(FILE).unwrap();
        let a = user("alice");
        assert!(acl.allows(a, Access::Write, "alice/x"));
        assert!(acl.allows(a, Access::Read, "alice"));
        assert!(!acl.allows(a, Access::Read, "alice/secret"));
        assert!(!acl.allows(a, Access::Write, "alice/secret"));
        assert!(acl.allows(a, Access::Write, "shared/in"));
        assert!(!acl.allows(a, Access::Read, "shared/in"));
        let b = user("bob");
        assert!(acl.allows(b, Access::Write, "bob has spaces/x"));
        assert!(!acl.allows(user("mallory"), Access::Read, "alice/x"));
    }

    #[test]
    fn patterns_substitute_username_and_client_id() {
        let acl = Acl::parse(FILE).unwrap();
        assert!(acl.allows(user("alice"), Access::Write, "devices/alice/t"));
        assert!(!acl.allows(user("alice"), Access::Write, "devices/bob/t"));
        assert!(acl.allows(user("bob"), Access::Read, "clients/dev-1"));
        // No username: a %u pattern does not apply.
        assert!(!acl.allows(anon(), Access::Write, "devices//t"));
        assert!(acl.allows(anon(), Access::Read, "clients/c1"));
        // A username with wildcards or separators never widens a pattern.
        for u in ["+", "#", "a/b"] {
            let s = Subject {
                username: Some(u),
                client_id: None,
            };
            assert!(!acl.allows(s, Access::Write, &format!("devices/{u}/t")));
        }
    }

    #[test]
    fn mqtt_4_7_2_1_wildcards_do_not_grant_dollar_topics() {
        let acl = Acl::parse("topic read #\ntopic read +/x\n").unwrap();
        assert!(acl.allows(anon(), Access::Read, "a/b"));
        assert!(!acl.allows(anon(), Access::Read, "$SYS/broker/uptime"));
        assert!(!acl.allows(anon(), Access::Read, "$x/x"));
        let sys = Acl::parse("topic read $SYS/#\n").unwrap();
        assert!(sys.allows(anon(), Access::Read, "$SYS/broker/uptime"));
        assert!(!acl.allows_subscribe(anon(), "$SYS/#"));
        assert!(sys.allows_subscribe(anon(), "$SYS/#"));
    }

    #[test]
    fn subscribe_to_a_wider_filter_is_allowed_when_something_in_it_is_readable() {
        let acl = Acl::parse(FILE).unwrap();
        let a = user("alice");
        assert!(acl.allows_subscribe(a, "#"));
        assert!(acl.allows_subscribe(a, "+/x"));
        assert!(acl.allows_subscribe(a, "alice/#"));
        assert!(!acl.allows_subscribe(a, "shared/#"), "write-only grant");
        assert!(!acl.allows_subscribe(a, "alice/secret"), "covered by deny");
        assert!(!acl.allows_subscribe(a, "bob/#"));
        assert!(!acl.allows_subscribe(anon(), "alice/#"));
        assert!(acl.allows_subscribe(anon(), "public"));
    }

    #[test]
    fn read_all_needs_one_rule_covering_the_filter_and_no_deny_meeting_it() {
        let acl = Acl::parse(FILE).unwrap();
        let a = user("alice");
        assert!(acl.allows_read_all(a, "alice/x/+"));
        assert!(!acl.allows_read_all(a, "alice/#"), "alice/secret is denied");
        assert!(!acl.allows_read_all(a, "#"));
        assert!(!acl.allows_read_all(a, "shared/in"), "write-only grant");
        assert!(acl.allows_read_all(user("bob"), "clients/dev-1"));
        assert!(acl.allows_read_all(anon(), "public/#"));
        let sys = Acl::parse("topic read #\n").unwrap();
        assert!(sys.allows_read_all(anon(), "a/#"));
        assert!(!sys.allows_read_all(anon(), "$SYS/#"));
    }

    #[test]
    fn filter_algebra() {
        let v = |s: &'static str| s.split('/').collect::<Vec<_>>();
        assert!(intersects(&v("a/+/c"), &v("a/b/#")));
        assert!(intersects(&v("a/#"), &v("a")));
        assert!(!intersects(&v("a/b"), &v("a/c")));
        assert!(!intersects(&v("a/b/c"), &v("a/b")));
        assert!(!intersects(&v("+/x"), &v("$SYS/x")));
        assert!(covers(&v("a/#"), &v("a/+/c")));
        assert!(!covers(&v("a/+"), &v("a/#")));
        assert!(!covers(&v("a/b"), &v("a/+")));
        assert!(filter_matches(&v("a/+/c"), "a/b/c"));
        assert!(!filter_matches(&v("a/+"), "a/b/c"));
        assert!(filter_matches(&v("a/+"), "a/"));
    }

    #[test]
    fn malformed_rules_are_errors_naming_the_line() {
        for (text, needle) in [
            ("topic read a/#/b\n", "not a topic filter"),
            ("topic read\n", "missing topic filter"),
            ("usr alice\n", "unknown keyword"),
            ("user\n", "needs a username"),
            ("topic read a+\n", "not a topic filter"),
        ] {
            let e = Acl::parse(&format!("# c\n{text}")).unwrap_err().to_string();
            assert!(e.contains("line 2") && e.contains(needle), "{e}");
        }
    }

    #[test]
    fn claims_grants() {
        let acl = Acl::from_grants(&["r/#".into()], &["w/%u".into()]).unwrap();
        assert!(acl.allows(user("z"), Access::Read, "r/1"));
        assert!(acl.allows(user("z"), Access::Write, "w/z"));
        assert!(!acl.allows(user("z"), Access::Write, "r/1"));
        assert!(Acl::from_grants(&["a/#/b".into()], &[]).is_err());
    }
}
