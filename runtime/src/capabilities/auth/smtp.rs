//! Mail over SMTP (lettre), for apps that configure `auth.mail.smtp`
//! instead of a mail function. The server is the app's, named in its
//! manifest, so it gets the same address guard as identity providers, and
//! at most [`MAX_SENDING`] messages are in flight server-wide.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use lettre::message::header::ContentType;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use serde::Deserialize;
use tokio::sync::Semaphore;

use crate::capabilities::outbound::is_internal;

/// Messages being sent at once, server-wide; past it a message is dropped
/// (and logged): the user can ask again.
pub const MAX_SENDING: usize = 16;
/// Of those, most at once of one app.
pub const MAX_SENDING_PER_APP: usize = 4;
const TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SmtpTls {
    /// Plain, then STARTTLS, required (port 587).
    #[default]
    Starttls,
    /// TLS from the first byte (port 465).
    Tls,
    /// No TLS: only for a server on an allowed internal host.
    None,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmtpSettings {
    pub host: String,
    #[serde(default = "default_port")]
    pub port: u16,
    #[serde(default)]
    pub tls: SmtpTls,
    #[serde(default)]
    pub username: Option<String>,
    /// The app variable holding the password.
    #[serde(default)]
    pub password_variable: Option<String>,
    /// `Shop <no-reply@shop.example>`.
    pub from: String,
    #[serde(skip)]
    pub password: Option<String>,
}

fn default_port() -> u16 {
    587
}

impl SmtpSettings {
    pub fn check(
        &mut self,
        variables: &std::collections::BTreeMap<String, String>,
    ) -> Result<(), String> {
        if self.host.is_empty() || self.host.len() > 253 {
            return Err("host is a host name".into());
        }
        self.from
            .parse::<lettre::message::Mailbox>()
            .map_err(|e| format!("from: {e}"))?;
        if let Some(name) = &self.password_variable {
            self.password = Some(
                variables
                    .get(name)
                    .cloned()
                    .ok_or_else(|| format!("password_variable: no variable `{name}`"))?,
            );
        }
        Ok(())
    }
}

/// Sends mail for every app; one per server.
pub struct Mailer {
    sending: Arc<Semaphore>,
    per_app: std::sync::Mutex<std::collections::HashMap<String, Arc<Semaphore>>>,
    internal_hosts: Arc<[String]>,
}

impl Mailer {
    pub fn new(internal_hosts: Arc<[String]>) -> Self {
        Mailer {
            sending: Arc::new(Semaphore::new(MAX_SENDING)),
            per_app: Default::default(),
            internal_hosts,
        }
    }

    /// Sends in the background; the request that caused it does not wait.
    pub fn send(&self, app: &str, smtp: &SmtpSettings, to: &str, subject: String, body: String) {
        let app_slots = self
            .per_app
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(app.to_string())
            .or_insert_with(|| Arc::new(Semaphore::new(MAX_SENDING_PER_APP)))
            .clone();
        let permits = app_slots
            .try_acquire_owned()
            .and_then(|own| Ok((own, self.sending.clone().try_acquire_owned()?)));
        let Ok(permit) = permits else {
            tracing::warn!(
                app,
                "mail dropped: the app or the server has its most messages in flight"
            );
            return;
        };
        let (app, smtp, to) = (app.to_string(), smtp.clone(), to.to_string());
        let internal_hosts = self.internal_hosts.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let sent =
                tokio::time::timeout(TIMEOUT, deliver(&smtp, &internal_hosts, &to, subject, body))
                    .await;
            match sent {
                Ok(Ok(())) => tracing::info!(app, "mail sent over SMTP"),
                Ok(Err(err)) => tracing::warn!(app, "mail not sent: {err}"),
                Err(_) => {
                    tracing::warn!(app, "mail not sent: the SMTP server took over {TIMEOUT:?}")
                }
            }
        });
    }
}

async fn deliver(
    smtp: &SmtpSettings,
    internal_hosts: &[String],
    to: &str,
    subject: String,
    body: String,
) -> Result<(), String> {
    let host = smtp.host.to_ascii_lowercase();
    let allowed = internal_hosts.contains(&host);
    if smtp.tls == SmtpTls::None && !allowed {
        return Err("SMTP without TLS is only for an allowed internal host".into());
    }
    // Resolved and checked here; lettre then connects to that address.
    let address: SocketAddr = tokio::net::lookup_host((host.as_str(), smtp.port))
        .await
        .map_err(|e| format!("{host}: {e}"))?
        .find(|a| allowed || !is_internal(a.ip()))
        .ok_or_else(|| format!("{host} resolves to no public address"))?;
    let parameters = || TlsParameters::new(host.clone()).map_err(|e| e.to_string());
    let tls = match smtp.tls {
        SmtpTls::Starttls => Tls::Required(parameters()?),
        SmtpTls::Tls => Tls::Wrapper(parameters()?),
        SmtpTls::None => Tls::None,
    };
    let mut transport =
        AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(address.ip().to_string())
            .port(address.port())
            .tls(tls)
            .timeout(Some(TIMEOUT));
    if let (Some(user), Some(password)) = (&smtp.username, &smtp.password) {
        transport = transport.credentials(Credentials::new(user.clone(), password.clone()));
    }
    let message = Message::builder()
        .from(smtp.from.parse().map_err(|e| format!("from: {e}"))?)
        .to(to.parse().map_err(|e| format!("to: {e}"))?)
        .subject(subject)
        .header(ContentType::TEXT_PLAIN)
        .body(body)
        .map_err(|e| e.to_string())?;
    transport
        .build()
        .send(message)
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}
