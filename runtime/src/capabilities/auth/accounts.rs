//! Accounts, sessions and tokens of every app: what the platform endpoints,
//! the admin API, the route check and `kiln:platform/auth` all call, so a
//! rule holds the same way through each.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::Identity;
use super::fetch::Fetcher;
use super::hashing::Hashing;
use super::keys::KeyRings;
use super::mfa;
use super::oidc::{self, Oidc, OidcError, ProviderClaims, ProviderSettings};
use super::passwords::{self, HashCost};
use super::policy::is_valid_role;
use super::settings::{AuthSettings, MAX_PASSWORD_LENGTH};
use super::smtp::Mailer;
use super::throttle::{Throttle, Wait};
use super::tokens::{self, TokenError};
use super::verified::VerifiedTokens;
use crate::store::platform::identities::{self, IdentityRecord, StateRecord};
use crate::store::platform::jobs::{self, Job, JobStatus};
use crate::store::platform::now_ms;
use crate::store::platform::sessions::{self, SessionRecord};
use crate::store::platform::users::{self, ChallengeRecord, UserRecord};
use crate::store::query::{check_document, new_id};
use crate::store::{Documents, StoreError};

/// Largest profile (`data`) of a user, as JSON text.
pub const MAX_PROFILE_BYTES: usize = 16 * 1024;
/// Most roles of a user.
pub const MAX_ROLES: usize = 32;
const MAX_EMAIL_LEN: usize = 254;

/// Why an account call failed. The messages are for the client; detail
/// that should not reach it (which token check failed) is logged.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("{0}")]
    InvalidInput(String),
    #[error("the password is too weak: {0}")]
    WeakPassword(String),
    /// The same for an unknown email and a wrong password.
    #[error("the email or password is wrong")]
    InvalidCredentials,
    #[error("the access token is missing, expired or invalid")]
    InvalidToken,
    #[error("the refresh token is invalid, expired or was already used")]
    InvalidRefreshToken,
    #[error("too many failed attempts; try again in {} s", .0.as_secs().max(1))]
    Throttled(Duration),
    #[error("a user with this email exists already")]
    EmailTaken,
    #[error("this user is disabled")]
    Disabled,
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    NotAllowed(String),
    #[error("the server is busy hashing passwords; try again shortly")]
    Busy,
    #[error("the token is invalid, expired or already used")]
    InvalidOneTimeToken,
    #[error("the app has no identity provider `{0}`")]
    UnknownProvider(String),
    #[error("{0}")]
    InvalidIdToken(String),
    #[error("the identity provider is unavailable: {0}")]
    ProviderUnavailable(String),
    #[error(
        "a user with this email exists, and the provider does not say the email is verified: sign in with the password and link the provider from that account"
    )]
    ProviderEmailUnverified,
    #[error("this identity is linked to another user")]
    IdentityInUse,
    #[error("{0}")]
    Store(StoreError),
}

impl From<StoreError> for AuthError {
    fn from(err: StoreError) -> Self {
        AuthError::Store(err)
    }
}

impl From<super::hashing::Busy> for AuthError {
    fn from(_: super::hashing::Busy) -> Self {
        AuthError::Busy
    }
}

/// Who is asking, for sessions and throttling.
#[derive(Debug, Clone, Default)]
pub struct Client {
    /// The peer's IP address.
    pub address: String,
    /// The `User-Agent`, as sent.
    pub device: String,
}

/// What a sign-in yields.
#[derive(Debug)]
pub struct Tokens {
    pub access_token: String,
    pub expires_in: Duration,
    pub refresh_token: String,
    pub session: String,
    pub user: UserRecord,
}

impl Tokens {
    pub fn to_json(&self) -> Value {
        json!({
            "access_token": self.access_token,
            "token_type": "bearer",
            "expires_in": self.expires_in.as_secs(),
            "expires_at": now_ms() / 1000 + self.expires_in.as_secs(),
            "refresh_token": self.refresh_token,
            "session_id": self.session,
            "user": user_json(&self.user),
        })
    }
}

/// How long an email verification link works.
pub const VERIFICATION_TTL: Duration = Duration::from_secs(24 * 3600);
/// How long a password reset link works.
pub const RESET_TTL: Duration = Duration::from_secs(3600);

/// How long a sign-in's second-factor step may take.
pub const CHALLENGE_TTL: Duration = Duration::from_secs(5 * 60);

/// What a correct password yields.
#[derive(Debug)]
pub enum SignIn {
    Tokens(Box<Tokens>),
    /// The user has a second factor: [`Accounts::verify_second_factor`]
    /// with this challenge and a code yields the tokens.
    SecondFactor {
        challenge: String,
    },
}

impl SignIn {
    pub fn to_json(&self) -> Value {
        match self {
            SignIn::Tokens(tokens) => tokens.to_json(),
            SignIn::SecondFactor { challenge } => json!({
                "mfa_required": true,
                "challenge": challenge,
                "methods": ["totp", "recovery_code"],
                "expires_in": CHALLENGE_TTL.as_secs(),
            }),
        }
    }
}

/// A user as clients, admins and functions see it (never the hash).
pub fn user_json(user: &UserRecord) -> Value {
    json!({
        "id": user.id,
        "email": user.email,
        "email_verified": user.email_verified,
        "roles": user.roles,
        "data": user.data,
        "anonymous": user.anonymous,
        "disabled": user.disabled,
        "mfa_enabled": user.mfa_enabled(),
        "created_ms": user.created_ms,
        "updated_ms": user.updated_ms,
    })
}

/// A session as its user and admins see it (never the token hashes).
pub fn session_json(session: &SessionRecord, current: Option<&str>) -> Value {
    json!({
        "id": session.id,
        "user": session.user,
        "device": session.device,
        "address": session.address,
        "created_ms": session.created_ms,
        "last_used_ms": session.last_used_ms,
        "expires_ms": session.expires_ms,
        "mfa": session.mfa,
        "current": current == Some(session.id.as_str()),
    })
}

/// The accounts of every app on this server.
pub struct Accounts {
    documents: Documents,
    /// Tokens whose signature verified already.
    verified: VerifiedTokens,
    oidc: Oidc,
    mailer: Mailer,
    pub keys: KeyRings,
    hashing: Hashing,
    throttle: Throttle,
    /// A hash per cost, checked when the email is unknown so that answer
    /// takes as long as a wrong password.
    decoys: Mutex<HashMap<(u32, u32, u32), String>>,
}

impl Accounts {
    /// `internal_hosts`: hosts an app's identity provider or SMTP server may
    /// be at although they are internal (the operator's `--auth-internal-host`).
    pub fn new(documents: Documents, internal_hosts: Vec<String>) -> Self {
        let internal_hosts: std::sync::Arc<[String]> = internal_hosts
            .iter()
            .map(|h| h.to_ascii_lowercase())
            .collect();
        Accounts {
            verified: VerifiedTokens::default(),
            oidc: Oidc::new(Fetcher::new(internal_hosts.clone())),
            mailer: Mailer::new(internal_hosts),
            keys: KeyRings::new(documents.clone()),
            documents,
            hashing: Hashing::default(),
            throttle: Throttle::default(),
            decoys: Mutex::new(HashMap::new()),
        }
    }

    pub fn documents(&self) -> &Documents {
        &self.documents
    }

    /// Creates the indexes the platform records need (idempotent).
    pub async fn create_indexes(&self) -> Result<(), StoreError> {
        users::create_indexes(&self.documents).await?;
        identities::create_indexes(&self.documents).await?;
        sessions::create_indexes(&self.documents).await
    }

    // ---- Signing up and in --------------------------------------------

    pub async fn sign_up(
        &self,
        app: &str,
        settings: &AuthSettings,
        email: &str,
        password: &str,
        data: Option<Value>,
        client: &Client,
    ) -> Result<Tokens, AuthError> {
        let user = self
            .create_user(app, settings, email, password, data)
            .await?;
        if settings.mail.is_some()
            && let Err(err) = self.send_verification(app, settings, &user.id).await
        {
            tracing::warn!(app, user = %user.id, "the verification mail was not queued: {err}");
        }
        self.start_session(app, settings, user, false, client).await
    }

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
        let account = format!("{app}\nreset\n{email}");
        let address = format!("{app}\nreset\n{}", client.address);
        if let Err(Wait(wait)) = self.throttle.check(&account, &address) {
            return Err(AuthError::Throttled(wait));
        }
        self.throttle.failed(
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

    /// Creates a user with a password, signing nobody in.
    pub async fn create_user(
        &self,
        app: &str,
        settings: &AuthSettings,
        email: &str,
        password: &str,
        data: Option<Value>,
    ) -> Result<UserRecord, AuthError> {
        let email = normalize_email(email)?;
        check_password(password, settings)?;
        let data = check_profile(data.unwrap_or_else(|| json!({})))?;
        let mut user = users::new_record(app, new_id(), Some(email), data);
        user.password_hash = Some(
            self.hashing
                .hash(app, password.to_string(), settings.argon2)
                .await?,
        );
        match users::insert(&self.documents, &user).await {
            Err(StoreError::Conflict(_)) => Err(AuthError::EmailTaken),
            other => other.map(|()| user).map_err(AuthError::from),
        }
    }

    /// A new anonymous user and its session.
    pub async fn sign_in_anonymously(
        &self,
        app: &str,
        settings: &AuthSettings,
        data: Option<Value>,
        client: &Client,
    ) -> Result<Tokens, AuthError> {
        if !settings.anonymous {
            return Err(AuthError::NotAllowed(
                "anonymous sign-in is off for this app (auth.anonymous)".into(),
            ));
        }
        let data = check_profile(data.unwrap_or_else(|| json!({})))?;
        let user = users::new_record(app, new_id(), None, data);
        users::insert(&self.documents, &user).await?;
        self.start_session(app, settings, user, false, client).await
    }

    /// Gives an anonymous user an email and password; the id stays.
    pub async fn upgrade(
        &self,
        app: &str,
        settings: &AuthSettings,
        identity: &Identity,
        email: &str,
        password: &str,
    ) -> Result<UserRecord, AuthError> {
        let user = self.existing(app, &identity.user).await?;
        if !user.anonymous {
            return Err(AuthError::NotAllowed(
                "only an anonymous user can be upgraded".into(),
            ));
        }
        let email = normalize_email(email)?;
        check_password(password, settings)?;
        let hash = self
            .hashing
            .hash(app, password.to_string(), settings.argon2)
            .await?;
        let fields = json!({
            "email": email, "email_key": email, "password_hash": hash, "anonymous": false,
        });
        match users::set(&self.documents, app, &user.id, fields).await {
            Err(StoreError::Conflict(_)) => Err(AuthError::EmailTaken),
            Err(err) => Err(err.into()),
            Ok(None) => Err(AuthError::InvalidToken),
            Ok(Some(user)) => Ok(user),
        }
    }

    /// Checks an email and password. Unknown emails take as long and answer
    /// the same as wrong passwords, and both count towards throttling.
    pub async fn sign_in(
        &self,
        app: &str,
        settings: &AuthSettings,
        email: &str,
        password: &str,
        client: &Client,
    ) -> Result<SignIn, AuthError> {
        let email = normalize_email(email).map_err(|_| AuthError::InvalidCredentials)?;
        if password.len() > MAX_PASSWORD_LENGTH {
            return Err(AuthError::InvalidCredentials);
        }
        let account = format!("{app}\n{email}");
        let address = format!("{app}\n{}", client.address);
        if let Err(Wait(wait)) = self.throttle.check(&account, &address) {
            return Err(AuthError::Throttled(wait));
        }
        let user = users::by_email(&self.documents, app, &email).await?;
        let stored = match user.as_ref().and_then(|u| u.password_hash.clone()) {
            Some(hash) => hash,
            None => self.decoy(app, settings.argon2).await?,
        };
        let matches = self
            .hashing
            .verify(app, password.to_string(), stored.clone())
            .await?;
        let Some(user) = user.filter(|u| matches && u.password_hash.is_some()) else {
            self.throttle.failed(
                &account,
                &address,
                (
                    settings.throttle.account_failures,
                    settings.throttle.address_failures,
                ),
            );
            tracing::info!(app, address = %client.address, "sign-in failed");
            return Err(AuthError::InvalidCredentials);
        };
        self.throttle.succeeded(&account);
        let user = match passwords::needs_rehash(&stored, &settings.argon2) {
            true => self.rehash(app, settings, user, password).await?,
            false => user,
        };
        self.first_factor_passed(app, settings, user, client).await
    }

    /// After a password or a provider vouched for the user: tokens, or the
    /// second-factor challenge when the user has one.
    async fn first_factor_passed(
        &self,
        app: &str,
        settings: &AuthSettings,
        user: UserRecord,
        client: &Client,
    ) -> Result<SignIn, AuthError> {
        if user.disabled {
            return Err(AuthError::Disabled);
        }
        if user.mfa_enabled() {
            let (secret, hash) = refresh_secret();
            let expires_ms = now_ms() + CHALLENGE_TTL.as_millis() as u64;
            users::set(
                &self.documents,
                app,
                &user.id,
                json!({"mfa_challenge": {"hash": hash, "expires_ms": expires_ms}}),
            )
            .await?;
            return Ok(SignIn::SecondFactor {
                challenge: format!("{}.{secret}", user.id),
            });
        }
        self.start_session(app, settings, user, false, client)
            .await
            .map(|tokens| SignIn::Tokens(Box::new(tokens)))
    }

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

    /// Completes a sign-in that needs the second factor: the challenge from
    /// [`Self::sign_in`] (single use, for [`CHALLENGE_TTL`]) and a TOTP code
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
        let account = format!("{app}\nmfa\n{id}");
        let address = format!("{app}\n{}", client.address);
        if let Err(Wait(wait)) = self.throttle.check(&account, &address) {
            return Err(AuthError::Throttled(wait));
        }
        let fail = || {
            self.throttle.failed(
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
        self.throttle.succeeded(&account);
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

    async fn rehash(
        &self,
        app: &str,
        settings: &AuthSettings,
        user: UserRecord,
        password: &str,
    ) -> Result<UserRecord, AuthError> {
        let hash = self
            .hashing
            .hash(app, password.to_string(), settings.argon2)
            .await?;
        tracing::info!(app, user = %user.id, "password rehashed at the app's current cost");
        Ok(users::set(
            &self.documents,
            app,
            &user.id,
            json!({"password_hash": hash}),
        )
        .await?
        .unwrap_or(user))
    }

    async fn decoy(&self, app: &str, cost: HashCost) -> Result<String, AuthError> {
        let key = (cost.memory_kib, cost.iterations, cost.parallelism);
        if let Some(hash) = self
            .decoys
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
        {
            return Ok(hash.clone());
        }
        let secret = hex::encode(rand::random::<[u8; 16]>());
        let hash = self.hashing.hash(app, secret, cost).await?;
        self.decoys
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, hash.clone());
        Ok(hash)
    }

    /// Starts a session for `user` and signs its first tokens.
    async fn start_session(
        &self,
        app: &str,
        settings: &AuthSettings,
        user: UserRecord,
        mfa: bool,
        client: &Client,
    ) -> Result<Tokens, AuthError> {
        let now = now_ms();
        let (secret, hash) = refresh_secret();
        let session = SessionRecord {
            id: hex::encode(rand::random::<[u8; 16]>()),
            app: app.to_string(),
            user: user.id.clone(),
            roles: user.roles.clone(),
            mfa,
            refresh_hash: hash,
            rotated: Vec::new(),
            created_ms: now,
            last_used_ms: now,
            expires_ms: now + settings.refresh_token_ttl.as_millis() as u64,
            device: shorten(&client.device, 200),
            address: shorten(&client.address, 64),
        };
        sessions::insert(&self.documents, &session).await?;
        // A disable that raced this sign-in must win.
        if users::get(&self.documents, app, &user.id)
            .await?
            .is_none_or(|u| u.disabled)
        {
            sessions::delete(&self.documents, app, &session.id).await?;
            return Err(AuthError::Disabled);
        }
        self.tokens(app, settings, &session, secret, user).await
    }

    async fn tokens(
        &self,
        app: &str,
        settings: &AuthSettings,
        session: &SessionRecord,
        secret: String,
        user: UserRecord,
    ) -> Result<Tokens, AuthError> {
        let ring = self.keys.ring(app).await?;
        let key = ring
            .current()
            .ok_or_else(|| StoreError::Unavailable(format!("app `{app}` has no signing key")))?;
        let access_token = key
            .sign(
                app,
                &user.id,
                &session.id,
                session.mfa,
                settings.access_token_ttl,
            )
            .map_err(|e| StoreError::Unavailable(format!("signing a token: {e}")))?;
        Ok(Tokens {
            access_token,
            expires_in: settings.access_token_ttl,
            refresh_token: format!("{}.{secret}", session.id),
            session: session.id.clone(),
            user,
        })
    }

    /// Trades a refresh token for new tokens. The refresh token is rotated;
    /// presenting a rotated one again revokes the whole session.
    pub async fn refresh(
        &self,
        app: &str,
        settings: &AuthSettings,
        refresh_token: &str,
    ) -> Result<Tokens, AuthError> {
        let Some((sid, secret)) = refresh_token
            .split_once('.')
            .filter(|(sid, secret)| sid.len() == 32 && secret.len() <= 64)
        else {
            return Err(AuthError::InvalidRefreshToken);
        };
        let presented = hash_secret(secret);
        let Some(session) = sessions::get(&self.documents, app, sid).await? else {
            return Err(AuthError::InvalidRefreshToken);
        };
        if !constant_time_eq(&presented, &session.refresh_hash) {
            if session
                .rotated
                .iter()
                .any(|old| constant_time_eq(old, &presented))
            {
                sessions::delete(&self.documents, app, sid).await?;
                tracing::warn!(app, session = sid, user = %session.user,
                    "a rotated refresh token was used again: the session is revoked");
            }
            return Err(AuthError::InvalidRefreshToken);
        }
        let (new_secret, new_hash) = refresh_secret();
        let expires = now_ms() + settings.refresh_token_ttl.as_millis() as u64;
        let Some(session) = sessions::rotate(&self.documents, &session, &new_hash, expires).await?
        else {
            // Another refresh with the same token won the race: this one is a reuse.
            sessions::delete(&self.documents, app, sid).await?;
            tracing::warn!(
                app,
                session = sid,
                "a refresh token was used twice at once: the session is revoked"
            );
            return Err(AuthError::InvalidRefreshToken);
        };
        let user = self
            .existing(app, &session.user)
            .await
            .map_err(|_| AuthError::InvalidRefreshToken)?;
        if user.disabled {
            return Err(AuthError::InvalidRefreshToken);
        }
        self.tokens(app, settings, &session, new_secret, user).await
    }

    // ---- Every request --------------------------------------------------

    /// Verifies an access token and reads its session, so a revoked session
    /// or a disabled or deleted user is refused on the next request.
    pub async fn authenticate(&self, app: &str, token: &str) -> Result<Identity, AuthError> {
        let refused = |why: &dyn std::fmt::Display| {
            tracing::info!(app, "access token refused: {why}");
            AuthError::InvalidToken
        };
        let claims = match self.verified.get(app, token) {
            Some(claims) => claims,
            None => {
                let ring = self.keys.ring(app).await?;
                let claims = match tokens::verify(app, token, &ring.keys) {
                    Err(TokenError::UnknownKid(_)) => {
                        let ring = self.keys.reload(app).await?;
                        tokens::verify(app, token, &ring.keys)
                    }
                    other => other,
                }
                .map_err(|e| refused(&e))?;
                self.verified.insert(app, token, &claims);
                claims
            }
        };
        let Some(session) = sessions::get(&self.documents, app, &claims.sid).await? else {
            return Err(refused(&"its session is revoked or expired"));
        };
        if session.user != claims.sub {
            return Err(refused(&"its session belongs to another user"));
        }
        Ok(Identity {
            user: session.user,
            session: session.id,
            roles: session.roles,
            mfa: session.mfa,
        })
    }

    // ---- The signed-in user ---------------------------------------------

    pub async fn sign_out(
        &self,
        app: &str,
        identity: &Identity,
        everywhere: bool,
    ) -> Result<u64, AuthError> {
        Ok(match everywhere {
            true => sessions::delete_all(&self.documents, app, &identity.user).await?,
            false => sessions::delete(&self.documents, app, &identity.session).await? as u64,
        })
    }

    pub async fn change_password(
        &self,
        app: &str,
        settings: &AuthSettings,
        identity: &Identity,
        current: &str,
        new: &str,
    ) -> Result<(), AuthError> {
        let user = self.existing(app, &identity.user).await?;
        let Some(stored) = user.password_hash.clone() else {
            return Err(AuthError::NotAllowed(
                "this user has no password to change".into(),
            ));
        };
        if current.len() > MAX_PASSWORD_LENGTH
            || !self
                .hashing
                .verify(app, current.to_string(), stored)
                .await?
        {
            return Err(AuthError::InvalidCredentials);
        }
        check_password(new, settings)?;
        let hash = self
            .hashing
            .hash(app, new.to_string(), settings.argon2)
            .await?;
        users::set(
            &self.documents,
            app,
            &user.id,
            json!({"password_hash": hash}),
        )
        .await?;
        // Every other session signs in again with the new password.
        for session in sessions::of_user(&self.documents, app, &user.id).await? {
            if session.id != identity.session {
                sessions::delete(&self.documents, app, &session.id).await?;
            }
        }
        Ok(())
    }

    /// Deletes the caller's own account; a user with a password confirms it.
    pub async fn delete_own(
        &self,
        app: &str,
        identity: &Identity,
        password: Option<&str>,
    ) -> Result<(), AuthError> {
        let user = self.existing(app, &identity.user).await?;
        if let Some(stored) = user.password_hash.clone() {
            let password = password.unwrap_or_default();
            if password.len() > MAX_PASSWORD_LENGTH
                || !self
                    .hashing
                    .verify(app, password.to_string(), stored)
                    .await?
            {
                return Err(AuthError::InvalidCredentials);
            }
        }
        self.delete_user(app, &user.id).await
    }

    // ---- Users (the user themselves, admins, functions) -----------------

    pub async fn user(&self, app: &str, id: &str) -> Result<Option<UserRecord>, AuthError> {
        Ok(users::get(&self.documents, app, id).await?)
    }

    pub async fn user_by_email(
        &self,
        app: &str,
        email: &str,
    ) -> Result<Option<UserRecord>, AuthError> {
        let email = normalize_email(email)?;
        Ok(users::by_email(&self.documents, app, &email).await?)
    }

    pub async fn list_users(
        &self,
        app: &str,
        after: Option<&str>,
        email_prefix: Option<&str>,
        limit: u64,
    ) -> Result<Vec<UserRecord>, AuthError> {
        let prefix = email_prefix.map(str::to_lowercase);
        Ok(users::list(
            &self.documents,
            app,
            after,
            prefix.as_deref(),
            limit.clamp(1, 100),
        )
        .await?)
    }

    async fn existing(&self, app: &str, id: &str) -> Result<UserRecord, AuthError> {
        users::get(&self.documents, app, id)
            .await?
            .ok_or_else(|| AuthError::NotFound(format!("no user `{}`", id.escape_debug())))
    }

    async fn set(&self, app: &str, id: &str, fields: Value) -> Result<UserRecord, AuthError> {
        users::set(&self.documents, app, id, fields)
            .await?
            .ok_or_else(|| AuthError::NotFound(format!("no user `{}`", id.escape_debug())))
    }

    pub async fn update_data(
        &self,
        app: &str,
        id: &str,
        data: Value,
    ) -> Result<UserRecord, AuthError> {
        let data = check_profile(data)?;
        self.set(app, id, json!({"data": data})).await
    }

    pub async fn set_roles(
        &self,
        app: &str,
        id: &str,
        roles: Vec<String>,
    ) -> Result<UserRecord, AuthError> {
        if roles.len() > MAX_ROLES {
            return Err(AuthError::InvalidInput(format!(
                "a user has at most {MAX_ROLES} roles"
            )));
        }
        if let Some(bad) = roles.iter().find(|r| !is_valid_role(r)) {
            return Err(AuthError::InvalidInput(format!(
                "`{}` is not a role: 1 to 64 of a-z, A-Z, 0-9, `_`, `-`, `.`, `:`",
                bad.escape_debug()
            )));
        }
        let mut roles = roles;
        roles.sort();
        roles.dedup();
        let user = self.set(app, id, json!({"roles": roles})).await?;
        sessions::set_for_user(&self.documents, app, id, json!({"roles": user.roles})).await?;
        Ok(user)
    }

    /// Disabling also revokes every session, so it takes effect at once.
    pub async fn set_disabled(
        &self,
        app: &str,
        id: &str,
        disabled: bool,
    ) -> Result<UserRecord, AuthError> {
        let user = self.set(app, id, json!({"disabled": disabled})).await?;
        if disabled {
            sessions::delete_all(&self.documents, app, id).await?;
            tracing::info!(app, user = id, "user disabled; every session revoked");
        }
        Ok(user)
    }

    pub async fn delete_user(&self, app: &str, id: &str) -> Result<(), AuthError> {
        if !users::delete(&self.documents, app, id).await? {
            return Err(AuthError::NotFound(format!(
                "no user `{}`",
                id.escape_debug()
            )));
        }
        sessions::delete_all(&self.documents, app, id).await?;
        identities::delete_of_user(&self.documents, app, id).await?;
        tracing::info!(app, user = id, "user deleted");
        Ok(())
    }

    pub async fn sessions(&self, app: &str, user: &str) -> Result<Vec<SessionRecord>, AuthError> {
        Ok(sessions::of_user(&self.documents, app, user).await?)
    }

    /// Revokes one session of `user`.
    pub async fn revoke_session(&self, app: &str, user: &str, id: &str) -> Result<(), AuthError> {
        match sessions::delete_of_user(&self.documents, app, user, id).await? {
            true => Ok(()),
            false => Err(AuthError::NotFound(format!(
                "no session `{}`",
                id.escape_debug()
            ))),
        }
    }

    pub async fn revoke_sessions(&self, app: &str, user: &str) -> Result<u64, AuthError> {
        Ok(sessions::delete_all(&self.documents, app, user).await?)
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

/// Lower-cases and checks an email address: one `@`, something on each
/// side, no spaces or control characters, at most 254 bytes.
pub fn normalize_email(email: &str) -> Result<String, AuthError> {
    let email = email.trim().to_lowercase();
    let valid = email.len() <= MAX_EMAIL_LEN
        && email.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty() && !domain.is_empty() && !domain.contains('@')
        })
        && !email.chars().any(|c| c.is_whitespace() || c.is_control());
    match valid {
        true => Ok(email),
        false => Err(AuthError::InvalidInput(
            "`email` is not an email address".into(),
        )),
    }
}

fn check_password(password: &str, settings: &AuthSettings) -> Result<(), AuthError> {
    let chars = password.chars().count();
    if chars < settings.min_password_length {
        return Err(AuthError::WeakPassword(format!(
            "use at least {} characters",
            settings.min_password_length
        )));
    }
    if password.len() > MAX_PASSWORD_LENGTH {
        return Err(AuthError::WeakPassword(format!(
            "use at most {MAX_PASSWORD_LENGTH} bytes"
        )));
    }
    Ok(())
}

fn check_profile(data: Value) -> Result<Value, AuthError> {
    if !data.is_object() {
        return Err(AuthError::InvalidInput("`data` is a JSON object".into()));
    }
    if data.to_string().len() > MAX_PROFILE_BYTES {
        return Err(AuthError::InvalidInput(format!(
            "`data` is over {MAX_PROFILE_BYTES} bytes"
        )));
    }
    check_document(&data).map_err(|e| AuthError::InvalidInput(format!("`data`: {e}")))?;
    Ok(data)
}

/// A new refresh secret and its stored hash.
fn refresh_secret() -> (String, String) {
    let secret = URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>());
    let hash = hash_secret(&secret);
    (secret, hash)
}

fn hash_secret(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

fn constant_time_eq(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

fn shorten(text: &str, max: usize) -> String {
    text.chars().take(max).collect()
}
