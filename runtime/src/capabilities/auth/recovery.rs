//! Email verification and password reset: single-use, expiring tokens
//! stored hashed on the user, delivered by the app's mail function or SMTP.

use std::time::Duration;

use serde_json::{Value, json};

use super::Client;
use super::accounts::{
    Accounts, AuthError, RESET_TTL, VERIFICATION_TTL, check_password, constant_time_eq,
    hash_secret, normalize_email, refresh_secret,
};
use super::settings::AuthSettings;
use super::throttle::Wait;
use crate::store::platform::jobs::{self, Job, JobStatus};
use crate::store::platform::now_ms;
use crate::store::platform::sessions;
use crate::store::platform::users::{self, ChallengeRecord, UserRecord};
use crate::store::query::new_id;

impl Accounts {
    // ---- Mail: email verification and password reset ---------------------

    /// Queues the mail job: `{kind, to, token, link}` for the app's mail function.
    async fn mail(
        &self,
        app: &str,
        settings: &AuthSettings,
        kind: &str,
        to: &str,
        token: &str,
    ) -> Result<(), AuthError> {
        let Some(mail) = &settings.mail else {
            return Err(AuthError::NotAllowed(
                "this app sends no mail (auth.mail is not set)".into(),
            ));
        };
        let link = mail
            .link
            .as_ref()
            .map(|l| l.replace("{kind}", kind).replace("{token}", token));
        if let Some(smtp) = &mail.smtp {
            let (subject, body) = mail_text(app, kind, token, link.as_deref());
            self.mailer.send(app, smtp, to, subject, body);
            return Ok(());
        }
        let Some(function) = &mail.function else {
            return Err(AuthError::NotAllowed(
                "auth.mail names no function or SMTP server".into(),
            ));
        };
        let now = now_ms();
        let job = Job {
            id: new_id(),
            app: app.to_string(),
            function: function.clone(),
            due_ms: now,
            payload: json!({"kind": kind, "to": to, "token": token, "link": link}).to_string(),
            status: JobStatus::Pending,
            created_ms: now,
            created_by: format!("auth:{kind}"),
            node: None,
            started_ms: None,
            ended_ms: None,
            error: None,
            hook: None,
        };
        jobs::insert(&self.documents, &job).await?;
        Ok(())
    }

    /// A one-time token for `field` of the user (`<user>.<secret>`), stored hashed.
    async fn one_time_token(
        &self,
        app: &str,
        user: &str,
        field: &str,
        ttl: Duration,
    ) -> Result<String, AuthError> {
        let (secret, hash) = refresh_secret();
        let expires_ms = now_ms() + ttl.as_millis() as u64;
        let mut fields = json!({});
        fields[field] = json!({"hash": hash, "expires_ms": expires_ms});
        users::set(&self.documents, app, user, fields).await?;
        Ok(format!("{user}.{secret}"))
    }

    /// Uses up a one-time token of `field`, applying `fields` to its user in
    /// the same write; the user after, or [`AuthError::InvalidOneTimeToken`].
    async fn redeem(
        &self,
        app: &str,
        token: &str,
        field: &str,
        current: impl Fn(&UserRecord) -> Option<&ChallengeRecord>,
        mut fields: Value,
    ) -> Result<UserRecord, AuthError> {
        let Some((id, secret)) = token
            .split_once('.')
            .filter(|(id, s)| id.len() <= 64 && s.len() <= 64)
        else {
            return Err(AuthError::InvalidOneTimeToken);
        };
        let hash = hash_secret(secret);
        let user = users::get(&self.documents, app, id)
            .await?
            .ok_or(AuthError::InvalidOneTimeToken)?;
        let live = current(&user)
            .is_some_and(|c| constant_time_eq(&c.hash, &hash) && c.expires_ms > now_ms());
        if !live {
            tracing::info!(
                app,
                user = id,
                "a {field} token was refused (wrong, expired or used)"
            );
            return Err(AuthError::InvalidOneTimeToken);
        }
        fields[field] = Value::Null;
        let mut condition = json!({});
        condition[format!("{field}.hash")] = json!(hash);
        users::set_if(&self.documents, app, id, condition, fields)
            .await?
            .ok_or(AuthError::InvalidOneTimeToken)
    }

    /// Mails the user a link that verifies their email.
    pub async fn send_verification(
        &self,
        app: &str,
        settings: &AuthSettings,
        id: &str,
    ) -> Result<(), AuthError> {
        let user = self.existing(app, id).await?;
        let Some(email) = user.email.clone() else {
            return Err(AuthError::NotAllowed(
                "an anonymous user has no email to verify".into(),
            ));
        };
        if user.email_verified {
            return Err(AuthError::NotAllowed(
                "the email is verified already".into(),
            ));
        }
        if settings.mail.is_none() {
            return Err(AuthError::NotAllowed(
                "this app sends no mail (auth.mail is not set)".into(),
            ));
        }
        let token = self
            .one_time_token(app, id, "email_verification", VERIFICATION_TTL)
            .await?;
        self.mail(app, settings, "verify_email", &email, &token)
            .await
    }

    pub async fn verify_email(&self, app: &str, token: &str) -> Result<UserRecord, AuthError> {
        let user = self
            .redeem(
                app,
                token,
                "email_verification",
                |u| u.email_verification.as_ref(),
                json!({"email_verified": true}),
            )
            .await?;
        tracing::info!(app, user = %user.id, "email verified");
        Ok(user)
    }

    /// Mails a reset link if the email belongs to a user; answers the same
    /// either way, and is throttled like a failed sign-in.
    pub async fn request_reset(
        &self,
        app: &str,
        settings: &AuthSettings,
        email: &str,
        client: &Client,
    ) -> Result<(), AuthError> {
        if settings.mail.is_none() {
            return Err(AuthError::NotAllowed(
                "this app sends no mail (auth.mail is not set)".into(),
            ));
        }
        let email = normalize_email(email)?;
        let account = format!("reset\n{email}");
        let address = format!("reset\n{}", client.address);
        if let Err(Wait(wait)) = self.throttle.check(app, &account, &address) {
            return Err(AuthError::Throttled(wait));
        }
        self.throttle.failed(
            app,
            &account,
            &address,
            (
                settings.throttle.account_failures,
                settings.throttle.address_failures,
            ),
        );
        if let Some(user) = users::by_email(&self.documents, app, &email)
            .await?
            .filter(|u| !u.disabled)
        {
            let token = self
                .one_time_token(app, &user.id, "password_reset", RESET_TTL)
                .await?;
            self.mail(app, settings, "reset_password", &email, &token)
                .await?;
        }
        Ok(())
    }

    /// Sets a new password with a reset token; every session ends. The link
    /// reached the user's mailbox, so the email counts as verified too.
    pub async fn reset_password(
        &self,
        app: &str,
        settings: &AuthSettings,
        token: &str,
        password: &str,
    ) -> Result<(), AuthError> {
        check_password(password, settings)?;
        let hash = self
            .hashing
            .hash(app, password.to_string(), settings.argon2)
            .await?;
        let user = self
            .redeem(
                app,
                token,
                "password_reset",
                |u| u.password_reset.as_ref(),
                json!({"password_hash": hash, "email_verified": true}),
            )
            .await?;
        let revoked = sessions::delete_all(&self.documents, app, &user.id).await?;
        tracing::info!(app, user = %user.id, revoked, "password reset; every session ended");
        Ok(())
    }
}

/// The subject and plain-text body of a message sent over SMTP.
fn mail_text(app: &str, kind: &str, token: &str, link: Option<&str>) -> (String, String) {
    let (subject, what, hours) = match kind {
        "verify_email" => (
            format!("Verify your email for {app}"),
            "verify your email address",
            24,
        ),
        _ => (
            format!("Reset your {app} password"),
            "choose a new password",
            1,
        ),
    };
    let open = match link {
        Some(link) => format!("Open this link to {what}:\n\n{link}\n\nor use this code: {token}"),
        None => format!("Use this code to {what}: {token}"),
    };
    let body = format!(
        "{open}\n\nIt works once, for {hours} hour(s). If you did not ask for it, ignore this message.\n"
    );
    (subject, body)
}
