//! Resumable uploads in progress (`uploads`): where a client's upload
//! stands, so any request (and, on S3, any node) can continue it.

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{collection, from_document, to_document};
use crate::store::{Documents, FindOptions, Namespace, StoreError};

const UPLOADS: Namespace<'static> = collection("uploads");

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UploadRecord {
    /// 128 random bits: knowing it (and being its owner) is what lets a
    /// client continue the upload.
    #[serde(rename = "_id")]
    pub id: String,
    pub app: String,
    /// The user who started it; only they may see or continue it. `None`:
    /// started signed out, so the id alone is the key.
    #[serde(default)]
    pub owner: Option<String>,
    pub key: String,
    /// The file's whole size, declared at the start.
    pub size: u64,
    pub content_type: String,
    /// Bytes stored so far.
    pub offset: u64,
    /// The blob the file becomes.
    pub blob: String,
    /// The S3 multipart upload; none on the local backend.
    #[serde(default)]
    pub multipart: Option<String>,
    /// S3 parts so far, in order.
    #[serde(default)]
    pub parts: Vec<String>,
    /// Whether the file may replace one at its key.
    pub overwrite: bool,
    pub created_ms: u64,
    pub expires_ms: u64,
    /// One request appends at a time: it holds the upload until this.
    #[serde(default)]
    pub busy_until_ms: u64,
}

pub async fn create_indexes(documents: &Documents) -> Result<(), StoreError> {
    documents
        .create_index(UPLOADS, &json!({"expires_ms": 1}), false)
        .await
}

pub async fn insert(documents: &Documents, record: &UploadRecord) -> Result<(), StoreError> {
    documents
        .insert(UPLOADS, vec![to_document(record)])
        .await
        .map(|_| ())
}

/// The upload, if it is `app`'s and `caller` may see it: its owner, or
/// anyone when it was started signed out.
pub async fn get(
    documents: &Documents,
    app: &str,
    id: &str,
    caller: Option<&str>,
) -> Result<Option<UploadRecord>, StoreError> {
    let Some(doc) = documents.get(UPLOADS, id).await? else {
        return Ok(None);
    };
    let record: UploadRecord = from_document("upload", doc)?;
    let visible =
        record.app == app && (record.owner.is_none() || record.owner.as_deref() == caller);
    Ok(visible.then_some(record))
}

/// Uploads `app` has open (expired ones do not count).
pub async fn count(documents: &Documents, app: &str, now_ms: u64) -> Result<u64, StoreError> {
    documents
        .count(UPLOADS, &json!({"app": app, "expires_ms": {"$gt": now_ms}}))
        .await
}

/// At most `limit` uploads past their time and not being appended to.
pub async fn expired(
    documents: &Documents,
    now_ms: u64,
    limit: u64,
) -> Result<Vec<UploadRecord>, StoreError> {
    let page = documents
        .find(
            UPLOADS,
            &json!({"expires_ms": {"$lte": now_ms}, "busy_until_ms": {"$lt": now_ms}}),
            FindOptions {
                limit: Some(limit),
                ..FindOptions::default()
            },
        )
        .await?;
    page.documents
        .into_iter()
        .map(|doc| from_document("upload", doc))
        .collect()
}

/// Deletes the upload if it is still expired and idle (another node may
/// have swept it first).
pub async fn delete_expired(
    documents: &Documents,
    id: &str,
    now_ms: u64,
) -> Result<bool, StoreError> {
    let filter =
        json!({"_id": id, "expires_ms": {"$lte": now_ms}, "busy_until_ms": {"$lt": now_ms}});
    Ok(documents.delete(UPLOADS, &filter, false).await? > 0)
}

/// Takes the upload for one append at `offset` until `until_ms`; none when
/// it is elsewhere, busy, gone or `caller`'s to see.
pub async fn claim(
    documents: &Documents,
    app: &str,
    id: &str,
    caller: Option<&str>,
    offset: u64,
    now_ms: u64,
    until_ms: u64,
) -> Result<Option<UploadRecord>, StoreError> {
    documents
        .find_one_and_update(
            UPLOADS,
            &json!({
                "_id": id, "app": app, "owner": {"$in": [null, caller]}, "offset": offset,
                "busy_until_ms": {"$lt": now_ms}, "expires_ms": {"$gt": now_ms},
            }),
            &json!({"$set": {"busy_until_ms": until_ms}}),
            true,
            false,
        )
        .await?
        .map(|doc| from_document("upload", doc))
        .transpose()
}

/// Records what an append stored, and lets the upload go.
pub async fn advance(documents: &Documents, record: &UploadRecord) -> Result<(), StoreError> {
    documents
        .update(
            UPLOADS,
            &json!({"_id": record.id, "app": record.app}),
            &json!({"$set": {"offset": record.offset, "parts": record.parts, "busy_until_ms": 0}}),
            false,
            false,
        )
        .await
        .map(|_| ())
}

pub async fn delete(documents: &Documents, app: &str, id: &str) -> Result<bool, StoreError> {
    Ok(documents
        .delete(UPLOADS, &json!({"_id": id, "app": app}), false)
        .await?
        > 0)
}
