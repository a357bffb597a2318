//! `[collections.NAME]` of `kiln.toml`: the rules clients meet, the fields
//! they never see or set, and the write hooks.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

use crate::access::{Kinds, Rule};
use crate::capabilities::{AppManifest, ConfigureError};
use crate::store::app_namespace;
use crate::store::query::filter::check_path;

/// Most retries of an `after_write` hook a collection may ask for.
pub const MAX_RETRIES: u32 = 10;
/// Longest first retry backoff.
pub const MAX_BACKOFF: Duration = Duration::from_secs(3600);

/// What a client asks to do with a collection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    List,
    Get,
    Create,
    Update,
    Delete,
}

impl Action {
    pub const ALL: [Action; 5] = [
        Action::List,
        Action::Get,
        Action::Create,
        Action::Update,
        Action::Delete,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Action::List => "list",
            Action::Get => "get",
            Action::Create => "create",
            Action::Update => "update",
            Action::Delete => "delete",
        }
    }

    fn kinds(self) -> Kinds {
        match self {
            Action::Create | Action::Update => Kinds::COLLECTION_WRITE,
            _ => Kinds::COLLECTION_READ,
        }
    }
}

/// A value the server writes into a field.
#[derive(Debug, Clone, PartialEq)]
pub enum Fill {
    UserId,
    Now,
    Literal(Value),
}

/// One collection's declaration.
#[derive(Debug, Clone)]
pub struct Collection {
    pub name: String,
    rules: [Option<Rule>; 5],
    /// Paths never in an answer, and that clients cannot name or set.
    pub hidden: Vec<String>,
    /// Paths clients cannot set (the fills' fields among them).
    pub server_set: Vec<String>,
    /// Top-level fields the server fills on create, and on every update.
    pub on_create: Vec<(String, Fill)>,
    pub on_update: Vec<(String, Fill)>,
    /// Paths a created or replaced document must hold (not null).
    pub required: Vec<String>,
    pub before_write: Option<String>,
    pub after_write: Option<String>,
    pub retries: u32,
    pub retry_backoff: Duration,
}

impl Collection {
    /// A collection the manifest does not declare: no rules, no fields, no
    /// hooks (the admin API reaches it).
    pub fn undeclared(name: &str) -> Collection {
        Collection {
            name: name.to_string(),
            rules: Default::default(),
            hidden: Vec::new(),
            server_set: Vec::new(),
            on_create: Vec::new(),
            on_update: Vec::new(),
            required: Vec::new(),
            before_write: None,
            after_write: None,
            retries: 0,
            retry_backoff: Duration::from_secs(1),
        }
    }

    /// The rule of `action`; none: no client may.
    pub fn rule(&self, action: Action) -> Option<&Rule> {
        self.rules[action as usize].as_ref()
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Spec {
    list: Option<toml::Value>,
    get: Option<toml::Value>,
    create: Option<toml::Value>,
    update: Option<toml::Value>,
    delete: Option<toml::Value>,
    #[serde(default)]
    hidden: Vec<String>,
    #[serde(default)]
    server_set: Vec<String>,
    #[serde(default)]
    on_create: BTreeMap<String, toml::Value>,
    #[serde(default)]
    on_update: BTreeMap<String, toml::Value>,
    #[serde(default)]
    required: Vec<String>,
    before_write: Option<String>,
    after_write: Option<String>,
    retries: Option<u32>,
    retry_backoff: Option<String>,
}

/// An app's collections by name.
pub fn parse(app: &AppManifest<'_>) -> Result<BTreeMap<String, Collection>, ConfigureError> {
    let err = |field: String, message: String| ConfigureError { field, message };
    let Some(value) = app.app_section.get("collections") else {
        return Ok(BTreeMap::new());
    };
    let specs: BTreeMap<String, Spec> = value
        .clone()
        .try_into()
        .map_err(|e: toml::de::Error| err("collections".into(), e.message().to_string()))?;
    let mut collections = BTreeMap::new();
    for (name, spec) in specs {
        let field = |key: &str| format!("collections.{name}.{key}");
        app_namespace(app.app, &name)
            .map_err(|e| err(format!("collections.{name}"), e.to_string()))?;
        let written = [
            &spec.list,
            &spec.get,
            &spec.create,
            &spec.update,
            &spec.delete,
        ];
        let mut rules: [Option<Rule>; 5] = Default::default();
        for (action, text) in Action::ALL.into_iter().zip(written) {
            if let Some(text) = text {
                let rule =
                    Rule::parse(text, action.kinds()).map_err(|m| err(field(action.name()), m))?;
                if let Some(function) = rule.function() {
                    app.check_function(&field(action.name()), function)?;
                }
                rules[action as usize] = Some(rule);
            }
        }
        let paths = |key: &str, list: &[String]| -> Result<Vec<String>, ConfigureError> {
            list.iter()
                .map(|path| {
                    check_path(path)
                        .map(|()| path.clone())
                        .map_err(|e| err(field(key), format!("field `{path}`: {e}")))
                })
                .collect()
        };
        let hidden = paths("hidden", &spec.hidden)?;
        let mut server_set = paths("server_set", &spec.server_set)?;
        let required = paths("required", &spec.required)?;
        let fills = |key: &str, table: &BTreeMap<String, toml::Value>| {
            table
                .iter()
                .map(|(f, v)| {
                    let at = || field(&format!("{key}.{f}"));
                    if f.contains('.') || f == "_id" || check_path(f).is_err() {
                        return Err(err(
                            at(),
                            "a filled field is a top-level field other than `_id`".into(),
                        ));
                    }
                    Ok((f.clone(), fill(v).map_err(|m| err(at(), m))?))
                })
                .collect::<Result<Vec<_>, _>>()
        };
        let on_create = fills("on_create", &spec.on_create)?;
        let on_update = fills("on_update", &spec.on_update)?;
        for (f, _) in on_create.iter().chain(&on_update) {
            if !server_set.contains(f) {
                server_set.push(f.clone());
            }
        }
        for path in &required {
            if let Some(h) = hidden.iter().find(|h| overlaps(h, path)) {
                return Err(err(
                    field("required"),
                    format!(
                        "field `{path}` is required but `{h}` is hidden: no client could write it"
                    ),
                ));
            }
            if let Some(s) = server_set.iter().find(|s| overlaps(s, path))
                && !on_create.iter().any(|(f, _)| f == s)
            {
                return Err(err(
                    field("required"),
                    format!("field `{path}` is required but `{s}` is server-set and never filled"),
                ));
            }
        }
        for (key, hook) in [
            ("before_write", &spec.before_write),
            ("after_write", &spec.after_write),
        ] {
            if let Some(function) = hook {
                app.check_function(&field(key), function)?;
            }
        }
        let retries = spec.retries.unwrap_or(3);
        if retries > MAX_RETRIES {
            return Err(err(field("retries"), format!("at most {MAX_RETRIES}")));
        }
        let retry_backoff = match &spec.retry_backoff {
            None => Duration::from_secs(1),
            Some(text) => humantime::parse_duration(text)
                .ok()
                .filter(|d| !d.is_zero() && *d <= MAX_BACKOFF)
                .ok_or_else(|| {
                    err(
                        field("retry_backoff"),
                        format!("`{text}` is not a duration from 1ms to 1h such as \"2s\""),
                    )
                })?,
        };
        collections.insert(
            name.clone(),
            Collection {
                name,
                rules,
                hidden,
                server_set,
                on_create,
                on_update,
                required,
                before_write: spec.before_write,
                after_write: spec.after_write,
                retries,
                retry_backoff,
            },
        );
    }
    Ok(collections)
}

fn fill(value: &toml::Value) -> Result<Fill, String> {
    Ok(match value {
        toml::Value::String(s) if s == "@user.id" => Fill::UserId,
        toml::Value::String(s) if s == "@now" => Fill::Now,
        toml::Value::String(s) if s.starts_with('@') && !s.starts_with("@@") => {
            return Err(format!(
                "`{s}`: a filled field is `@user.id`, `@now` or a value"
            ));
        }
        toml::Value::String(s) => Fill::Literal(Value::from(
            s.strip_prefix('@')
                .filter(|_| s.starts_with("@@"))
                .unwrap_or(s),
        )),
        toml::Value::Integer(i) => Fill::Literal(Value::from(*i)),
        toml::Value::Boolean(b) => Fill::Literal(Value::from(*b)),
        toml::Value::Float(f) => Fill::Literal(Value::from(*f)),
        _ => {
            return Err(
                "a filled field is `@user.id`, `@now`, a string, a number or a boolean".into(),
            );
        }
    })
}

/// Whether two paths reach the same data: one is the other or inside it.
/// Array positions (`items.0.secret`) count as the array's elements.
pub fn overlaps(a: &str, b: &str) -> bool {
    let strip = |p: &str| -> Vec<String> {
        p.split('.')
            .filter(|s| s.is_empty() || !s.bytes().all(|c| c.is_ascii_digit()))
            .map(str::to_string)
            .collect()
    };
    let (a, b) = (strip(a), strip(b));
    let n = a.len().min(b.len());
    a[..n] == b[..n]
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn parse_text(text: &str) -> Result<BTreeMap<String, Collection>, ConfigureError> {
        let table: toml::Table = toml::from_str(text).unwrap();
        let functions: Arc<[Arc<str>]> = vec![Arc::from("hooks")].into();
        parse(&AppManifest {
            app: "app",
            app_functions: &functions,
            app_section: &table,
        })
    }

    #[test]
    fn parses_rules_fields_and_hooks() {
        let parsed = parse_text(
            r#"
            [collections.todos]
            list = { filter = { owner = "@user.id" } }
            create = "user"
            hidden = ["secret"]
            on_create = { owner = "@user.id", createdAt = "@now" }
            required = ["title"]
            before_write = "hooks"
            retries = 2
            retry_backoff = "50ms"
            "#,
        )
        .unwrap();
        let todos = &parsed["todos"];
        assert!(todos.rule(Action::List).is_some() && todos.rule(Action::Get).is_none());
        assert_eq!(todos.server_set, ["createdAt", "owner"]);
        assert_eq!(todos.retry_backoff, Duration::from_millis(50));
    }

    #[test]
    fn refuses_bad_declarations_naming_collection_action_and_field() {
        for (text, field, words) in [
            (
                "[collections.t]\nlist = { filter = { owner = \"@user.name\" } }",
                "collections.t.list",
                "owner",
            ),
            (
                "[collections.t]\nget = { filter = { a = { \"$where\" = \"x\" } } }",
                "collections.t.get",
                "$where",
            ),
            (
                "[collections.t]\nlist = { filter = { a = \"@new.a\" } }",
                "collections.t.list",
                "@new",
            ),
            (
                "[collections.t]\nhidden = [\"pin\"]\nrequired = [\"pin\"]",
                "collections.t.required",
                "pin",
            ),
            (
                "[collections.t]\ncreate = \"anyone\"",
                "collections.t.create",
                "anyone",
            ),
            (
                "[collections.t]\nbefore_write = \"nope\"",
                "collections.t.before_write",
                "nope",
            ),
            (
                "[collections._t]\nlist = \"public\"",
                "collections._t",
                "collection name",
            ),
            (
                "[collections.t]\nretries = 11",
                "collections.t.retries",
                "10",
            ),
        ] {
            let err = parse_text(text).unwrap_err();
            assert_eq!(err.field, field, "{text}: {err}");
            assert!(err.message.contains(words), "{text}: {err}");
        }
    }

    #[test]
    fn paths_overlap_through_parents_and_array_positions() {
        assert!(overlaps("secret", "secret"));
        assert!(overlaps("a", "a.secret") && overlaps("a.secret", "a"));
        assert!(overlaps("items.0.secret", "items.secret"));
        assert!(!overlaps("secretive", "secret") && !overlaps("a.b", "a.c"));
    }
}
