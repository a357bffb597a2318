//! `kiln.toml`: what an app is made of.
//!
//! ```toml
//! name = "examples"                  # optional; defaults to the folder name
//!
//! [variables]                        # every function's variables
//! greeting = "Hello"
//!
//! [functions.hello]
//! source = "hello-rust"              # Rust crate folder, or a .js file
//! limits = { timeout = "5s", memory_mb = 64 }
//! variables = { greeting = "Hi" }    # overrides the app's
//! allowed_outbound_hosts = ["api.example.com"]
//!
//! [[routes]]
//! path = "/hello/:name"
//! methods = ["GET"]                  # empty or absent: any method
//! function = "hello"
//! auth = "user"                      # or "public" (default), "mfa", "role:NAME"
//!
//! [auth]                             # see capabilities::auth::settings
//! access_token_ttl = "15m"
//!
//! [[crons]]
//! name = "cleanup"
//! schedule = "0 3 * * *"             # crontab; 6 fields: seconds first
//! function = "cleanup"
//! timezone = "Europe/Paris"          # IANA name; UTC when absent
//! payload = { days = 30 }            # any TOML value, passed as JSON
//! overlap = "skip"                   # or "queue", or "allow"
//! missed = "skip"                    # or "run-latest"
//! retries = 2                        # after a failure; backoff doubles
//! retry_backoff = "10s"
//! ```

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use crate::access::{Kinds, Rule};
use crate::capabilities::Capabilities;
use crate::invocation::Limits;
use crate::sizes::ByteSize;
use crate::triggers::cron::CronSpec;
use crate::triggers::http::BodyLimits;

/// Why a manifest is invalid; the message names the field.
#[derive(Debug, thiserror::Error)]
#[error("kiln.toml: {0}")]
pub struct ManifestError(pub String);

/// The manifest's own keys; the rest of the top level belongs to capabilities.
const KEYS: &[&str] = &["name", "functions", "routes", "crons"];
/// A function table's own keys; the rest belongs to capabilities.
const FUNCTION_KEYS: &[&str] = &["language", "source", "component", "limits"];

#[derive(Debug, Clone, Deserialize)]
pub struct Manifest {
    pub name: Option<String>,
    #[serde(default)]
    pub functions: BTreeMap<String, FunctionSpec>,
    #[serde(default)]
    pub routes: Vec<RouteSpec>,
    #[serde(default)]
    pub crons: Vec<CronSpec>,
    /// Top-level keys a capability reads (`[variables]`), configured at deploy.
    #[serde(flatten)]
    pub capabilities: toml::Table,
}

#[derive(Debug, Clone, Deserialize)]
pub struct FunctionSpec {
    /// How `kiln build` builds it; inferred from `source` when absent.
    pub language: Option<Language>,
    /// A Rust crate folder or a JavaScript file, relative to `kiln.toml`.
    pub source: Option<String>,
    /// A prebuilt component, relative to `kiln.toml`; wins over `source`.
    pub component: Option<String>,
    #[serde(default)]
    pub limits: LimitsSpec,
    /// Keys a capability reads (`variables`, `allowed_outbound_hosts`).
    #[serde(flatten)]
    pub capabilities: toml::Table,
}

/// A function's `limits`: the invocation's and the HTTP trigger's.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsSpec {
    #[serde(default, with = "humantime_serde")]
    pub timeout: Option<Duration>,
    pub memory_mb: Option<u32>,
    pub max_concurrency: Option<u32>,
    pub max_request_body: Option<ByteSize>,
    pub max_response_body: Option<ByteSize>,
}

impl LimitsSpec {
    pub fn invocation(&self) -> Limits {
        let default = Limits::default();
        Limits {
            timeout: self.timeout.unwrap_or(default.timeout),
            memory_mb: self.memory_mb.unwrap_or(default.memory_mb),
            max_concurrency: self.max_concurrency.unwrap_or(default.max_concurrency),
        }
    }

    pub fn body(&self) -> BodyLimits {
        let default = BodyLimits::default();
        BodyLimits {
            max_request_body: self
                .max_request_body
                .map_or(default.max_request_body, |size| size.0),
            max_response_body: self
                .max_response_body
                .map_or(default.max_response_body, |size| size.0),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Language {
    Rust,
    Js,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteSpec {
    pub path: String,
    pub function: String,
    #[serde(default)]
    pub methods: Vec<String>,
    /// Who may call it: `public` (the default), `user`, `mfa`, `role:NAME`.
    pub auth: Option<String>,
}

impl RouteSpec {
    pub fn policy(&self) -> Result<Rule, String> {
        self.auth.as_deref().map_or(Ok(Rule::Public), |text| {
            Rule::parse_text(text, Kinds::ROUTE)
        })
    }
}

impl Manifest {
    /// Parses a manifest and checks its structure. What capabilities and
    /// triggers read (variables, outbound hosts, schedules, route patterns)
    /// is checked when a deploy configures them.
    pub fn parse(text: &str) -> Result<Self, ManifestError> {
        let manifest: Manifest =
            toml::from_str(text).map_err(|e| ManifestError(toml_error(text, &e)))?;
        manifest.validate()?;
        Ok(manifest)
    }

    fn validate(&self) -> Result<(), ManifestError> {
        let err = |field: String, msg: &str| Err(ManifestError(format!("{field}: {msg}")));
        if let Some(name) = &self.name
            && !is_valid_app_name(name)
        {
            return err("name".into(), APP_NAME_RULE);
        }
        if let Some(key) = unknown_key(&self.capabilities, Capabilities::app_keys()) {
            return err(key, &expected(KEYS, Capabilities::app_keys()));
        }
        if self.functions.is_empty() {
            return err("functions".into(), "an app needs at least one function");
        }
        for (name, function) in &self.functions {
            let field = format!("functions.{name}");
            if !is_valid_function_name(name) {
                return err(
                    field,
                    "a function name is 1 to 64 of a-z, 0-9, `-` or `_`, starting with a letter",
                );
            }
            if let Some(key) = unknown_key(&function.capabilities, Capabilities::function_keys()) {
                return err(
                    format!("{field}.{key}"),
                    &expected(FUNCTION_KEYS, Capabilities::function_keys()),
                );
            }
            if function.source.is_none() && function.component.is_none() {
                return err(field, "needs `source` (to build) or `component` (prebuilt)");
            }
            if let Err(msg) = function.limits.invocation().validate() {
                return err(format!("{field}.limits"), &msg);
            }
        }
        for (i, route) in self.routes.iter().enumerate() {
            if !self.functions.contains_key(&route.function) {
                return err(
                    format!("routes[{i}].function"),
                    &format!("no function named `{}`", route.function),
                );
            }
            if let Err(msg) = route.policy() {
                return err(format!("routes[{i}].auth"), &msg);
            }
            for method in &route.methods {
                if http::Method::from_bytes(method.as_bytes()).is_err()
                    || method.to_uppercase() != *method
                {
                    return err(
                        format!("routes[{i}].methods"),
                        &format!("`{method}` is not an HTTP method (write it in capitals)"),
                    );
                }
            }
        }
        let mut cron_names = std::collections::HashSet::new();
        for (i, cron) in self.crons.iter().enumerate() {
            let field = format!("crons[{i}]");
            if !is_valid_function_name(&cron.name) {
                return err(
                    format!("{field}.name"),
                    "a trigger name is 1 to 64 of a-z, 0-9, `-` or `_`, starting with a letter",
                );
            }
            if !cron_names.insert(cron.name.as_str()) {
                return err(
                    format!("{field}.name"),
                    &format!("two triggers are named `{}`", cron.name),
                );
            }
            if !self.functions.contains_key(&cron.function) {
                return err(
                    format!("{field}.function"),
                    &format!("no function named `{}`", cron.function),
                );
            }
        }
        Ok(())
    }
}

/// A key of `table` that no capability reads.
/// A TOML error as `line L, column C: MESSAGE`, then the line it is on
/// and a caret under the spot, each on its own line.
pub fn toml_error(text: &str, err: &toml::de::Error) -> String {
    let message = err.message().trim();
    let Some(span) = err.span() else {
        return message.to_string();
    };
    let start = span.start.min(text.len());
    let line_start = text[..start].rfind('\n').map_or(0, |i| i + 1);
    let line_end = text[start..].find('\n').map_or(text.len(), |i| start + i);
    let line_no = text[..start].matches('\n').count() + 1;
    let column = text[line_start..start].chars().count() + 1;
    let width = text[start..span.end.clamp(start, line_end)]
        .trim_end()
        .chars()
        .count()
        .clamp(1, SNIPPET_CHARS);
    // A long line is shown around the spot only: the message stays short
    // whatever the manifest.
    let skip = (column - 1).saturating_sub(SNIPPET_CHARS / 2);
    let shown: String = text[line_start..line_end]
        .chars()
        .skip(skip)
        .take(SNIPPET_CHARS)
        .collect();
    let gutter = line_no.to_string().len();
    format!(
        "line {line_no}, column {column}: {message}\n{blank:gutter$} |\n{line_no} | {shown}\n{blank:gutter$} | {pad}{carets}",
        blank = "",
        pad = " ".repeat(column - 1 - skip),
        carets = "^".repeat(width),
    )
}

/// Characters of the offending line a TOML error shows.
const SNIPPET_CHARS: usize = 120;

fn unknown_key(table: &toml::Table, read: impl Iterator<Item = &'static str>) -> Option<String> {
    let read: Vec<&str> = read.collect();
    table.keys().find(|k| !read.contains(&k.as_str())).cloned()
}

fn expected(own: &[&'static str], capabilities: impl Iterator<Item = &'static str>) -> String {
    let known: Vec<&str> = own.iter().copied().chain(capabilities).collect();
    format!("unknown field; expected one of {}", known.join(", "))
}

const APP_NAME_RULE: &str = "an app name is 1 to 63 of a-z, 0-9 or `-`, starting with a letter (it is a DNS label), and not `admin` (the admin API's path)";
/// The app name the admin API's path takes.
pub const RESERVED_APP_NAME: &str = "admin";

/// App names are DNS labels: the server routes `APP.example.com` to the app.
/// `admin` is reserved: `/admin/...` is the admin API.
pub fn is_valid_app_name(name: &str) -> bool {
    name != RESERVED_APP_NAME
        && name.len() <= 63
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && !name.ends_with('-')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

fn is_valid_function_name(name: &str) -> bool {
    name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
}

pub fn app_name_rule() -> &'static str {
    APP_NAME_RULE
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
        name = "shop"
        [variables]
        greeting = "Hello"
        [functions.hello]
        source = "hello"
        limits = { timeout = "5s", memory_mb = 64 }
        variables = { greeting = "Hi" }
        [[routes]]
        path = "/hello/:name"
        methods = ["GET"]
        function = "hello"
    "#;

    #[test]
    fn parses_a_manifest_with_limits_and_variables() {
        let m = Manifest::parse(GOOD).unwrap();
        let f = &m.functions["hello"];
        assert_eq!(f.limits.invocation().memory_mb, 64);
        assert_eq!(
            f.limits.body().max_request_body,
            BodyLimits::default().max_request_body
        );
        assert_eq!(
            f.limits.invocation().timeout,
            std::time::Duration::from_secs(5)
        );
    }

    #[test]
    fn body_limits_take_numbers_or_sizes_with_units() {
        let sized = GOOD.replace(
            "memory_mb = 64 }",
            "memory_mb = 64, max_request_body = \"200MiB\", max_response_body = 2048 }",
        );
        let body = Manifest::parse(&sized).unwrap().functions["hello"]
            .limits
            .body();
        assert_eq!(body.max_request_body, 200 << 20);
        assert_eq!(body.max_response_body, 2048);
        let spaced = GOOD.replace(
            "memory_mb = 64 }",
            "memory_mb = 64, max_request_body = \"10 MiB\" }",
        );
        let body = Manifest::parse(&spaced).unwrap().functions["hello"]
            .limits
            .body();
        assert_eq!(body.max_request_body, 10 << 20);
    }

    #[test]
    fn a_toml_error_names_its_line_and_points_at_the_value_on_lines_of_its_own() {
        let bad = GOOD.replace(
            "memory_mb = 64 }",
            "memory_mb = 64, max_request_body = \"200 parsecs\" }",
        );
        let message = error_of(&bad);
        let lines: Vec<&str> = message.lines().collect();
        assert_eq!(lines.len(), 4, "{message}");
        let line_no = bad.lines().position(|l| l.contains("parsecs")).unwrap() + 1;
        assert!(
            lines[0].starts_with(&format!("kiln.toml: line {line_no}, column ")),
            "{message}"
        );
        assert!(
            lines[0].contains("`200 parsecs` is not a size"),
            "{message}"
        );
        assert!(
            lines[2].contains("max_request_body = \"200 parsecs\""),
            "{message}"
        );
        // The caret is under the value.
        let caret = lines[3].find('^').unwrap();
        assert_eq!(&lines[2][caret..caret + 13], "\"200 parsecs\"", "{message}");
        assert_eq!(lines[3].matches('^').count(), 13, "{message}");
        // On a very long line only the part around the spot is shown.
        let long = format!("name = \"{}\" oops\n", "a".repeat(100_000));
        let message = error_of(&long);
        assert!(message.contains("line 1, column 100011"), "{message}");
        assert!(message.len() < 1_000, "{} bytes", message.len());
    }

    fn error_of(text: &str) -> String {
        Manifest::parse(text).unwrap_err().to_string()
    }

    #[test]
    fn names_the_field_that_is_wrong() {
        let bad_route = GOOD.replace(r#"function = "hello""#, r#"function = "nope""#);
        assert!(
            error_of(&bad_route).contains("routes[0].function"),
            "{}",
            error_of(&bad_route)
        );
        let bad_policy = GOOD.replace(
            r#"methods = ["GET"]"#,
            "methods = [\"GET\"]\nauth = \"users\"",
        );
        assert!(
            error_of(&bad_policy).contains("routes[0].auth"),
            "{}",
            error_of(&bad_policy)
        );
        let bad_method = GOOD.replace(r#"["GET"]"#, r#"["get"]"#);
        assert!(error_of(&bad_method).contains("routes[0].methods"));
        let bad_limit = GOOD.replace("memory_mb = 64", "memory_mb = 0");
        assert!(error_of(&bad_limit).contains("functions.hello.limits"));
        let unknown = GOOD.replace("source = \"hello\"", "source = \"hello\"\ntimeout = 3");
        assert!(
            error_of(&unknown).contains("timeout"),
            "{}",
            error_of(&unknown)
        );
        let bad_name = GOOD.replace("name = \"shop\"", "name = \"Shop!\"");
        assert!(error_of(&bad_name).contains("name:"));
        let bad_duration = GOOD.replace("\"5s\"", "\"soon\"");
        assert!(
            error_of(&bad_duration).contains("timeout"),
            "{}",
            error_of(&bad_duration)
        );
    }
}
