//! Identities at OpenID Connect providers linked to users (`identities`),
//! unique per app on provider and subject, and the pending sign-ins of the
//! code flow (`oidc_states`), each usable once.

use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::{Digest, Sha256};

use super::{all, collection, from_document, to_document};
use crate::store::{Documents, Namespace, StoreError};

const IDENTITIES: Namespace<'static> = collection("identities");
const STATES: Namespace<'static> = collection("oidc_states");

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IdentityRecord {
    /// Derived from app, provider and subject, so the store's unique `_id`
    /// makes the pair unique on every backend.
    #[serde(rename = "_id")]
    pub id: String,
    pub app: String,
    pub provider: String,
    pub subject: String,
    pub user: String,
    #[serde(default)]
    pub email: Option<String>,
    pub created_ms: u64,
}

pub fn identity_id(app: &str, provider: &str, subject: &str) -> String {
    hex::encode(Sha256::digest(
        format!("{app}\n{provider}\n{subject}").as_bytes(),
    ))
}

pub async fn create_indexes(documents: &Documents) -> Result<(), StoreError> {
    documents
        .create_index(IDENTITIES, &json!({"app": 1, "user": 1}), false)
        .await
}

pub async fn get(
    documents: &Documents,
    app: &str,
    provider: &str,
    subject: &str,
) -> Result<Option<IdentityRecord>, StoreError> {
    documents
        .get(IDENTITIES, &identity_id(app, provider, subject))
        .await?
        .map(|doc| from_document("identity", doc))
        .transpose()
}

/// `Conflict` when the identity is linked already (to anyone).
pub async fn insert(documents: &Documents, identity: &IdentityRecord) -> Result<(), StoreError> {
    documents
        .insert(IDENTITIES, vec![to_document(identity)])
        .await
        .map(|_| ())
}

pub async fn of_user(
    documents: &Documents,
    app: &str,
    user: &str,
) -> Result<Vec<IdentityRecord>, StoreError> {
    all(documents, IDENTITIES, &json!({"app": app, "user": user}))
        .await?
        .into_iter()
        .map(|doc| from_document("identity", doc))
        .collect()
}

pub async fn delete_of_user(
    documents: &Documents,
    app: &str,
    user: &str,
) -> Result<u64, StoreError> {
    documents
        .delete(IDENTITIES, &json!({"app": app, "user": user}), true)
        .await
}

/// A code-flow sign-in between its start and the provider's callback.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StateRecord {
    /// SHA-256 of the `state` parameter.
    #[serde(rename = "_id")]
    pub id: String,
    pub app: String,
    pub provider: String,
    pub nonce: String,
    pub code_verifier: String,
    #[serde(default)]
    pub redirect_to: Option<String>,
    pub expires_ms: u64,
}

pub fn state_id(state: &str) -> String {
    hex::encode(Sha256::digest(state.as_bytes()))
}

pub async fn insert_state(documents: &Documents, state: &StateRecord) -> Result<(), StoreError> {
    documents
        .insert(STATES, vec![to_document(state)])
        .await
        .map(|_| ())
}

/// Takes a state out (so it is used once); none when it is unknown or
/// another callback took it first.
pub async fn take_state(
    documents: &Documents,
    app: &str,
    state: &str,
) -> Result<Option<StateRecord>, StoreError> {
    let id = state_id(state);
    let Some(doc) = documents.get(STATES, &id).await? else {
        return Ok(None);
    };
    let record: StateRecord = from_document("sign-in state", doc)?;
    if record.app != app {
        return Ok(None);
    }
    let taken = documents
        .delete(STATES, &json!({"_id": id, "app": app}), false)
        .await?;
    Ok((taken == 1).then_some(record))
}
