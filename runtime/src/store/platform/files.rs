//! Stored files (`files`), and bytes stored per app (`file_usage`).
//!
//! A file's bytes are an immutable blob in the object store, named by a
//! random id; this record maps the app's key to its current blob. Writing a
//! file stores a new blob, then switches the record, then deletes the old
//! blob, so a reader sees the old bytes or the new ones, never a mix.
//!
//! Downloads read the record through [`LiveFiles`], which keeps what it
//! read while the store's change counter for the app's files (see
//! [`crate::store::counters`]) is unchanged, as sessions are kept.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::{collection, from_document, now_ms, to_document};
use crate::store::counters::Kept;
use crate::store::{Documents, FindOptions, Namespace, StoreError};

const FILES: Namespace<'static> = collection("files");
const USAGE: Namespace<'static> = collection("file_usage");

/// One file as stored.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct FileRecord {
    /// Derived from the app and the key, so a key is one record on every backend.
    #[serde(rename = "_id")]
    pub id: String,
    pub app: String,
    pub key: String,
    /// The blob holding the bytes; also the file's `ETag`.
    pub blob: String,
    pub size: u64,
    pub content_type: String,
    pub created_ms: u64,
    pub modified_ms: u64,
}

/// The record id of `key` in `app`.
pub fn record_id(app: &str, key: &str) -> String {
    let mut hash = Sha256::new();
    hash.update(app.as_bytes());
    hash.update([0]);
    hash.update(key.as_bytes());
    hex::encode(hash.finalize())
}

pub async fn create_indexes(documents: &Documents) -> Result<(), StoreError> {
    documents
        .create_index(FILES, &json!({"app": 1, "key": 1}), false)
        .await
}

pub async fn get(
    documents: &Documents,
    app: &str,
    key: &str,
) -> Result<Option<FileRecord>, StoreError> {
    documents
        .get(FILES, &record_id(app, key))
        .await?
        .map(|doc| from_document("file", doc))
        .transpose()
}

/// File records this node read, kept while the app's files are unchanged.
#[derive(Default)]
pub struct LiveFiles(Kept<FileRecord>);

impl LiveFiles {
    /// The record of `key` in `app`, as [`get`] would read it now.
    pub async fn get(
        &self,
        documents: &Documents,
        app: &str,
        key: &str,
    ) -> Result<Option<FileRecord>, StoreError> {
        let Some(counters) = documents.change_counters() else {
            return get(documents, app, key).await;
        };
        let read = get(documents, app, key);
        self.0
            .get(
                counters,
                &counter_key(app),
                app,
                key,
                now_ms(),
                |_| true,
                read,
            )
            .await
    }
}

fn counter_key(app: &str) -> String {
    format!("files/{app}")
}

/// Counts a write to `app`'s files, after it committed (or failed: a failed
/// write may still have landed).
fn changed(documents: &Documents, app: &str) {
    if let Some(counters) = documents.change_counters() {
        counters.bump(&counter_key(app));
    }
}

/// Stores `record` if its key is free; `false` when a file is there.
pub async fn create(documents: &Documents, record: &FileRecord) -> Result<bool, StoreError> {
    let inserted = documents.insert(FILES, vec![to_document(record)]).await;
    changed(documents, &record.app);
    match inserted {
        Ok(_) => {
            add_usage(documents, &record.app, 1, record.size as i64).await?;
            Ok(true)
        }
        Err(StoreError::Conflict(_)) => Ok(false),
        Err(err) => Err(err),
    }
}

/// Stores `record` in place of whatever is at its key; returns what was.
pub async fn replace(
    documents: &Documents,
    record: &FileRecord,
) -> Result<Option<FileRecord>, StoreError> {
    let mut fields = to_document(record);
    if let Some(map) = fields.as_object_mut() {
        map.remove("_id");
        // A replaced file keeps its creation time.
        map.remove("created_ms");
    }
    let before = documents
        .find_one_and_update(
            FILES,
            &json!({"_id": record.id}),
            &json!({"$set": fields, "$setOnInsert": {"created_ms": record.created_ms}}),
            false,
            true,
        )
        .await;
    changed(documents, &record.app);
    let before = before?
        .map(|doc| from_document::<FileRecord>("file", doc))
        .transpose()?;
    let (files, bytes) = match &before {
        Some(old) => (0, record.size as i64 - old.size as i64),
        None => (1, record.size as i64),
    };
    add_usage(documents, &record.app, files, bytes).await?;
    Ok(before)
}

/// Deletes the record of `key`; returns it.
pub async fn delete(
    documents: &Documents,
    app: &str,
    key: &str,
) -> Result<Option<FileRecord>, StoreError> {
    let Some(record) = get(documents, app, key).await? else {
        return Ok(None);
    };
    // Only the blob read above: a concurrent replace keeps its new file.
    let deleted = documents
        .delete(
            FILES,
            &json!({"_id": record.id, "blob": record.blob}),
            false,
        )
        .await;
    changed(documents, app);
    if deleted? == 0 {
        return Ok(None);
    }
    add_usage(documents, app, -1, -(record.size as i64)).await?;
    Ok(Some(record))
}

/// Files of `app` whose key starts with `prefix`, in key order, after
/// `after`; at most `limit`, and whether more follow.
pub async fn list(
    documents: &Documents,
    app: &str,
    prefix: &str,
    after: Option<&str>,
    limit: u32,
) -> Result<(Vec<FileRecord>, bool), StoreError> {
    // Keys with the prefix are contiguous from the prefix on, in key order.
    let from = match after {
        Some(after) if after >= prefix => json!({"$gt": after}),
        _ => json!({"$gte": prefix}),
    };
    let page = documents
        .find(
            FILES,
            &json!({"app": app, "key": from}),
            FindOptions {
                sort: Some(json!({"key": 1})),
                limit: Some(limit as u64 + 1),
                ..FindOptions::default()
            },
        )
        .await?;
    let mut files = Vec::with_capacity(page.documents.len());
    let mut more = false;
    for doc in page.documents {
        let record: FileRecord = from_document("file", doc)?;
        if !record.key.starts_with(prefix) {
            break;
        }
        if files.len() == limit as usize {
            more = true;
            break;
        }
        files.push(record);
    }
    Ok((files, more))
}

/// Files and bytes `app` stores.
pub async fn usage(documents: &Documents, app: &str) -> Result<(u64, u64), StoreError> {
    let doc = documents.get(USAGE, app).await?;
    let read = |field: &str| {
        doc.as_ref()
            .and_then(|d| d.get(field))
            .and_then(Value::as_i64)
            .map_or(0, |n| n.max(0) as u64)
    };
    Ok((read("files"), read("bytes")))
}

async fn add_usage(
    documents: &Documents,
    app: &str,
    files: i64,
    bytes: i64,
) -> Result<(), StoreError> {
    documents
        .update(
            USAGE,
            &json!({"_id": app}),
            &json!({"$inc": {"files": files, "bytes": bytes}}),
            true,
            false,
        )
        .await
        .map(|_| ())
}
