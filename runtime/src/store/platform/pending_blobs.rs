//! Blobs whose fate is not settled yet (`pending_blobs`): one being written
//! before its record points at it, or one being deleted. Each entry is made
//! before the work and removed after it, so an entry older than any write
//! can take names a blob a crash or a failed delete left behind; the sweep
//! keeps it if its key's record points at it and deletes it otherwise.

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{collection, from_document, to_document};
use crate::store::{Documents, FindOptions, Namespace, StoreError};

const PENDING: Namespace<'static> = collection("pending_blobs");

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PendingBlob {
    #[serde(rename = "_id")]
    pub blob: String,
    pub app: String,
    /// The key whose record points at the blob if its write succeeded.
    pub key: String,
    pub created_ms: u64,
}

pub async fn create_indexes(documents: &Documents) -> Result<(), StoreError> {
    documents
        .create_index(PENDING, &json!({"created_ms": 1}), false)
        .await
}

/// Records (or renews) the blob as pending.
pub async fn mark(documents: &Documents, pending: &PendingBlob) -> Result<(), StoreError> {
    let mut fields = to_document(pending);
    if let Some(map) = fields.as_object_mut() {
        map.remove("_id");
    }
    documents
        .update(
            PENDING,
            &json!({"_id": pending.blob}),
            &json!({"$set": fields}),
            true,
            false,
        )
        .await
        .map(|_| ())
}

pub async fn settle(documents: &Documents, blob: &str) -> Result<(), StoreError> {
    documents
        .delete(PENDING, &json!({"_id": blob}), false)
        .await
        .map(|_| ())
}

/// At most `limit` entries made before `before_ms`, oldest first.
pub async fn stale(
    documents: &Documents,
    before_ms: u64,
    limit: u64,
) -> Result<Vec<PendingBlob>, StoreError> {
    let page = documents
        .find(
            PENDING,
            &json!({"created_ms": {"$lt": before_ms}}),
            FindOptions {
                sort: Some(json!({"created_ms": 1})),
                limit: Some(limit),
                ..FindOptions::default()
            },
        )
        .await?;
    page.documents
        .into_iter()
        .map(|doc| from_document("pending blob", doc))
        .collect()
}
