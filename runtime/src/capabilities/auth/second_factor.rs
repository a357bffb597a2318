//! The TOTP second factor: enrolment, confirmation with recovery codes,
//! removal, and the step of a sign-in that needs it.

use serde_json::json;

use super::accounts::{Accounts, AuthError, Tokens, constant_time_eq, hash_secret};
use super::mfa;
use super::settings::AuthSettings;
use super::throttle::Wait;
use super::{Client, Identity};
use crate::store::platform::now_ms;
use crate::store::platform::sessions;
use crate::store::platform::users;

impl Accounts {
    /// Completes a sign-in that needs the second factor: the challenge from
    /// [`Self::sign_in`] (single use, for [`super::accounts::CHALLENGE_TTL`]) and a TOTP code
    /// or a recovery code. Failures count towards the account's throttling.
    pub async fn verify_second_factor(
        &self,
        app: &str,
        settings: &AuthSettings,
        challenge: &str,
        code: Option<&str>,
        recovery_code: Option<&str>,
        client: &Client,
    ) -> Result<Tokens, AuthError> {
        let refused = || {
            AuthError::NotAllowed(
                "the challenge is invalid or expired, or the code is wrong".into(),
            )
        };
        let Some((id, secret)) = challenge
            .split_once('.')
            .filter(|(id, s)| id.len() <= 64 && s.len() <= 64)
        else {
            return Err(refused());
        };
        let account = format!("mfa\n{id}");
        let address = client.address.clone();
        if let Err(Wait(wait)) = self.throttle.check(app, &account, &address) {
            return Err(AuthError::Throttled(wait));
        }
        let fail = || {
            self.throttle.failed(
                app,
                &account,
                &address,
                (
                    settings.throttle.account_failures,
                    settings.throttle.address_failures,
                ),
            );
            tracing::info!(app, user = id, "second factor refused");
            refused()
        };
        let hash = hash_secret(secret);
        let user = users::get(&self.documents, app, id).await?;
        let (Some(user), Some(totp)) = (user.as_ref(), user.as_ref().and_then(|u| u.totp.clone()))
        else {
            return Err(fail());
        };
        let live = user
            .mfa_challenge
            .as_ref()
            .is_some_and(|c| constant_time_eq(&c.hash, &hash) && c.expires_ms > now_ms());
        if !live || !totp.confirmed || user.disabled {
            return Err(fail());
        }
        let mut fields = json!({"mfa_challenge": null});
        if let Some(code) = code {
            let Some(step) = mfa::check(&totp.secret, code, totp.last_step) else {
                return Err(fail());
            };
            fields["totp.last_step"] = json!(step);
        } else if let Some(recovery) = recovery_code {
            let used = mfa::hash_recovery_code(recovery);
            if !totp.recovery.iter().any(|h| constant_time_eq(h, &used)) {
                return Err(fail());
            }
            let left: Vec<&String> = totp.recovery.iter().filter(|h| **h != used).collect();
            fields["totp.recovery"] = json!(left);
            tracing::info!(
                app,
                user = id,
                left = left.len(),
                "a recovery code was used"
            );
        } else {
            return Err(AuthError::InvalidInput(
                "send `code` or `recovery_code`".into(),
            ));
        }
        // The challenge and the code are used up together, once.
        let condition = json!({"mfa_challenge.hash": hash, "totp.last_step": totp.last_step});
        let Some(user) = users::set_if(&self.documents, app, id, condition, fields).await? else {
            return Err(fail());
        };
        self.throttle.succeeded(app, &account);
        self.start_session(app, settings, user, true, client).await
    }

    /// Starts TOTP enrolment: a new secret, not yet required at sign-in.
    pub async fn enroll_totp(
        &self,
        app: &str,
        identity: &Identity,
    ) -> Result<(String, String), AuthError> {
        let user = self.existing(app, &identity.user).await?;
        if user.mfa_enabled() {
            return Err(AuthError::NotAllowed(
                "a second factor is already enrolled; remove it first".into(),
            ));
        }
        let secret = mfa::new_secret();
        let account = user.email.clone().unwrap_or_else(|| user.id.clone());
        let url = mfa::otpauth_url(&secret, app, &account).ok_or_else(|| {
            AuthError::InvalidInput("cannot form an otpauth URL for this account".into())
        })?;
        users::set(
            &self.documents,
            app,
            &user.id,
            json!({"totp": {"secret": secret, "confirmed": false, "last_step": 0, "recovery": []}}),
        )
        .await?;
        Ok((secret, url))
    }

    /// Confirms enrolment with a code from the authenticator; returns the
    /// recovery codes (shown once). This session counts as having passed.
    pub async fn confirm_totp(
        &self,
        app: &str,
        identity: &Identity,
        code: &str,
    ) -> Result<Vec<String>, AuthError> {
        let user = self.existing(app, &identity.user).await?;
        let Some(totp) = user.totp.filter(|t| !t.confirmed) else {
            return Err(AuthError::NotAllowed(
                "no enrolment is pending: start one first".into(),
            ));
        };
        let Some(step) = mfa::check(&totp.secret, code, totp.last_step) else {
            return Err(AuthError::InvalidInput(
                "the code is wrong or expired".into(),
            ));
        };
        let (codes, hashes) = mfa::recovery_codes();
        let condition = json!({"totp.secret": totp.secret, "totp.confirmed": false});
        let fields =
            json!({"totp.confirmed": true, "totp.last_step": step, "totp.recovery": hashes});
        if users::set_if(&self.documents, app, &user.id, condition, fields)
            .await?
            .is_none()
        {
            return Err(AuthError::NotAllowed(
                "the enrolment changed meanwhile; start again".into(),
            ));
        }
        sessions::set(
            &self.documents,
            app,
            &identity.session,
            json!({"mfa": true}),
        )
        .await?;
        tracing::info!(app, user = %user.id, "TOTP enrolled");
        Ok(codes)
    }

    /// Removes the second factor; needs a session that passed it and a
    /// current code (or a recovery code).
    pub async fn remove_totp(
        &self,
        app: &str,
        identity: &Identity,
        code: &str,
    ) -> Result<(), AuthError> {
        if !identity.mfa {
            return Err(AuthError::NotAllowed(
                "sign in with the second factor first".into(),
            ));
        }
        let user = self.existing(app, &identity.user).await?;
        let Some(totp) = user.totp.filter(|t| t.confirmed) else {
            return Err(AuthError::NotAllowed("no second factor is enrolled".into()));
        };
        let recovery = mfa::hash_recovery_code(code);
        if mfa::check(&totp.secret, code, totp.last_step).is_none()
            && !totp.recovery.iter().any(|h| constant_time_eq(h, &recovery))
        {
            return Err(AuthError::InvalidInput(
                "the code is wrong or expired".into(),
            ));
        }
        users::set(
            &self.documents,
            app,
            &user.id,
            json!({"totp": null, "mfa_challenge": null}),
        )
        .await?;
        sessions::set_for_user(&self.documents, app, &user.id, json!({"mfa": false})).await?;
        tracing::info!(app, user = %user.id, "TOTP removed");
        Ok(())
    }
}
