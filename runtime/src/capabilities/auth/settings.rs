//! An app's `[auth]` section.
//!
//! ```toml
//! [auth]
//! access_token_ttl = "15m"       # 1m to 24h
//! refresh_token_ttl = "30d"      # how long an unused session lasts
//! min_password_length = 8        # 8 to 128
//! anonymous = false              # allow POST /_kiln/auth/anonymous
//! argon2 = { memory_kib = 19456, iterations = 2, parallelism = 1 }
//! throttle = { account_failures = 5, address_failures = 20 }
//! mail = { function = "mailer", link = "https://example.com/auth?kind={kind}&token={token}" }
//! ```

use std::time::Duration;

use serde::Deserialize;

use std::collections::BTreeMap;

use super::oidc::ProviderSettings;
use super::passwords::HashCost;
use super::smtp::SmtpSettings;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthSettings {
    #[serde(with = "humantime_serde")]
    pub access_token_ttl: Duration,
    #[serde(with = "humantime_serde")]
    pub refresh_token_ttl: Duration,
    pub min_password_length: usize,
    pub anonymous: bool,
    pub argon2: HashCost,
    pub throttle: ThrottleSettings,
    /// Who delivers verification and reset mail; none: those flows are off.
    pub mail: Option<MailSettings>,
    /// OpenID Connect providers by name (`[auth.providers.google]`).
    pub providers: BTreeMap<String, ProviderSettings>,
}

/// How mail goes out: as a one-off job of an app function, with the
/// payload `{kind, to, token, link}` (the function sends it its own way),
/// or over SMTP. Exactly one of the two.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MailSettings {
    #[serde(default)]
    pub function: Option<String>,
    #[serde(default)]
    pub smtp: Option<SmtpSettings>,
    /// The link put in the payload, with `{kind}` and `{token}` filled in.
    #[serde(default)]
    pub link: Option<String>,
}

/// Failures before sign-in attempts are delayed (the delay then doubles
/// with each further failure, up to [`super::throttle::MAX_DELAY`]).
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ThrottleSettings {
    /// Per email address.
    pub account_failures: u32,
    /// Per client IP address.
    pub address_failures: u32,
}

impl Default for ThrottleSettings {
    fn default() -> Self {
        ThrottleSettings {
            account_failures: 5,
            address_failures: 20,
        }
    }
}

impl Default for AuthSettings {
    fn default() -> Self {
        AuthSettings {
            access_token_ttl: Duration::from_secs(15 * 60),
            refresh_token_ttl: Duration::from_secs(30 * 24 * 3600),
            min_password_length: 8,
            anonymous: false,
            argon2: HashCost::default(),
            throttle: ThrottleSettings::default(),
            mail: None,
            providers: BTreeMap::new(),
        }
    }
}

/// Longest password accepted (argon2 takes any length; this bounds the work).
pub const MAX_PASSWORD_LENGTH: usize = 1024;

/// The longest access-token lifetime an app may set.
pub const MAX_ACCESS_TTL: Duration = Duration::from_secs(24 * 3600);

impl AuthSettings {
    /// Why the section is refused: the field and the reason. `functions`
    /// are the app's.
    pub fn check(
        &mut self,
        functions: &[std::sync::Arc<str>],
        variables: &BTreeMap<String, String>,
    ) -> Result<(), (String, String)> {
        let field = |f: &str, m: String| Err((format!("auth.{f}"), m));
        if self.access_token_ttl < Duration::from_secs(60) || self.access_token_ttl > MAX_ACCESS_TTL
        {
            return field("access_token_ttl", "is 1m to 24h".into());
        }
        if self.refresh_token_ttl < self.access_token_ttl
            || self.refresh_token_ttl > Duration::from_secs(400 * 24 * 3600)
        {
            return field(
                "refresh_token_ttl",
                "is at least access_token_ttl and at most 400d".into(),
            );
        }
        if !(8..=128).contains(&self.min_password_length) {
            return field("min_password_length", "is 8 to 128".into());
        }
        if let Err(m) = self.argon2.check() {
            return field("argon2", m);
        }
        if self.throttle.account_failures == 0 || self.throttle.address_failures == 0 {
            return field(
                "throttle",
                "failures before throttling are at least 1 (throttling cannot be switched off)"
                    .into(),
            );
        }
        for (name, provider) in &mut self.providers {
            let valid = !name.is_empty()
                && name.len() <= 32
                && name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
            if !valid {
                return field(
                    &format!("providers.{name}"),
                    "a provider name is 1 to 32 of a-z, 0-9, `-`".into(),
                );
            }
            provider
                .check(variables)
                .map_err(|m| (format!("auth.providers.{name}"), m))?;
        }
        if let Some(mail) = &mut self.mail {
            match (&mail.function, &mut mail.smtp) {
                (Some(function), None) => {
                    if !functions.iter().any(|f| **f == **function) {
                        return field("mail.function", format!("no function named `{function}`"));
                    }
                }
                (None, Some(smtp)) => smtp
                    .check(variables)
                    .map_err(|m| ("auth.mail.smtp".to_string(), m))?,
                _ => {
                    return field(
                        "mail",
                        "names either a `function` or an `smtp` server".into(),
                    );
                }
            }
            if let Some(link) = &mail.link
                && (!link.contains("{token}") || link.len() > 2048)
            {
                return field(
                    "mail.link",
                    "holds `{token}` and is at most 2048 bytes".into(),
                );
            }
        }
        Ok(())
    }
}
