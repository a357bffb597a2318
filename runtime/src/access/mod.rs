//! Who may do what: the one rule language of routes, buckets and
//! collections (and later realtime channels and push installations).
//!
//! A rule is `public`, `user`, `mfa`, `role:NAME`, `owner` (buckets: the
//! first segment of the key is the caller's id), `function:NAME` (the app's
//! function decides, request by request), or a filter in the store's query
//! language with placeholders for the caller and the time
//! (`{ filter = { owner = "@user.id" } }`, see [`filter_rule`]). Each place
//! accepts some of the kinds ([`Kinds`]); the rule is parsed once, at
//! deploy, and decided per request by [`Rule::decide`]. No rule means no
//! client access: places hold an `Option<Rule>` and refuse `None`.

pub mod filter_rule;

use serde_json::Value;

pub use self::filter_rule::{FilterRule, Placeholders};

/// A caller the host verified: their session is live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub user: String,
    pub session: String,
    pub roles: Vec<String>,
    /// Whether the session passed the second factor.
    pub mfa: bool,
}

/// Why a caller does not meet a rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// No valid token (401).
    SignInRequired,
    /// Signed in, but without the role (403).
    MissingRole(String),
    /// Signed in, without the second factor (403).
    SecondFactorRequired,
}

/// A parsed rule.
#[derive(Debug, Clone, PartialEq)]
pub enum Rule {
    /// Anyone; a valid token still names the user.
    Public,
    /// Any signed-in user.
    User,
    /// A signed-in user whose session passed the second factor.
    Mfa,
    /// A signed-in user with this role.
    Role(String),
    /// A signed-in user whose id is the first segment of the key.
    Owner,
    /// The app's function of this name decides.
    Function(String),
    /// The document must match the filter, placeholders filled in.
    Filter(FilterRule),
}

/// The kinds of rule one place accepts.
#[derive(Debug, Clone, Copy)]
pub struct Kinds {
    pub owner: bool,
    pub function: bool,
    /// Filter rules, and which placeholders they may use.
    pub filter: Option<Placeholders>,
}

impl Kinds {
    /// A route's `auth`: decided before any instance runs.
    pub const ROUTE: Kinds = Kinds {
        owner: false,
        function: false,
        filter: None,
    };
    /// A bucket's actions.
    pub const BUCKET: Kinds = Kinds {
        owner: true,
        function: true,
        filter: None,
    };
    /// A collection's `list`, `get` and `delete`: the stored document.
    pub const COLLECTION_READ: Kinds = Kinds {
        owner: false,
        function: true,
        filter: Some(Placeholders::Caller),
    };
    /// A collection's `create` and `update`: `@new.FIELD` too.
    pub const COLLECTION_WRITE: Kinds = Kinds {
        owner: false,
        function: true,
        filter: Some(Placeholders::CallerAndNew),
    };

    fn expected(&self) -> String {
        let mut kinds = vec!["`public`", "`user`", "`mfa`", "`role:NAME`"];
        if self.owner {
            kinds.push("`owner`");
        }
        if self.function {
            kinds.push("`function:NAME`");
        }
        if self.filter.is_some() {
            kinds.push("`{ filter = {...} }`");
        }
        let last = kinds.pop().unwrap_or_default();
        format!("{} or {last}", kinds.join(", "))
    }
}

/// What a rule says of a caller it does not refuse outright.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision<'a> {
    Allowed,
    /// Only on the signed-in caller's own keys (`owner`): the place checks the key.
    IfOwner,
    /// Only if the app's function of this name says so.
    IfFunctionAgrees(&'a str),
    /// Only on documents matching this filter (placeholders filled in).
    IfMatches(Value),
}

/// Roles are plain strings of a bounded alphabet, so they fit in a rule
/// and a log line as they are.
pub fn is_valid_role(role: &str) -> bool {
    !role.is_empty()
        && role.len() <= 64
        && role
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-.:".contains(c))
}

const ROLE_RULE: &str = "NAME: 1 to 64 of a-z, A-Z, 0-9, `_`, `-`, `.`, `:`";

impl Rule {
    /// A rule as `kiln.toml` writes it: a string, or `{ filter = {...} }`.
    pub fn parse(value: &toml::Value, kinds: Kinds) -> Result<Rule, String> {
        match value {
            toml::Value::String(text) => Rule::parse_text(text, kinds),
            toml::Value::Table(table) => {
                let Some(placeholders) = kinds.filter else {
                    return Err(format!("a rule here is {}", kinds.expected()));
                };
                match (table.get("filter"), table.len()) {
                    (Some(filter), 1) => FilterRule::parse(filter, placeholders).map(Rule::Filter),
                    _ => Err("a filter rule is `{ filter = { FIELD = VALUE, ... } }`".into()),
                }
            }
            _ => Err(format!("a rule is {}", kinds.expected())),
        }
    }

    /// A rule written as text.
    pub fn parse_text(text: &str, kinds: Kinds) -> Result<Rule, String> {
        let refused = || {
            format!(
                "`{}` is not a rule: a rule here is {} ({ROLE_RULE})",
                text.escape_debug(),
                kinds.expected()
            )
        };
        match text {
            "public" => Ok(Rule::Public),
            "user" => Ok(Rule::User),
            "mfa" => Ok(Rule::Mfa),
            "owner" if kinds.owner => Ok(Rule::Owner),
            other => {
                if let Some(role) = other.strip_prefix("role:") {
                    return match is_valid_role(role) {
                        true => Ok(Rule::Role(role.to_string())),
                        false => Err(refused()),
                    };
                }
                match other.strip_prefix("function:") {
                    Some("") if kinds.function => {
                        Err("`function:` names one of the app's functions".into())
                    }
                    Some(name) if kinds.function => Ok(Rule::Function(name.to_string())),
                    _ => Err(refused()),
                }
            }
        }
    }

    /// What the rule says of `identity` (none: anonymous). `new` is the
    /// document as a write would leave it, for `@new.FIELD`.
    pub fn decide<'a>(
        &'a self,
        identity: Option<&Identity>,
        new: Option<&Value>,
    ) -> Result<Decision<'a>, Refusal> {
        let signed_in = || identity.ok_or(Refusal::SignInRequired);
        match self {
            Rule::Public => Ok(Decision::Allowed),
            Rule::User => signed_in().map(|_| Decision::Allowed),
            Rule::Role(role) => match signed_in()?.roles.iter().any(|r| r == role) {
                true => Ok(Decision::Allowed),
                false => Err(Refusal::MissingRole(role.clone())),
            },
            Rule::Mfa => match signed_in()?.mfa {
                true => Ok(Decision::Allowed),
                false => Err(Refusal::SecondFactorRequired),
            },
            Rule::Owner => signed_in().map(|_| Decision::IfOwner),
            Rule::Function(name) => Ok(Decision::IfFunctionAgrees(name)),
            Rule::Filter(filter) => filter.resolve(identity, new).map(Decision::IfMatches),
        }
    }

    /// The function a `function:` rule names.
    pub fn function(&self) -> Option<&str> {
        match self {
            Rule::Function(name) => Some(name),
            _ => None,
        }
    }

    /// Whether a caller without a token may pass (a function rule may let
    /// them too, but it is the function's decision, not the manifest's).
    pub fn admits_anonymous(&self) -> bool {
        match self {
            Rule::Public => true,
            Rule::Filter(filter) => !filter.mentions_caller(),
            _ => false,
        }
    }

    /// The rule as written, for messages and warnings.
    pub fn describe(&self) -> String {
        match self {
            Rule::Public => "public".into(),
            Rule::User => "user".into(),
            Rule::Mfa => "mfa".into(),
            Rule::Role(role) => format!("role:{role}"),
            Rule::Owner => "owner".into(),
            Rule::Function(name) => format!("function:{name}"),
            Rule::Filter(filter) => format!("filter {}", filter.template()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn identity(roles: &[&str], mfa: bool) -> Identity {
        Identity {
            user: "u".into(),
            session: "s".into(),
            roles: roles.iter().map(|r| r.to_string()).collect(),
            mfa,
        }
    }

    fn text(rule: &str, kinds: Kinds) -> Result<Rule, String> {
        Rule::parse_text(rule, kinds)
    }

    #[test]
    fn each_place_takes_its_kinds_and_refuses_the_rest() {
        assert_eq!(text("public", Kinds::ROUTE), Ok(Rule::Public));
        assert_eq!(
            text("role:admin", Kinds::ROUTE),
            Ok(Rule::Role("admin".into()))
        );
        for bad in [
            "",
            "users",
            "role:",
            "role:a b",
            "ROLE:x",
            "any",
            "owner",
            "function:f",
        ] {
            assert!(text(bad, Kinds::ROUTE).is_err(), "{bad}");
        }
        assert_eq!(text("owner", Kinds::BUCKET), Ok(Rule::Owner));
        assert!(text("owner", Kinds::COLLECTION_READ).is_err());
        assert_eq!(
            text("function:decide", Kinds::BUCKET),
            Ok(Rule::Function("decide".into()))
        );
        assert!(text("function:", Kinds::BUCKET).is_err());
        let table: toml::Value = toml::from_str("filter = { owner = \"@user.id\" }").unwrap();
        assert!(
            Rule::parse(&table, Kinds::BUCKET).is_err(),
            "no filters on buckets"
        );
        assert!(Rule::parse(&table, Kinds::COLLECTION_READ).is_ok());
        let extra: toml::Value =
            toml::from_str("filter = { owner = \"@user.id\" }\nx = 1").unwrap();
        assert!(Rule::parse(&extra, Kinds::COLLECTION_READ).is_err());
    }

    #[test]
    fn decides_sign_in_role_and_second_factor() {
        let admin = identity(&["admin"], false);
        assert_eq!(Rule::User.decide(None, None), Err(Refusal::SignInRequired));
        assert_eq!(Rule::Public.decide(None, None), Ok(Decision::Allowed));
        assert_eq!(
            Rule::Role("admin".into()).decide(Some(&admin), None),
            Ok(Decision::Allowed)
        );
        assert_eq!(
            Rule::Role("staff".into()).decide(Some(&admin), None),
            Err(Refusal::MissingRole("staff".into()))
        );
        assert_eq!(
            Rule::Mfa.decide(Some(&admin), None),
            Err(Refusal::SecondFactorRequired)
        );
        let with_mfa = identity(&[], true);
        assert_eq!(
            Rule::Mfa.decide(Some(&with_mfa), None),
            Ok(Decision::Allowed)
        );
        assert_eq!(Rule::Owner.decide(None, None), Err(Refusal::SignInRequired));
    }

    #[test]
    fn a_filter_rule_is_filled_in_for_the_caller() {
        let table: toml::Value = toml::from_str(
            "filter = { owner = \"@user.id\", team = { \"$in\" = \"@user.roles\" } }",
        )
        .unwrap();
        let rule = Rule::parse(&table, Kinds::COLLECTION_READ).unwrap();
        let ada = identity(&["red"], false);
        assert_eq!(
            rule.decide(Some(&ada), None),
            Ok(Decision::IfMatches(
                json!({"owner": "u", "team": {"$in": ["red"]}})
            ))
        );
        assert_eq!(rule.decide(None, None), Err(Refusal::SignInRequired));
        assert!(!rule.admits_anonymous());
    }
}
