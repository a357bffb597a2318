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
use super::oidc::Oidc;
use super::passwords::{self, HashCost};
use super::settings::{AuthSettings, MAX_PASSWORD_LENGTH};
use super::smtp::Mailer;
use super::throttle::{Throttle, Wait};
use super::tokens::{self, TokenError};
use super::verified::VerifiedTokens;
use crate::access::is_valid_role;
use crate::store::platform::identities::{self};
use crate::store::platform::now_ms;
use crate::store::platform::sessions::{self, LiveSessions, SessionRecord};
use crate::store::platform::users::{self, UserRecord};
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

impl From<crate::capabilities::turns::Busy> for AuthError {
    fn from(_: crate::capabilities::turns::Busy) -> Self {
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
    pub(super) documents: Documents,
    /// Tokens whose signature verified already.
    verified: VerifiedTokens,
    /// Sessions the per-request check read, while unchanged in the store.
    live: LiveSessions,
    pub(super) oidc: Oidc,
    pub(super) mailer: Mailer,
    pub keys: KeyRings,
    pub(super) hashing: Hashing,
    pub(super) throttle: Throttle,
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
            live: LiveSessions::default(),
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
        let account = email.clone();
        let address = client.address.clone();
        if let Err(Wait(wait)) = self.throttle.check(app, &account, &address) {
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
                app,
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
        self.throttle.succeeded(app, &account);
        let user = match passwords::needs_rehash(&stored, &settings.argon2) {
            true => self.rehash(app, settings, user, password).await?,
            false => user,
        };
        self.first_factor_passed(app, settings, user, client).await
    }

    /// After a password or a provider vouched for the user: tokens, or the
    /// second-factor challenge when the user has one.
    pub(super) async fn first_factor_passed(
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
    pub(super) async fn start_session(
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
        let Some(session) = self.live.get(&self.documents, app, &claims.sid).await? else {
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
        self.confirm_password(app, current, stored).await?;
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
        sessions::delete_others(&self.documents, app, &user.id, &identity.session).await?;
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
            self.confirm_password(app, password.unwrap_or_default(), stored)
                .await?;
        }
        self.delete_user(app, &user.id).await
    }

    /// A signed-in user's password, given again to confirm a change.
    async fn confirm_password(
        &self,
        app: &str,
        password: &str,
        stored: String,
    ) -> Result<(), AuthError> {
        let matches = password.len() <= MAX_PASSWORD_LENGTH
            && self
                .hashing
                .verify(app, password.to_string(), stored)
                .await?;
        match matches {
            true => Ok(()),
            false => Err(AuthError::InvalidCredentials),
        }
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

    pub(super) async fn existing(&self, app: &str, id: &str) -> Result<UserRecord, AuthError> {
        users::get(&self.documents, app, id)
            .await?
            .ok_or_else(|| AuthError::NotFound(format!("no user `{}`", id.escape_debug())))
    }

    pub(super) async fn set(
        &self,
        app: &str,
        id: &str,
        fields: Value,
    ) -> Result<UserRecord, AuthError> {
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

/// Checks an email address and gives the one form uniqueness is decided on:
/// lower case, and the domain as DNS sees it (no trailing dot, IDNA's ASCII
/// form), so `A@Example.COM.` and `a@xn--bcher-kva.example` are the
/// addresses `a@example.com` and `a@bücher.example` already taken. One `@`,
/// something on each side, no spaces or control characters, at most 254
/// bytes.
pub fn normalize_email(email: &str) -> Result<String, AuthError> {
    let invalid = || AuthError::InvalidInput("`email` is not an email address".into());
    let email = email.trim();
    // Checked before IDNA's work, which is linear but not free.
    if email.len() > MAX_EMAIL_LEN * 4 {
        return Err(invalid());
    }
    let (local, domain) = email.split_once('@').ok_or_else(invalid)?;
    let domain = domain.strip_suffix('.').unwrap_or(domain);
    if local.is_empty() || domain.is_empty() || domain.contains('@') {
        return Err(invalid());
    }
    let domain = idna::domain_to_ascii(domain).map_err(|_| invalid())?;
    let email = format!("{}@{domain}", local.to_lowercase());
    let valid = email.len() <= MAX_EMAIL_LEN
        && !domain.is_empty()
        && !domain.ends_with('.')
        && !email.chars().any(|c| c.is_whitespace() || c.is_control());
    match valid {
        true => Ok(email),
        false => Err(invalid()),
    }
}

pub(super) fn check_password(password: &str, settings: &AuthSettings) -> Result<(), AuthError> {
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
pub(super) fn refresh_secret() -> (String, String) {
    let secret = URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>());
    let hash = hash_secret(&secret);
    (secret, hash)
}

pub(super) fn hash_secret(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

pub(super) fn constant_time_eq(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

fn shorten(text: &str, max: usize) -> String {
    text.chars().take(max).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_differing_only_in_case_a_trailing_dot_or_idna_form_are_one_address() {
        let one = normalize_email("Ada@Example.COM").unwrap();
        assert_eq!(one, "ada@example.com");
        assert_eq!(normalize_email(" ada@example.com. ").unwrap(), one);
        assert_eq!(
            normalize_email("ada@Bücher.example").unwrap(),
            normalize_email("ada@xn--bcher-kva.example").unwrap()
        );
        for bad in [
            "ada@",
            "ada@.",
            "@example.com",
            "ada@example.com..",
            "a@b@c",
            "a b@example.com",
        ] {
            assert!(normalize_email(bad).is_err(), "{bad}");
        }
        assert!(normalize_email(&format!("{}@example.com", "a".repeat(300))).is_err());
    }
}
