//! The app's users. The host verifies every request's bearer token before
//! the function runs; [`current_user`] is who made the request.
//!
//! ```ignore
//! let Some(caller) = kiln_sdk::auth::current_user()? else {
//!     return Response::json_status(401, &json!({"error": "sign in"}));
//! };
//! if caller.user.has_role("admin") { /* ... */ }
//! ```

use serde_json::Value;

use crate::bindings::kiln::platform::auth as wit;

pub use wit::Error;

/// A user of the app.
#[derive(Debug, Clone, PartialEq)]
pub struct User {
    pub id: String,
    /// Lower-cased; `None` for an anonymous user.
    pub email: Option<String>,
    pub email_verified: bool,
    pub roles: Vec<String>,
    /// Profile data: a JSON object.
    pub data: Value,
    pub disabled: bool,
    pub anonymous: bool,
    pub mfa_enabled: bool,
    /// Milliseconds since the Unix epoch.
    pub created_ms: u64,
}

impl User {
    pub fn has_role(&self, role: &str) -> bool {
        self.roles.iter().any(|r| r == role)
    }
}

impl From<wit::User> for User {
    fn from(user: wit::User) -> Self {
        User {
            id: user.id,
            email: user.email,
            email_verified: user.email_verified,
            roles: user.roles,
            // The host sends a JSON object; anything else reads as empty.
            data: serde_json::from_str(&user.data)
                .unwrap_or_else(|_| Value::Object(Default::default())),
            disabled: user.disabled,
            anonymous: user.anonymous,
            mfa_enabled: user.mfa_enabled,
            created_ms: user.created_ms,
        }
    }
}

/// Who made this request, as the host verified it.
#[derive(Debug, Clone, PartialEq)]
pub struct Caller {
    pub user: User,
    pub session_id: String,
    /// Whether the session passed the second factor.
    pub mfa: bool,
}

/// The verified caller; `None` when the request carried no token (and in
/// cron and job runs).
pub fn current_user() -> Result<Option<Caller>, Error> {
    Ok(wit::current_user()?.map(|identity| Caller {
        user: identity.user.into(),
        session_id: identity.session_id,
        mfa: identity.mfa,
    }))
}

pub fn get_user(id: &str) -> Result<Option<User>, Error> {
    Ok(wit::get_user(id)?.map(User::from))
}

/// Looks a user up by email (compared case-folded).
pub fn find_user_by_email(email: &str) -> Result<Option<User>, Error> {
    Ok(wit::find_user_by_email(email)?.map(User::from))
}

/// Users in creation order, at most `limit` (up to 100) after the id `after`.
pub fn list_users(after: Option<&str>, limit: u32) -> Result<Vec<User>, Error> {
    Ok(wit::list_users(after, limit)?
        .into_iter()
        .map(User::from)
        .collect())
}

/// Creates a user with an email and password; `data` is a JSON object.
pub fn create_user(email: &str, password: &str, data: &Value) -> Result<User, Error> {
    wit::create_user(email, password, &data.to_string()).map(User::from)
}

/// Replaces the user's profile data (a JSON object).
pub fn update_data(id: &str, data: &Value) -> Result<User, Error> {
    wit::update_data(id, &data.to_string()).map(User::from)
}

/// Replaces the user's roles; effective on their next request.
pub fn set_roles(id: &str, roles: &[&str]) -> Result<User, Error> {
    let roles: Vec<String> = roles.iter().map(|r| r.to_string()).collect();
    wit::set_roles(id, &roles).map(User::from)
}

/// Disables (signing them out everywhere) or re-enables the user.
pub fn set_disabled(id: &str, disabled: bool) -> Result<User, Error> {
    wit::set_disabled(id, disabled).map(User::from)
}

/// Deletes the user and their sessions.
pub fn delete_user(id: &str) -> Result<(), Error> {
    wit::delete_user(id)
}

/// Revokes every session of the user; returns how many.
pub fn revoke_sessions(id: &str) -> Result<u32, Error> {
    wit::revoke_sessions(id)
}
