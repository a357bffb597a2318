//! Signing in through an OpenID Connect provider: the native id_token, the
//! code flow, and the rule that links a provider's identity to a user.

use serde_json::json;

use super::accounts::{Accounts, AuthError, SignIn, normalize_email};
use super::oidc::{self, OidcError, ProviderClaims, ProviderSettings};
use super::settings::AuthSettings;
use super::{Client, Identity};
use crate::store::StoreError;
use crate::store::platform::identities::{self, IdentityRecord, StateRecord};
use crate::store::platform::now_ms;
use crate::store::platform::users;
use crate::store::query::new_id;

impl Accounts {
    // ---- OpenID Connect ---------------------------------------------------

    fn provider<'s>(
        &self,
        settings: &'s AuthSettings,
        name: &str,
    ) -> Result<&'s ProviderSettings, AuthError> {
        settings
            .providers
            .get(name)
            .ok_or_else(|| AuthError::UnknownProvider(name.escape_debug().to_string()))
    }

    /// Native sign-in: an id_token the provider's SDK gave the app, and the
    /// nonce the app passed to that SDK. With `caller`, the identity is
    /// linked to the signed-in user instead.
    #[allow(clippy::too_many_arguments)]
    pub async fn sign_in_with_id_token(
        &self,
        app: &str,
        settings: &AuthSettings,
        provider_name: &str,
        id_token: &str,
        nonce: &str,
        caller: Option<&Identity>,
        client: &Client,
    ) -> Result<SignIn, AuthError> {
        let provider = self.provider(settings, provider_name)?;
        let claims = self
            .oidc
            .verify(provider, id_token, nonce)
            .await
            .map_err(|e| self.provider_error(app, provider_name, e))?;
        self.provider_vouched(app, settings, provider_name, claims, caller, client)
            .await
    }

    fn provider_error(&self, app: &str, provider: &str, err: OidcError) -> AuthError {
        tracing::info!(app, provider, "provider sign-in refused: {err}");
        match err {
            OidcError::Unreachable(e) => AuthError::ProviderUnavailable(e.to_string()),
            OidcError::Refused(m) => {
                AuthError::InvalidIdToken(format!("the id_token is refused: {m}"))
            }
        }
    }

    /// Starts a code-flow sign-in: the provider URL to send the browser to.
    pub async fn start_code_flow(
        &self,
        app: &str,
        settings: &AuthSettings,
        provider_name: &str,
        redirect_to: Option<&str>,
    ) -> Result<String, AuthError> {
        let provider = self.provider(settings, provider_name)?;
        if provider.redirect_uri.is_none() {
            return Err(AuthError::NotAllowed(format!(
                "provider `{provider_name}` has no redirect_uri, so it only takes id_tokens"
            )));
        }
        if let Some(to) = redirect_to
            && !provider.redirect_urls.iter().any(|u| u == to)
        {
            return Err(AuthError::InvalidInput(format!(
                "redirect_to `{}` is not one of the provider's redirect_urls",
                to.escape_debug()
            )));
        }
        let (state, nonce, verifier) = (
            oidc::random_token(),
            oidc::random_token(),
            oidc::random_token(),
        );
        let url = self
            .oidc
            .authorization_url(provider, &state, &nonce, &verifier)
            .await
            .map_err(|e| self.provider_error(app, provider_name, e))?;
        identities::insert_state(
            &self.documents,
            &StateRecord {
                id: identities::state_id(&state),
                app: app.to_string(),
                provider: provider_name.to_string(),
                nonce,
                code_verifier: verifier,
                redirect_to: redirect_to.map(str::to_string),
                expires_ms: now_ms() + 10 * 60 * 1000,
            },
        )
        .await?;
        Ok(url)
    }

    /// The provider's callback: the state (used once, within 10 minutes)
    /// and the code, traded for a verified id_token.
    pub async fn finish_code_flow(
        &self,
        app: &str,
        settings: &AuthSettings,
        provider_name: &str,
        state: &str,
        code: &str,
        client: &Client,
    ) -> Result<(SignIn, Option<String>), AuthError> {
        let provider = self.provider(settings, provider_name)?;
        let Some(flow) = identities::take_state(&self.documents, app, state)
            .await?
            .filter(|f| f.provider == provider_name && f.expires_ms > now_ms())
        else {
            tracing::info!(
                app,
                provider = provider_name,
                "a code-flow callback with an unknown, used or expired state"
            );
            return Err(AuthError::InvalidIdToken(
                "the sign-in state is unknown, used or expired; start again".into(),
            ));
        };
        let claims = self
            .oidc
            .exchange(provider, code, &flow.code_verifier, &flow.nonce)
            .await
            .map_err(|e| self.provider_error(app, provider_name, e))?;
        let signed_in = self
            .provider_vouched(app, settings, provider_name, claims, None, client)
            .await?;
        Ok((signed_in, flow.redirect_to))
    }

    /// A provider vouched for `claims`: sign in its linked user; link it to
    /// the caller; link it to the user with its email only when the
    /// provider says the email is verified; or create a user.
    async fn provider_vouched(
        &self,
        app: &str,
        settings: &AuthSettings,
        provider: &str,
        claims: ProviderClaims,
        caller: Option<&Identity>,
        client: &Client,
    ) -> Result<SignIn, AuthError> {
        let email = claims
            .email
            .as_deref()
            .and_then(|e| normalize_email(e).ok());
        let link = |user: &str| IdentityRecord {
            id: identities::identity_id(app, provider, &claims.subject),
            app: app.to_string(),
            provider: provider.to_string(),
            subject: claims.subject.clone(),
            user: user.to_string(),
            email: email.clone(),
            created_ms: now_ms(),
        };
        let linked = identities::get(&self.documents, app, provider, &claims.subject).await?;
        if let Some(caller) = caller {
            match linked {
                Some(identity) if identity.user != caller.user => {
                    return Err(AuthError::IdentityInUse);
                }
                Some(_) => {}
                None => identities::insert(&self.documents, &link(&caller.user)).await?,
            }
            tracing::info!(app, provider, user = %caller.user, "identity linked");
            let user = self.existing(app, &caller.user).await?;
            return self.first_factor_passed(app, settings, user, client).await;
        }
        if let Some(identity) = linked {
            let user = self.existing(app, &identity.user).await.map_err(|_| {
                AuthError::InvalidIdToken("the linked user no longer exists".into())
            })?;
            return self.first_factor_passed(app, settings, user, client).await;
        }
        if let Some(email) = &email
            && let Some(user) = users::by_email(&self.documents, app, email).await?
        {
            if !claims.email_verified {
                tracing::warn!(app, provider, user = %user.id, "provider sign-in refused: its email matches a user but is not verified by the provider");
                return Err(AuthError::ProviderEmailUnverified);
            }
            identities::insert(&self.documents, &link(&user.id)).await?;
            tracing::info!(app, provider, user = %user.id, "identity linked by its verified email");
            return self.first_factor_passed(app, settings, user, client).await;
        }
        // A new user; an unverified email is not claimed for it.
        let verified_email = email.clone().filter(|_| claims.email_verified);
        let mut user = users::new_record(app, new_id(), verified_email.clone(), json!({}));
        user.anonymous = false;
        user.email_verified = verified_email.is_some();
        match users::insert(&self.documents, &user).await {
            Err(StoreError::Conflict(_)) => return Err(AuthError::EmailTaken),
            other => other?,
        }
        if let Err(err) = identities::insert(&self.documents, &link(&user.id)).await {
            users::delete(&self.documents, app, &user.id).await?;
            return Err(err.into());
        }
        tracing::info!(app, provider, user = %user.id, "user created from a provider sign-in");
        self.first_factor_passed(app, settings, user, client).await
    }
}
