//! Signed-in sessions (`sessions`). A session exists while it is valid:
//! signing out, revoking, disabling or deleting the user deletes it, and
//! every authenticated request reads it by id, so those take effect on the
//! next request on every node.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{collection, from_document, now_ms, to_document};
use crate::store::{Documents, FindOptions, Namespace, StoreError};

const SESSIONS: Namespace<'static> = collection("sessions");

/// How many rotated refresh tokens a session remembers, to tell a reused
/// token (which revokes the session) from a guessed one.
pub const REMEMBERED_ROTATIONS: usize = 32;

/// Most sessions one user may hold; the oldest goes when a new one starts.
pub const MAX_PER_USER: usize = 50;

/// One session as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SessionRecord {
    #[serde(rename = "_id")]
    pub id: String,
    pub app: String,
    pub user: String,
    /// Copied from the user, so the per-request check reads one record.
    #[serde(default)]
    pub roles: Vec<String>,
    /// Whether the session passed the second factor.
    #[serde(default)]
    pub mfa: bool,
    /// SHA-256 (hex) of the current refresh token's secret.
    pub refresh_hash: String,
    /// Hashes of earlier refresh tokens, newest last.
    #[serde(default)]
    pub rotated: Vec<String>,
    pub created_ms: u64,
    pub last_used_ms: u64,
    /// The refresh token stops working after this.
    pub expires_ms: u64,
    /// The client's `User-Agent`, shortened.
    #[serde(default)]
    pub device: String,
    #[serde(default)]
    pub address: String,
}

pub async fn create_indexes(documents: &Documents) -> Result<(), StoreError> {
    documents
        .create_index(SESSIONS, &json!({"app": 1, "user": 1}), false)
        .await
}

/// Stores a new session, dropping the user's oldest past [`MAX_PER_USER`].
pub async fn insert(documents: &Documents, session: &SessionRecord) -> Result<(), StoreError> {
    documents
        .insert(SESSIONS, vec![to_document(session)])
        .await?;
    let sessions = of_user(documents, &session.app, &session.user).await?;
    if sessions.len() > MAX_PER_USER {
        let excess = sessions.len() - MAX_PER_USER;
        for old in sessions.iter().take(excess) {
            delete(documents, &session.app, &old.id).await?;
        }
    }
    Ok(())
}

/// The live session `id` of `app`: none when revoked or expired.
pub async fn get(
    documents: &Documents,
    app: &str,
    id: &str,
) -> Result<Option<SessionRecord>, StoreError> {
    let page = documents
        .find(
            SESSIONS,
            &json!({"_id": id, "app": app}),
            FindOptions {
                limit: Some(1),
                ..FindOptions::default()
            },
        )
        .await?;
    let session = page
        .documents
        .into_iter()
        .next()
        .map(|doc| from_document::<SessionRecord>("session", doc))
        .transpose()?;
    Ok(session.filter(|s| s.expires_ms > now_ms()))
}

/// The user's sessions, oldest first.
pub async fn of_user(
    documents: &Documents,
    app: &str,
    user: &str,
) -> Result<Vec<SessionRecord>, StoreError> {
    let page = documents
        .find(
            SESSIONS,
            &json!({"app": app, "user": user}),
            FindOptions {
                sort: Some(json!({"created_ms": 1})),
                limit: Some(MAX_PER_USER as u64 * 2),
                ..FindOptions::default()
            },
        )
        .await?;
    page.documents
        .into_iter()
        .map(|doc| from_document("session", doc))
        .collect()
}

/// Replaces the refresh token of `session` if its current hash is still
/// `expected` (so of two refreshes with one token, one wins); returns the
/// session after, or none when another refresh won or it is gone.
pub async fn rotate(
    documents: &Documents,
    session: &SessionRecord,
    new_hash: &str,
    expires_ms: u64,
) -> Result<Option<SessionRecord>, StoreError> {
    let mut rotated = session.rotated.clone();
    rotated.push(session.refresh_hash.clone());
    if rotated.len() > REMEMBERED_ROTATIONS {
        rotated.drain(..rotated.len() - REMEMBERED_ROTATIONS);
    }
    documents
        .find_one_and_update(
            SESSIONS,
            &json!({"_id": session.id, "app": session.app, "refresh_hash": session.refresh_hash}),
            &json!({"$set": {
                "refresh_hash": new_hash,
                "rotated": rotated,
                "last_used_ms": now_ms(),
                "expires_ms": expires_ms,
            }}),
            true,
            false,
        )
        .await?
        .map(|doc| from_document("session", doc))
        .transpose()
}

/// Sets fields of every session of a user (their roles, after a change).
pub async fn set_for_user(
    documents: &Documents,
    app: &str,
    user: &str,
    fields: Value,
) -> Result<(), StoreError> {
    documents
        .update(
            SESSIONS,
            &json!({"app": app, "user": user}),
            &json!({"$set": fields}),
            false,
            true,
        )
        .await
        .map(|_| ())
}

/// Sets fields of one session.
pub async fn set(
    documents: &Documents,
    app: &str,
    id: &str,
    fields: Value,
) -> Result<(), StoreError> {
    documents
        .update(
            SESSIONS,
            &json!({"_id": id, "app": app}),
            &json!({"$set": fields}),
            false,
            false,
        )
        .await
        .map(|_| ())
}

/// Deletes one session: `false` when there was none.
pub async fn delete(documents: &Documents, app: &str, id: &str) -> Result<bool, StoreError> {
    Ok(documents
        .delete(SESSIONS, &json!({"_id": id, "app": app}), false)
        .await?
        > 0)
}

/// Deletes the user's session `id`: `false` when the user has none such.
pub async fn delete_of_user(
    documents: &Documents,
    app: &str,
    user: &str,
    id: &str,
) -> Result<bool, StoreError> {
    Ok(documents
        .delete(
            SESSIONS,
            &json!({"_id": id, "app": app, "user": user}),
            false,
        )
        .await?
        > 0)
}

/// Deletes every session of a user but `keep`.
pub async fn delete_others(
    documents: &Documents,
    app: &str,
    user: &str,
    keep: &str,
) -> Result<u64, StoreError> {
    documents
        .delete(
            SESSIONS,
            &json!({"app": app, "user": user, "_id": {"$ne": keep}}),
            true,
        )
        .await
}

/// Deletes every session of a user; returns how many.
pub async fn delete_all(documents: &Documents, app: &str, user: &str) -> Result<u64, StoreError> {
    documents
        .delete(SESSIONS, &json!({"app": app, "user": user}), true)
        .await
}
