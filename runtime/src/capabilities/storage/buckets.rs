//! Buckets (`[buckets.NAME]` in `kiln.toml`): the key prefixes an app's
//! clients may reach, each with its rules. A bucket is the first segment of
//! a key: `avatars/ada/me.png` is `ada/me.png` in bucket `avatars`. Without
//! a bucket, or without a rule for an action, clients get nothing; the
//! app's functions reach every key.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::files::MAX_FILE_BYTES;
use super::thumbnails::{MAX_SIZES, ThumbSize};
use crate::access::{Decision, Identity, Kinds, Refusal, Rule};
use crate::capabilities::ConfigureError;
use crate::sizes::{WrittenSize, parse_size};

/// A bucket's largest file when its manifest gives none.
pub const DEFAULT_MAX_BYTES: u64 = 50 * 1024 * 1024;

/// A rule's answer that needs no refusal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Allowed<'a> {
    Yes,
    /// Only if the app's function of this name says so.
    IfFunctionAgrees(&'a str),
}

/// What a client asks to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Download, head, or list (under a prefix).
    Read,
    /// Store a file where there is none.
    Upload,
    /// Store a file over an existing one.
    Replace,
    Delete,
}

impl Action {
    pub fn name(self) -> &'static str {
        match self {
            Action::Read => "read",
            Action::Upload => "upload",
            Action::Replace => "replace",
            Action::Delete => "delete",
        }
    }
}

/// Why a client may not do an action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denied {
    /// The bucket has no rule for the action: no client may.
    NoRule,
    /// The rule's policy refused (sign in, role, second factor).
    Policy(Refusal),
    /// The key is not under the signed-in user's own folder.
    NotOwner,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Bucket {
    pub read: Option<Rule>,
    pub upload: Option<Rule>,
    pub replace: Option<Rule>,
    pub delete: Option<Rule>,
    pub max_bytes: u64,
    /// `type/subtype` or `type/*`; empty: any.
    pub content_types: Vec<String>,
    /// The thumbnail sizes clients may ask for (`?thumb=`).
    pub thumbs: Vec<ThumbSize>,
}

/// An app's buckets by name.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Buckets(BTreeMap<String, Bucket>);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BucketSpec {
    read: Option<String>,
    upload: Option<String>,
    replace: Option<String>,
    delete: Option<String>,
    max_size: Option<WrittenSize>,
    #[serde(default)]
    content_types: Vec<String>,
    #[serde(default)]
    thumbs: Vec<String>,
}

impl Buckets {
    /// The `[buckets]` table of a manifest.
    pub fn parse(app_section: &toml::Table) -> Result<Self, ConfigureError> {
        let Some(value) = app_section.get("buckets") else {
            return Ok(Buckets::default());
        };
        let err = |field: String, message: String| ConfigureError { field, message };
        let specs: BTreeMap<String, BucketSpec> = value
            .clone()
            .try_into()
            .map_err(|e: toml::de::Error| err("buckets".into(), e.message().to_string()))?;
        let mut buckets = BTreeMap::new();
        for (name, spec) in specs {
            let field = |key: &str| format!("buckets.{name}.{key}");
            if !is_valid_name(&name) {
                return Err(err(
                    format!("buckets.{name}"),
                    "a bucket name is 1 to 63 of a-z, 0-9, `-` and `_`".into(),
                ));
            }
            let rule = |key: &str, text: &Option<String>| {
                text.as_deref()
                    .map(|t| Rule::parse_text(t, Kinds::BUCKET).map_err(|m| err(field(key), m)))
                    .transpose()
            };
            let max_bytes = match spec.max_size {
                None => DEFAULT_MAX_BYTES,
                Some(WrittenSize::Bytes(n)) => n,
                Some(WrittenSize::Text(t)) => parse_size(&t).ok_or_else(|| {
                    err(
                        field("max_size"),
                        format!("`{t}` is not a size such as 5242880 or \"5 MiB\""),
                    )
                })?,
            };
            if max_bytes == 0 || max_bytes > MAX_FILE_BYTES {
                return Err(err(
                    field("max_size"),
                    format!("a bucket's largest file is 1 byte to {MAX_FILE_BYTES} bytes"),
                ));
            }
            for pattern in &spec.content_types {
                if !is_valid_content_type_pattern(pattern) {
                    return Err(err(
                        field("content_types"),
                        format!(
                            "`{}` is not `type/subtype` or `type/*`",
                            pattern.escape_debug()
                        ),
                    ));
                }
            }
            if spec.thumbs.len() > MAX_SIZES {
                return Err(err(
                    field("thumbs"),
                    format!("a bucket declares at most {MAX_SIZES} thumbnail sizes"),
                ));
            }
            let mut thumbs = Vec::new();
            for text in &spec.thumbs {
                let size = ThumbSize::parse(text).map_err(|m| err(field("thumbs"), m))?;
                if !thumbs.contains(&size) {
                    thumbs.push(size);
                }
            }
            let bucket = Bucket {
                read: rule("read", &spec.read)?,
                upload: rule("upload", &spec.upload)?,
                replace: rule("replace", &spec.replace)?,
                delete: rule("delete", &spec.delete)?,
                max_bytes,
                content_types: spec
                    .content_types
                    .iter()
                    .map(|t| t.to_ascii_lowercase())
                    .collect(),
                thumbs,
            };
            buckets.insert(name, bucket);
        }
        Ok(Buckets(buckets))
    }

    pub fn get(&self, name: &str) -> Option<&Bucket> {
        self.0.get(name)
    }

    /// The functions `function:` rules name, with the field naming each.
    pub fn rule_functions(&self) -> impl Iterator<Item = (String, &str)> {
        self.0.iter().flat_map(|(name, bucket)| {
            [
                ("read", &bucket.read),
                ("upload", &bucket.upload),
                ("replace", &bucket.replace),
                ("delete", &bucket.delete),
            ]
            .into_iter()
            .filter_map(move |(action, rule)| {
                let function = rule.as_ref()?.function()?;
                Some((format!("buckets.{name}.{action}"), function))
            })
        })
    }
}

impl Bucket {
    /// Whether `identity` may do `action` on `path` (the key inside the
    /// bucket, or a listing prefix). Decided from the rule, the caller and
    /// the path alone, so a refusal says nothing of whether a file exists;
    /// a `function:` rule leaves it to the function.
    pub fn allows(
        &self,
        action: Action,
        identity: Option<&Identity>,
        path: &str,
    ) -> Result<Allowed<'_>, Denied> {
        let rule = match action {
            Action::Read => &self.read,
            Action::Upload => &self.upload,
            Action::Replace => &self.replace,
            Action::Delete => &self.delete,
        };
        let rule = rule.as_ref().ok_or(Denied::NoRule)?;
        match rule.decide(identity, None).map_err(Denied::Policy)? {
            Decision::Allowed => Ok(Allowed::Yes),
            Decision::IfOwner => {
                let user = identity.ok_or(Denied::Policy(Refusal::SignInRequired))?;
                match path.split_once('/') {
                    Some((owner, rest)) if owner == user.user && !rest.is_empty() => {
                        Ok(Allowed::Yes)
                    }
                    // A listing of exactly the user's folder.
                    None if action == Action::Read && path == user.user => Ok(Allowed::Yes),
                    _ => Err(Denied::NotOwner),
                }
            }
            Decision::IfFunctionAgrees(name) => Ok(Allowed::IfFunctionAgrees(name)),
            // Buckets parse no filter rules.
            Decision::IfMatches(_) => Err(Denied::NoRule),
        }
    }

    /// Whether anyone may read: such files are served as cacheable by shared caches.
    pub fn is_public(&self) -> bool {
        matches!(self.read, Some(Rule::Public))
    }

    /// Whether files of `content_type` may be uploaded.
    pub fn accepts(&self, content_type: &str) -> bool {
        if self.content_types.is_empty() {
            return true;
        }
        let essence = content_type
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        self.content_types
            .iter()
            .any(|pattern| match pattern.strip_suffix("/*") {
                Some(kind) => essence.split_once('/').is_some_and(|(k, _)| k == kind),
                None => *pattern == essence,
            })
    }
}

fn is_valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
}

fn is_valid_content_type_pattern(pattern: &str) -> bool {
    let token = |t: &str| {
        !t.is_empty()
            && t.chars()
                .all(|c| c.is_ascii_alphanumeric() || "!#$&-^_.+".contains(c))
    };
    match pattern.split_once('/') {
        Some((kind, "*")) => token(kind),
        Some((kind, sub)) => token(kind) && token(sub),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn buckets(toml_text: &str) -> Result<Buckets, ConfigureError> {
        Buckets::parse(&toml::from_str(toml_text).unwrap())
    }

    fn user(id: &str, roles: &[&str]) -> Identity {
        Identity {
            user: id.into(),
            session: "s".into(),
            roles: roles.iter().map(|r| r.to_string()).collect(),
            mfa: false,
        }
    }

    #[test]
    fn parses_rules_sizes_and_types() {
        let parsed = buckets(
            r#"
            [buckets.avatars]
            read = "public"
            upload = "owner"
            max_size = "5 MiB"
            content_types = ["image/*", "application/PDF"]
            "#,
        )
        .unwrap();
        let avatars = parsed.get("avatars").unwrap();
        assert_eq!(avatars.read, Some(Rule::Public));
        assert_eq!(avatars.upload, Some(Rule::Owner));
        assert_eq!(
            (avatars.replace.clone(), avatars.delete.clone()),
            (None, None)
        );
        assert_eq!(avatars.max_bytes, 5 << 20);
        assert!(avatars.accepts("image/png") && avatars.accepts("application/pdf; q=1"));
        assert!(!avatars.accepts("text/html") && !avatars.accepts("imagex/png"));
        assert!(avatars.is_public());
    }

    #[test]
    fn refuses_bad_buckets_naming_the_field() {
        for (text, field) in [
            ("[buckets.Avatars]\nread = \"public\"", "buckets.Avatars"),
            ("[buckets.a]\nread = \"anyone\"", "buckets.a.read"),
            ("[buckets.a]\nmax_size = 0", "buckets.a.max_size"),
            (
                "[buckets.a]\nmax_size = \"5 parsecs\"",
                "buckets.a.max_size",
            ),
            (
                "[buckets.a]\ncontent_types = [\"image\"]",
                "buckets.a.content_types",
            ),
            ("[buckets.a]\nlist = \"public\"", "buckets"),
            ("[buckets.a]\nupload = \"function:\"", "buckets.a.upload"),
            ("[buckets.a]\nthumbs = [\"10x10x\"]", "buckets.a.thumbs"),
        ] {
            let err = buckets(text).unwrap_err();
            assert_eq!(err.field, field, "{text}: {err}");
        }
    }

    #[test]
    fn the_owner_is_the_first_segment() {
        let bucket = buckets("[buckets.a]\nread = \"owner\"\ndelete = \"role:admin\"")
            .unwrap()
            .get("a")
            .cloned()
            .unwrap();
        let ada = user("ada", &[]);
        assert_eq!(
            bucket.allows(Action::Read, Some(&ada), "ada/x.png"),
            Ok(Allowed::Yes)
        );
        assert_eq!(
            bucket.allows(Action::Read, Some(&ada), "ada"),
            Ok(Allowed::Yes),
            "her folder's listing"
        );
        for path in ["bob/x.png", "adam/x.png", "ada", "x.png", "ada/"] {
            if path == "ada" {
                continue;
            }
            assert_eq!(
                bucket.allows(Action::Read, Some(&ada), path),
                Err(Denied::NotOwner),
                "{path}"
            );
        }
        assert_eq!(
            bucket.allows(Action::Read, None, "ada/x.png"),
            Err(Denied::Policy(Refusal::SignInRequired))
        );
        assert_eq!(
            bucket.allows(Action::Upload, Some(&ada), "ada/x.png"),
            Err(Denied::NoRule)
        );
        assert_eq!(
            bucket.allows(Action::Delete, Some(&ada), "ada/x.png"),
            Err(Denied::Policy(Refusal::MissingRole("admin".into())))
        );
        assert_eq!(
            bucket.allows(Action::Delete, Some(&user("root", &["admin"])), "ada/x.png"),
            Ok(Allowed::Yes)
        );
    }

    #[test]
    fn a_function_rule_leaves_the_decision_to_its_function() {
        let all =
            buckets("[buckets.a]\nread = \"public\"\nupload = \"function:may-upload\"").unwrap();
        let bucket = all.get("a").unwrap();
        assert_eq!(
            bucket.allows(Action::Upload, None, "x.png"),
            Ok(Allowed::IfFunctionAgrees("may-upload"))
        );
        assert_eq!(bucket.allows(Action::Read, None, "x.png"), Ok(Allowed::Yes));
        assert_eq!(
            all.rule_functions().collect::<Vec<_>>(),
            [("buckets.a.upload".to_string(), "may-upload")]
        );
    }
}
