//! Filter rules: a filter in the store's query language whose values may be
//! placeholders, filled in per request.
//!
//! | placeholder | is |
//! | --- | --- |
//! | `@user.id` | the caller's id (the rule then needs a signed-in caller) |
//! | `@user.roles` | the caller's roles, an array |
//! | `@user.mfa` | whether the caller's session passed the second factor |
//! | `@now` | the time of the request, a date |
//! | `@new.FIELD` | (create and update) the field of the document as the write leaves it |
//!
//! A placeholder is a whole string value; `@@` starts a literal `@`. The
//! filter is checked at deploy with sample values, so an unknown
//! placeholder or an operator outside the subset refuses the deploy.

use serde_json::{Map, Value};

use super::{Identity, Refusal};
use crate::store::query::Filter;
use crate::store::query::filter::check_path;
use crate::store::query::path;
use crate::store::query::value::date_value;

/// Which placeholders a rule may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placeholders {
    /// `@user.*` and `@now`.
    Caller,
    /// Those and `@new.FIELD`.
    CallerAndNew,
}

/// A parsed filter rule.
#[derive(Debug, Clone, PartialEq)]
pub struct FilterRule {
    template: Value,
    mentions_caller: bool,
}

enum Placeholder<'a> {
    UserId,
    UserRoles,
    UserMfa,
    Now,
    New(&'a str),
}

/// What a string value of the template is.
enum Written<'a> {
    Literal(&'a str),
    Placeholder(Placeholder<'a>),
    Unknown,
}

fn read(text: &str) -> Written<'_> {
    if let Some(rest) = text.strip_prefix("@@") {
        return Written::Literal(&text[text.len() - rest.len() - 1..]);
    }
    let Some(name) = text.strip_prefix('@') else {
        return Written::Literal(text);
    };
    Written::Placeholder(match name {
        "user.id" => Placeholder::UserId,
        "user.roles" => Placeholder::UserRoles,
        "user.mfa" => Placeholder::UserMfa,
        "now" => Placeholder::Now,
        other => match other.strip_prefix("new.") {
            Some(field) if check_path(field).is_ok() => Placeholder::New(field),
            _ => return Written::Unknown,
        },
    })
}

const KNOWN: &str =
    "`@user.id`, `@user.roles`, `@user.mfa`, `@now`, and for create and update `@new.FIELD`";

impl FilterRule {
    /// The `filter` of a rule, as `kiln.toml` writes it.
    pub fn parse(value: &toml::Value, allowed: Placeholders) -> Result<FilterRule, String> {
        let template = json_of(value)?;
        if !template.is_object() {
            return Err("a filter rule's filter is a table".into());
        }
        let mut mentions_caller = false;
        check_placeholders(&template, "", allowed, &mut mentions_caller)?;
        let rule = FilterRule {
            template,
            mentions_caller,
        };
        // Sample values of the right kinds show the filter parses.
        let sample = Identity {
            user: "sample".into(),
            session: "sample".into(),
            roles: vec!["sample".into()],
            mfa: true,
        };
        let filled = rule.fill(Some(&sample), Some(&Value::Null), true);
        Filter::parse(&filled).map_err(|e| format!("filter: {e}"))?;
        Ok(rule)
    }

    /// The filter with the caller's placeholders filled in; a rule naming
    /// the caller refuses an anonymous one.
    pub fn resolve(
        &self,
        identity: Option<&Identity>,
        new: Option<&Value>,
    ) -> Result<Value, Refusal> {
        if self.mentions_caller && identity.is_none() {
            return Err(Refusal::SignInRequired);
        }
        Ok(self.fill(identity, new, false))
    }

    /// Whether the filter names the caller (`@user.*`).
    pub fn mentions_caller(&self) -> bool {
        self.mentions_caller
    }

    /// The filter as written.
    pub fn template(&self) -> &Value {
        &self.template
    }

    fn fill(&self, identity: Option<&Identity>, new: Option<&Value>, sampling: bool) -> Value {
        let now = date_value(chrono::Utc::now().timestamp_millis());
        fill(
            &self.template,
            None,
            &|placeholder, operator| match placeholder {
                Placeholder::UserId => {
                    identity.map_or(Value::Null, |i| Value::from(i.user.clone()))
                }
                Placeholder::UserRoles => Value::from(identity.map_or(vec![], |i| i.roles.clone())),
                Placeholder::UserMfa => Value::from(identity.is_some_and(|i| i.mfa)),
                Placeholder::Now => now.clone(),
                // At deploy the field's value is unknown: an array where one is needed.
                Placeholder::New(_) if sampling => match operator {
                    Some("$in" | "$nin" | "$all") => Value::Array(vec![]),
                    _ => Value::Null,
                },
                Placeholder::New(field) => new
                    .and_then(|doc| path::get(doc, field))
                    .cloned()
                    .unwrap_or(Value::Null),
            },
        )
    }
}

/// The template with every placeholder replaced; `operator` is the key the
/// value sits under when that key is an operator (`$in`).
fn fill(
    value: &Value,
    operator: Option<&str>,
    with: &dyn Fn(Placeholder<'_>, Option<&str>) -> Value,
) -> Value {
    match value {
        Value::String(text) => match read(text) {
            Written::Literal(literal) => Value::from(literal),
            Written::Placeholder(placeholder) => with(placeholder, operator),
            Written::Unknown => Value::Null,
        },
        Value::Array(items) => Value::Array(items.iter().map(|v| fill(v, None, with)).collect()),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(key, v)| {
                    let op = key.starts_with('$').then_some(key.as_str());
                    (key.clone(), fill(v, op, with))
                })
                .collect::<Map<_, _>>(),
        ),
        other => other.clone(),
    }
}

/// Refuses unknown placeholders, naming the field they sit under.
fn check_placeholders(
    value: &Value,
    field: &str,
    allowed: Placeholders,
    mentions_caller: &mut bool,
) -> Result<(), String> {
    let at = || match field {
        "" => String::new(),
        field => format!("field `{field}`: "),
    };
    match value {
        Value::String(text) => match read(text) {
            Written::Literal(_) => Ok(()),
            Written::Unknown => Err(format!(
                "{}unknown placeholder `{}` (known: {KNOWN}; `@@` starts a literal `@`)",
                at(),
                text.escape_debug()
            )),
            Written::Placeholder(Placeholder::New(_)) if allowed == Placeholders::Caller => {
                Err(format!(
                    "{}`{}`: `@new` is only known to create and update rules",
                    at(),
                    text.escape_debug()
                ))
            }
            Written::Placeholder(placeholder) => {
                if matches!(
                    placeholder,
                    Placeholder::UserId | Placeholder::UserRoles | Placeholder::UserMfa
                ) {
                    *mentions_caller = true;
                }
                Ok(())
            }
        },
        Value::Array(items) => items
            .iter()
            .try_for_each(|v| check_placeholders(v, field, allowed, mentions_caller)),
        Value::Object(map) => map.iter().try_for_each(|(key, v)| {
            let inner = if key.starts_with('$') { field } else { key };
            check_placeholders(v, inner, allowed, mentions_caller)
        }),
        _ => Ok(()),
    }
}

/// TOML as JSON; a TOML date-time becomes a date.
fn json_of(value: &toml::Value) -> Result<Value, String> {
    Ok(match value {
        toml::Value::String(s) => Value::from(s.clone()),
        toml::Value::Integer(i) => Value::from(*i),
        toml::Value::Float(f) => serde_json::Number::from_f64(*f)
            .map(Value::Number)
            .ok_or("a filter rule's numbers are finite")?,
        toml::Value::Boolean(b) => Value::from(*b),
        toml::Value::Datetime(d) => serde_json::json!({ "$date": d.to_string() }),
        toml::Value::Array(items) => {
            Value::Array(items.iter().map(json_of).collect::<Result<_, _>>()?)
        }
        toml::Value::Table(table) => Value::Object(
            table
                .iter()
                .map(|(k, v)| Ok((k.clone(), json_of(v)?)))
                .collect::<Result<Map<_, _>, String>>()?,
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(text: &str, allowed: Placeholders) -> Result<FilterRule, String> {
        let table: toml::Table = toml::from_str(text).unwrap();
        FilterRule::parse(&toml::Value::Table(table), allowed)
    }

    #[test]
    fn refuses_unknown_placeholders_and_operators_naming_the_field() {
        let err = parse("owner = \"@user.name\"", Placeholders::Caller).unwrap_err();
        assert!(
            err.contains("field `owner`") && err.contains("@user.name"),
            "{err}"
        );
        let err = parse("owner = \"@new.owner\"", Placeholders::Caller).unwrap_err();
        assert!(err.contains("only known to create and update"), "{err}");
        assert!(parse("owner = \"@new.owner\"", Placeholders::CallerAndNew).is_ok());
        let err = parse("a = { \"$where\" = \"1\" }", Placeholders::Caller).unwrap_err();
        assert!(err.contains("$where"), "{err}");
        assert!(
            parse(
                "tags = { \"$in\" = \"@new.tags\" }",
                Placeholders::CallerAndNew
            )
            .is_ok()
        );
    }

    #[test]
    fn fills_placeholders_and_keeps_literals() {
        let rule = parse(
            "owner = \"@user.id\"\nhandle = \"@@ada\"\nstate = \"@new.state\"\nmfa = \"@user.mfa\"",
            Placeholders::CallerAndNew,
        )
        .unwrap();
        let ada = Identity {
            user: "ada".into(),
            session: "s".into(),
            roles: vec![],
            mfa: false,
        };
        assert_eq!(
            rule.resolve(Some(&ada), Some(&json!({"state": "open"}))),
            Ok(json!({"owner": "ada", "handle": "@ada", "state": "open", "mfa": false}))
        );
        let public = parse(
            "published = true\nat = { \"$lte\" = \"@now\" }",
            Placeholders::Caller,
        )
        .unwrap();
        assert!(!public.mentions_caller());
        let filled = public.resolve(None, None).unwrap();
        assert!(filled["at"]["$lte"]["$date"].is_string(), "{filled}");
    }
}
