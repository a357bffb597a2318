//! Each app's token signing keys (`signing_keys`): the current one signs,
//! retired ones keep verifying the tokens they signed until those expire.

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{all, collection, from_document, now_ms, to_document};
use crate::store::{Documents, Namespace, StoreError};

const KEYS: Namespace<'static> = collection("signing_keys");

/// One key as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SigningKeyRecord {
    /// The key id (`kid`).
    #[serde(rename = "_id")]
    pub id: String,
    pub app: String,
    /// `EdDSA` (Ed25519).
    pub alg: String,
    /// The PKCS#8 document, base64.
    pub private_key: String,
    /// The raw public key, base64url.
    pub public_key: String,
    pub created_ms: u64,
    /// When a newer key replaced it; none for the current key.
    #[serde(default)]
    pub retired_ms: Option<u64>,
}

/// Every key of `app`, oldest first.
pub async fn of_app(documents: &Documents, app: &str) -> Result<Vec<SigningKeyRecord>, StoreError> {
    let mut keys: Vec<SigningKeyRecord> = all(documents, KEYS, &json!({"app": app}))
        .await?
        .into_iter()
        .map(|doc| from_document("signing key", doc))
        .collect::<Result<_, _>>()?;
    keys.sort_by_key(|k| (k.created_ms, k.id.clone()));
    Ok(keys)
}

pub async fn insert(documents: &Documents, key: &SigningKeyRecord) -> Result<(), StoreError> {
    documents
        .insert(KEYS, vec![to_document(key)])
        .await
        .map(|_| ())
}

/// Marks every key of `app` but `current` retired (those not yet retired).
pub async fn retire_others(
    documents: &Documents,
    app: &str,
    current: &str,
) -> Result<(), StoreError> {
    documents
        .update(
            KEYS,
            &json!({"app": app, "_id": {"$ne": current}, "retired_ms": null}),
            &json!({"$set": {"retired_ms": now_ms()}}),
            false,
            true,
        )
        .await
        .map(|_| ())
}

/// Deletes keys of `app` retired before `before_ms`.
pub async fn delete_retired_before(
    documents: &Documents,
    app: &str,
    before_ms: u64,
) -> Result<u64, StoreError> {
    documents
        .delete(
            KEYS,
            &json!({"app": app, "retired_ms": {"$lt": before_ms}}),
            true,
        )
        .await
}
