//! Cron bookkeeping shared by every node: occurrence claims
//! (`cron_claims`), each trigger's latest claimed occurrence (`cron_state`)
//! and trigger locks with a lease (`cron_locks`).

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{collection, from_document, to_document};
use crate::store::{Documents, Namespace, StoreError};

const CLAIMS: Namespace<'static> = collection("cron_claims");
const STATE: Namespace<'static> = collection("cron_state");
const LOCKS: Namespace<'static> = collection("cron_locks");

/// The id of a trigger's state and lock: `app|trigger`.
pub fn trigger_id(app: &str, trigger: &str) -> String {
    format!("{app}|{trigger}")
}

/// A claimed occurrence: the claim is the insert of this record, so one node
/// wins each occurrence.
#[derive(Debug, Serialize, Deserialize)]
struct Claim {
    /// `app|trigger|due_ms`.
    #[serde(rename = "_id")]
    id: String,
    node: String,
    claimed_ms: u64,
}

/// A trigger's latest claimed occurrence, under the schedule it had then.
#[derive(Debug, Serialize, Deserialize)]
pub struct TriggerState {
    #[serde(rename = "_id")]
    pub id: String,
    /// `expression timezone`: a changed schedule starts afresh.
    #[serde(default)]
    pub schedule: Option<String>,
    #[serde(default)]
    pub last_ms: Option<u64>,
}

/// Who runs a trigger now, until when.
#[derive(Debug, Serialize, Deserialize)]
struct TriggerLock {
    #[serde(rename = "_id")]
    id: String,
    holder: String,
    node: String,
    until_ms: u64,
}

/// Inserts the claim of an occurrence: `Ok(true)` when `node` won it.
pub async fn claim(
    documents: &Documents,
    trigger_id: &str,
    due_ms: u64,
    node: &str,
    now_ms: u64,
) -> Result<bool, StoreError> {
    let claim = Claim {
        id: format!("{trigger_id}|{due_ms}"),
        node: node.to_string(),
        claimed_ms: now_ms,
    };
    match documents.insert(CLAIMS, vec![to_document(&claim)]).await {
        Ok(_) => Ok(true),
        Err(StoreError::Conflict(_)) => Ok(false),
        Err(err) => Err(err),
    }
}

pub async fn state(
    documents: &Documents,
    trigger_id: &str,
) -> Result<Option<TriggerState>, StoreError> {
    documents
        .get(STATE, trigger_id)
        .await?
        .map(|doc| from_document("cron state", doc))
        .transpose()
}

/// Starts a trigger's state afresh under `schedule` from `now_ms`.
pub async fn restart_state(
    documents: &Documents,
    trigger_id: &str,
    schedule: &str,
    now_ms: u64,
) -> Result<(), StoreError> {
    documents
        .update(
            STATE,
            &json!({"_id": trigger_id}),
            &json!({"$max": {"last_ms": now_ms}, "$set": {"schedule": schedule}}),
            true,
            false,
        )
        .await
        .map(|_| ())
}

/// Moves a trigger's latest occurrence forward to `to_ms` (never back).
pub async fn advance_state(
    documents: &Documents,
    trigger_id: &str,
    to_ms: u64,
) -> Result<(), StoreError> {
    documents
        .update(
            STATE,
            &json!({"_id": trigger_id}),
            &json!({"$max": {"last_ms": to_ms}}),
            true,
            false,
        )
        .await
        .map(|_| ())
}

/// Takes (or renews) a trigger's lock for `holder` until `until_ms`:
/// `Ok(false)` while another holder's lease runs.
pub async fn lock(
    documents: &Documents,
    trigger_id: &str,
    holder: &str,
    node: &str,
    now_ms: u64,
    until_ms: u64,
) -> Result<bool, StoreError> {
    let free_or_mine =
        json!({"_id": trigger_id, "$or": [{"until_ms": {"$lt": now_ms}}, {"holder": holder}]});
    let lock = TriggerLock {
        id: trigger_id.to_string(),
        holder: holder.to_string(),
        node: node.to_string(),
        until_ms,
    };
    let mut set = to_document(&lock);
    set.as_object_mut().map(|fields| fields.remove("_id"));
    match documents
        .update(LOCKS, &free_or_mine, &json!({ "$set": set }), true, false)
        .await
    {
        Ok(_) => Ok(true),
        // The lock exists and is held: the upsert's insert collided.
        Err(StoreError::Conflict(_)) => Ok(false),
        Err(err) => Err(err),
    }
}

/// Releases `holder`'s lock (a lock held by another is left alone).
pub async fn unlock(
    documents: &Documents,
    trigger_id: &str,
    holder: &str,
) -> Result<(), StoreError> {
    documents
        .update(
            LOCKS,
            &json!({"_id": trigger_id, "holder": holder}),
            &json!({"$set": {"until_ms": 0}}),
            false,
            false,
        )
        .await
        .map(|_| ())
}
