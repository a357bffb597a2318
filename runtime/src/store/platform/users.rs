//! The users of every app (`users`), unique per app on the case-folded
//! email.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{collection, from_document, now_ms, to_document};
use crate::store::{Documents, FindOptions, Namespace, StoreError};

const USERS: Namespace<'static> = collection("users");

/// One user as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UserRecord {
    #[serde(rename = "_id")]
    pub id: String,
    pub app: String,
    /// Lower-cased.
    #[serde(default)]
    pub email: Option<String>,
    /// What the unique index holds: the email, or `anonymous:<id>` for a
    /// user without one (every user has a distinct key, so the index needs
    /// no sparse or partial support from the backend).
    pub email_key: String,
    #[serde(default)]
    pub email_verified: bool,
    /// argon2id PHC string; none for anonymous and social-only users.
    #[serde(default)]
    pub password_hash: Option<String>,
    #[serde(default)]
    pub roles: Vec<String>,
    /// A JSON object.
    #[serde(default = "empty_object")]
    pub data: Value,
    #[serde(default)]
    pub disabled: bool,
    #[serde(default)]
    pub anonymous: bool,
    /// The TOTP second factor, once enrolment starts.
    #[serde(default)]
    pub totp: Option<TotpRecord>,
    /// The pending second-factor step of a sign-in.
    #[serde(default)]
    pub mfa_challenge: Option<ChallengeRecord>,
    /// The outstanding email verification token.
    #[serde(default)]
    pub email_verification: Option<ChallengeRecord>,
    /// The outstanding password reset token.
    #[serde(default)]
    pub password_reset: Option<ChallengeRecord>,
    pub created_ms: u64,
    pub updated_ms: u64,
}

impl UserRecord {
    /// Whether signing in needs the second factor.
    pub fn mfa_enabled(&self) -> bool {
        self.totp.as_ref().is_some_and(|t| t.confirmed)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TotpRecord {
    /// Base32.
    pub secret: String,
    /// False until the user proves their authenticator has it.
    pub confirmed: bool,
    /// The last step accepted, so a code works once.
    #[serde(default)]
    pub last_step: u64,
    /// SHA-256 hashes of the unused recovery codes.
    #[serde(default)]
    pub recovery: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChallengeRecord {
    /// SHA-256 of the challenge's secret.
    pub hash: String,
    pub expires_ms: u64,
}

fn empty_object() -> Value {
    json!({})
}

/// The unique key of a user without an email.
pub fn anonymous_key(id: &str) -> String {
    format!("anonymous:{id}")
}

pub async fn create_indexes(documents: &Documents) -> Result<(), StoreError> {
    documents
        .create_index(USERS, &json!({"app": 1, "email_key": 1}), true)
        .await
}

/// Stores a new user; `Conflict` when the email is taken.
pub async fn insert(documents: &Documents, user: &UserRecord) -> Result<(), StoreError> {
    documents
        .insert(USERS, vec![to_document(user)])
        .await
        .map(|_| ())
        .map_err(|err| match err {
            StoreError::Conflict(_) => {
                StoreError::Conflict("a user with this email exists already".into())
            }
            other => other,
        })
}

pub async fn get(
    documents: &Documents,
    app: &str,
    id: &str,
) -> Result<Option<UserRecord>, StoreError> {
    one(documents, &json!({"_id": id, "app": app})).await
}

pub async fn by_email(
    documents: &Documents,
    app: &str,
    email: &str,
) -> Result<Option<UserRecord>, StoreError> {
    one(documents, &json!({"app": app, "email_key": email})).await
}

async fn one(documents: &Documents, filter: &Value) -> Result<Option<UserRecord>, StoreError> {
    let page = documents
        .find(
            USERS,
            filter,
            FindOptions {
                limit: Some(1),
                ..FindOptions::default()
            },
        )
        .await?;
    page.documents
        .into_iter()
        .next()
        .map(|doc| from_document("user", doc))
        .transpose()
}

/// Users of `app` in id (creation) order after `after`, at most `limit`;
/// `email_prefix` narrows to emails starting with it.
pub async fn list(
    documents: &Documents,
    app: &str,
    after: Option<&str>,
    email_prefix: Option<&str>,
    limit: u64,
) -> Result<Vec<UserRecord>, StoreError> {
    let mut filter = json!({"app": app});
    if let Some(after) = after {
        filter["_id"] = json!({"$gt": after});
    }
    if let Some(prefix) = email_prefix {
        // The prefix is a plain string: a range, never a pattern.
        filter["email_key"] = json!({"$gte": prefix, "$lt": format!("{prefix}\u{10FFFF}")});
    }
    let page = documents
        .find(
            USERS,
            &filter,
            FindOptions {
                sort: Some(json!({"_id": 1})),
                limit: Some(limit),
                ..FindOptions::default()
            },
        )
        .await?;
    page.documents
        .into_iter()
        .map(|doc| from_document("user", doc))
        .collect()
}

/// Applies `$set` fields to one user and returns it after; none when there
/// is no such user.
pub async fn set(
    documents: &Documents,
    app: &str,
    id: &str,
    mut fields: Value,
) -> Result<Option<UserRecord>, StoreError> {
    fields["updated_ms"] = json!(now_ms());
    documents
        .find_one_and_update(
            USERS,
            &json!({"_id": id, "app": app}),
            &json!({"$set": fields}),
            true,
            false,
        )
        .await
        .map_err(|err| match err {
            StoreError::Conflict(_) => {
                StoreError::Conflict("a user with this email exists already".into())
            }
            other => other,
        })?
        .map(|doc| from_document("user", doc))
        .transpose()
}

/// Like [`set`], only if the user also matches `condition` (a filter on
/// the record), so two racing calls cannot both pass a check.
pub async fn set_if(
    documents: &Documents,
    app: &str,
    id: &str,
    condition: Value,
    mut fields: Value,
) -> Result<Option<UserRecord>, StoreError> {
    fields["updated_ms"] = json!(now_ms());
    let mut filter = condition;
    filter["_id"] = json!(id);
    filter["app"] = json!(app);
    documents
        .find_one_and_update(USERS, &filter, &json!({"$set": fields}), true, false)
        .await?
        .map(|doc| from_document("user", doc))
        .transpose()
}

/// Deletes one user: `false` when there was none.
pub async fn delete(documents: &Documents, app: &str, id: &str) -> Result<bool, StoreError> {
    Ok(documents
        .delete(USERS, &json!({"_id": id, "app": app}), false)
        .await?
        > 0)
}

pub fn new_record(app: &str, id: String, email: Option<String>, data: Value) -> UserRecord {
    let now = now_ms();
    UserRecord {
        email_key: email.clone().unwrap_or_else(|| anonymous_key(&id)),
        anonymous: email.is_none(),
        id,
        app: app.to_string(),
        email,
        email_verified: false,
        password_hash: None,
        roles: Vec::new(),
        data,
        disabled: false,
        totp: None,
        mfa_challenge: None,
        email_verification: None,
        password_reset: None,
        created_ms: now,
        updated_ms: now,
    }
}
