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

use serde::{Deserialize, Serialize};

use crate::capabilities::config::is_valid_name;
use crate::engine::Limits;
use crate::engine::outbound::OutboundEntry;
use crate::triggers::cron::{Missed, Overlap};

/// Why a manifest is invalid; the message names the field.
#[derive(Debug, thiserror::Error)]
#[error("kiln.toml: {0}")]
pub struct ManifestError(pub String);

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub name: Option<String>,
    #[serde(default)]
    pub variables: BTreeMap<String, String>,
    #[serde(default)]
    pub functions: BTreeMap<String, FunctionSpec>,
    #[serde(default)]
    pub routes: Vec<RouteSpec>,
    #[serde(default)]
    pub crons: Vec<CronSpec>,
}

/// A cron trigger.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CronSpec {
    pub name: String,
    pub schedule: String,
    pub function: String,
    pub timezone: Option<String>,
    pub payload: Option<toml::Value>,
    #[serde(default)]
    pub overlap: Overlap,
    #[serde(default)]
    pub missed: Missed,
    #[serde(default)]
    pub retries: u32,
    #[serde(default = "default_backoff", with = "humantime_serde")]
    pub retry_backoff: std::time::Duration,
}

fn default_backoff() -> std::time::Duration {
    std::time::Duration::from_secs(1)
}

/// Most retries a trigger may ask for.
const MAX_RETRIES: u32 = 10;
/// Longest first retry backoff a trigger may ask for.
const MAX_RETRY_BACKOFF: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FunctionSpec {
    /// How `kiln build` builds it; inferred from `source` when absent.
    pub language: Option<Language>,
    /// A Rust crate folder or a JavaScript file, relative to `kiln.toml`.
    pub source: Option<String>,
    /// A prebuilt component, relative to `kiln.toml`; wins over `source`.
    pub component: Option<String>,
    #[serde(default)]
    pub limits: Limits,
    #[serde(default)]
    pub variables: BTreeMap<String, String>,
    #[serde(default)]
    pub allowed_outbound_hosts: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Language {
    Rust,
    Js,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteSpec {
    pub path: String,
    pub function: String,
    #[serde(default)]
    pub methods: Vec<String>,
}

impl Manifest {
    /// Parses and validates a manifest.
    pub fn parse(text: &str) -> Result<Self, ManifestError> {
        let manifest: Manifest = toml::from_str(text)
            .map_err(|e| ManifestError(e.to_string().trim().replace('\n', " ")))?;
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
        if self.functions.is_empty() {
            return err("functions".into(), "an app needs at least one function");
        }
        for name in self.variables.keys() {
            if !is_valid_name(name) {
                return err(format!("variables.{name}"), VARIABLE_RULE);
            }
        }
        for (name, function) in &self.functions {
            let field = format!("functions.{name}");
            if !is_valid_function_name(name) {
                return err(
                    field,
                    "a function name is 1 to 64 of a-z, 0-9, `-` or `_`, starting with a letter",
                );
            }
            if function.source.is_none() && function.component.is_none() {
                return err(field, "needs `source` (to build) or `component` (prebuilt)");
            }
            if let Err(msg) = function.limits.validate() {
                return err(format!("{field}.limits"), &msg);
            }
            for var in function.variables.keys() {
                if !is_valid_name(var) {
                    return err(format!("{field}.variables.{var}"), VARIABLE_RULE);
                }
            }
            for host in &function.allowed_outbound_hosts {
                if let Err(message) = OutboundEntry::parse(host) {
                    return err(format!("{field}.allowed_outbound_hosts"), &message);
                }
            }
        }
        for (i, route) in self.routes.iter().enumerate() {
            if !self.functions.contains_key(&route.function) {
                return err(
                    format!("routes[{i}].function"),
                    &format!("no function named `{}`", route.function),
                );
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
            if let Err(msg) =
                crate::triggers::cron::Schedule::parse(&cron.schedule, cron.timezone.as_deref())
            {
                return err(format!("{field} (`{}`)", cron.name), &msg);
            }
            if cron.retries > MAX_RETRIES {
                return err(
                    format!("{field}.retries"),
                    &format!("at most {MAX_RETRIES}"),
                );
            }
            if cron.retry_backoff > MAX_RETRY_BACKOFF {
                return err(format!("{field}.retry_backoff"), "at most 24h");
            }
        }
        Ok(())
    }

    /// The variables of `function`: the app's, overridden by the function's.
    pub fn variables_of(&self, function: &FunctionSpec) -> Vec<(String, String)> {
        let mut vars = self.variables.clone();
        vars.extend(function.variables.clone());
        vars.into_iter().collect()
    }
}

const APP_NAME_RULE: &str =
    "an app name is 1 to 63 of a-z, 0-9 or `-`, starting with a letter (it is a DNS label)";
const VARIABLE_RULE: &str =
    "a variable name is a letter or `_`, then letters, digits or `_`, at most 64 characters";

/// App names are DNS labels: the server routes `APP.example.com` to the app.
pub fn is_valid_app_name(name: &str) -> bool {
    name.len() <= 63
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
        assert_eq!(f.limits.timeout, std::time::Duration::from_secs(5));
        assert_eq!(f.limits.memory_mb, 64);
        assert_eq!(
            f.limits.max_request_body,
            Limits::default().max_request_body
        );
        assert_eq!(m.variables_of(f), vec![("greeting".into(), "Hi".into())]);
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
