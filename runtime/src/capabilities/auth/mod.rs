//! `kiln:platform/auth`: the app's users, sessions and tokens.
//!
//! [`Accounts`] is the one implementation every way in uses: the platform
//! endpoints (`/_kiln/auth/...`), the admin API, the HTTP trigger's route
//! check and this capability's WIT interface. Manifest: the app's `[auth]`
//! table ([`settings`]) and each route's `auth` rule ([`crate::access`]).

pub mod accounts;
mod fetch;
mod hashing;
pub mod keys;
pub mod mfa;
pub mod oidc;
pub mod passwords;
mod recovery;
mod second_factor;
pub mod settings;
mod smtp;
mod social;
pub mod throttle;
pub mod tokens;
mod verified;

use std::sync::Arc;

use serde_json::Value;
use wasmtime::component::{HasSelf, Linker};
use wasmtime_wasi::WasiCtxBuilder;

pub use self::accounts::{Accounts, AuthError, Client, SignIn, Tokens};
pub use self::settings::AuthSettings;
use super::bindings::kiln::platform::auth::{self as wit, Error, Host, User};
use super::{
    AppManifest, Backends, Capability, CapabilityView, ConfigureError, FunctionManifest, Instances,
    Invocation, Pick, instance,
};
pub use crate::access::{Identity, Refusal};
use crate::store::platform::users::UserRecord;

/// The app's `[auth]` section, checked against the app's functions.
fn app_settings(
    app_section: &toml::Table,
    functions: &[Arc<str>],
) -> Result<AuthSettings, ConfigureError> {
    let mut settings: AuthSettings = match app_section.get("auth") {
        None => AuthSettings::default(),
        Some(value) => value
            .clone()
            .try_into()
            .map_err(|e: toml::de::Error| ConfigureError {
                field: "auth".into(),
                message: e.message().to_string(),
            })?,
    };
    // Provider secrets are app variables; their names are checked by config.
    let variables: std::collections::BTreeMap<String, String> = app_section
        .get("variables")
        .and_then(|v| v.clone().try_into().ok())
        .unwrap_or_default();
    settings
        .check(functions, &variables)
        .map_err(|(field, message)| ConfigureError { field, message })?;
    Ok(settings)
}

/// One app's accounts and settings, as its routes and platform endpoints use them.
#[derive(Clone)]
pub struct AppAuth {
    pub app: Arc<str>,
    pub accounts: Arc<Accounts>,
    pub settings: Arc<AuthSettings>,
}

pub struct Auth {
    accounts: Arc<Accounts>,
}

impl Capability for Auth {
    const APP_KEYS: &'static [&'static str] = &["auth"];
    type App = AppAuth;
    type Configured = Arc<AuthSettings>;
    type Instance = AuthHost;

    fn init(backends: &Backends) -> Self {
        Auth {
            accounts: backends.accounts.clone(),
        }
    }

    fn link<T: CapabilityView>(linker: &mut Linker<T>) -> wasmtime::Result<()>
    where
        Instances: Pick<Self>,
    {
        wit::add_to_linker::<T, HasSelf<AuthHost>>(linker, |t| instance::<Auth, T>(t))
    }

    fn configure_app(&self, app: &AppManifest<'_>) -> Result<AppAuth, ConfigureError> {
        Ok(AppAuth {
            app: app.app.into(),
            accounts: self.accounts.clone(),
            settings: Arc::new(app_settings(app.app_section, app.app_functions)?),
        })
    }

    fn configure(
        &self,
        app: &AppAuth,
        _: &FunctionManifest<'_>,
    ) -> Result<Self::Configured, ConfigureError> {
        Ok(app.settings.clone())
    }

    fn prepare(
        &self,
        settings: &Self::Configured,
        invocation: &Invocation<'_>,
        _: &mut WasiCtxBuilder,
    ) -> AuthHost {
        AuthHost {
            accounts: self.accounts.clone(),
            settings: settings.clone(),
            app: invocation.app.clone(),
            identity: invocation.identity.cloned(),
        }
    }
}

/// The auth interface as one invocation sees it: its app's users, and the
/// caller the trigger verified.
pub struct AuthHost {
    accounts: Arc<Accounts>,
    settings: Arc<AuthSettings>,
    app: Arc<str>,
    identity: Option<Identity>,
}

impl From<AuthError> for Error {
    fn from(err: AuthError) -> Self {
        let message = err.to_string();
        match err {
            AuthError::InvalidInput(_)
            | AuthError::WeakPassword(_)
            | AuthError::InvalidOneTimeToken => Error::InvalidInput(message),
            AuthError::EmailTaken
            | AuthError::ProviderEmailUnverified
            | AuthError::IdentityInUse => Error::Conflict(message),
            AuthError::UnknownProvider(_) => Error::NotFound(message),
            AuthError::ProviderUnavailable(_) => Error::Unavailable(message),
            AuthError::NotFound(_) => Error::NotFound(message),
            AuthError::Throttled(_) => Error::LimitExceeded(message),
            AuthError::Busy => Error::Unavailable(message),
            AuthError::Store(store) => store.into(),
            AuthError::InvalidCredentials
            | AuthError::InvalidToken
            | AuthError::InvalidRefreshToken
            | AuthError::InvalidIdToken(_)
            | AuthError::Disabled
            | AuthError::NotAllowed(_) => Error::PermissionDenied(message),
        }
    }
}

fn to_wit(user: UserRecord) -> User {
    User {
        mfa_enabled: user.mfa_enabled(),
        id: user.id,
        email: user.email,
        email_verified: user.email_verified,
        roles: user.roles,
        data: user.data.to_string(),
        disabled: user.disabled,
        anonymous: user.anonymous,
        created_ms: user.created_ms,
    }
}

/// Profile data as a function passes it: a JSON object, or empty for none.
fn profile(data: &str) -> Result<Option<Value>, Error> {
    if data.trim().is_empty() {
        return Ok(None);
    }
    if data.len() > accounts::MAX_PROFILE_BYTES {
        return Err(Error::InvalidInput(format!(
            "`data` is over {} bytes",
            accounts::MAX_PROFILE_BYTES
        )));
    }
    serde_json::from_str(data)
        .map(Some)
        .map_err(|e| Error::InvalidInput(format!("`data` is not JSON: {e}")))
}

impl Host for AuthHost {
    async fn current_user(&mut self) -> Result<Option<wit::Identity>, Error> {
        let Some(identity) = &self.identity else {
            return Ok(None);
        };
        let user = self.accounts.user(&self.app, &identity.user).await?;
        Ok(user.map(|user| wit::Identity {
            user: to_wit(user),
            session_id: identity.session.clone(),
            mfa: identity.mfa,
        }))
    }

    async fn get_user(&mut self, id: String) -> Result<Option<User>, Error> {
        Ok(self.accounts.user(&self.app, &id).await?.map(to_wit))
    }

    async fn find_user_by_email(&mut self, email: String) -> Result<Option<User>, Error> {
        Ok(self
            .accounts
            .user_by_email(&self.app, &email)
            .await?
            .map(to_wit))
    }

    async fn list_users(&mut self, after: Option<String>, limit: u32) -> Result<Vec<User>, Error> {
        Ok(self
            .accounts
            .list_users(&self.app, after.as_deref(), None, limit as u64)
            .await?
            .into_iter()
            .map(to_wit)
            .collect())
    }

    async fn create_user(
        &mut self,
        email: String,
        password: String,
        data: String,
    ) -> Result<User, Error> {
        let data = profile(&data)?;
        let user = self
            .accounts
            .create_user(&self.app, &self.settings, &email, &password, data)
            .await?;
        Ok(to_wit(user))
    }

    async fn update_data(&mut self, id: String, data: String) -> Result<User, Error> {
        let data = profile(&data)?.unwrap_or_else(|| serde_json::json!({}));
        Ok(to_wit(
            self.accounts.update_data(&self.app, &id, data).await?,
        ))
    }

    async fn set_roles(&mut self, id: String, roles: Vec<String>) -> Result<User, Error> {
        Ok(to_wit(
            self.accounts.set_roles(&self.app, &id, roles).await?,
        ))
    }

    async fn set_disabled(&mut self, id: String, disabled: bool) -> Result<User, Error> {
        Ok(to_wit(
            self.accounts.set_disabled(&self.app, &id, disabled).await?,
        ))
    }

    async fn delete_user(&mut self, id: String) -> Result<(), Error> {
        Ok(self.accounts.delete_user(&self.app, &id).await?)
    }

    async fn revoke_sessions(&mut self, id: String) -> Result<u32, Error> {
        let revoked = self.accounts.revoke_sessions(&self.app, &id).await?;
        Ok(revoked.min(u32::MAX as u64) as u32)
    }
}
