//! The one-off job queue (`jobs`): written by the scheduler capability
//! and by collection writes with an `after_write` hook, claimed and
//! finished by the cron trigger.
//!
//! A hook's job is written before its write, due only after
//! [`HOOK_INTENT_MS`], and made due at once when the write commits; a
//! crash between the two leaves it to run late, after the runner checks
//! that the write happened. A claimed hook job holds a lease in `due_ms`:
//! when its node dies, another claims it again (at least once).

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{collection, from_document, now_ms, to_document};
use crate::store::{Documents, FindOptions, Namespace, StoreError};

const JOBS: Namespace<'static> = collection("jobs");

/// Where a job is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    Pending,
    Running,
    Cancelled,
    Succeeded,
    Failed,
    TimedOut,
}

/// One job as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Job {
    #[serde(rename = "_id")]
    pub id: String,
    pub app: String,
    pub function: String,
    pub due_ms: u64,
    /// JSON text.
    pub payload: String,
    pub status: JobStatus,
    pub created_ms: u64,
    /// The request id of the invocation that scheduled it.
    pub created_by: String,
    /// The node that claimed it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Set on an `after_write` hook's job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hook: Option<HookJob>,
}

/// An `after_write` hook's run of one write.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HookJob {
    pub collection: String,
    /// The written document's id.
    pub document: String,
    /// 1 for the first attempt.
    pub attempt: u32,
    pub retries: u32,
    pub backoff_ms: u64,
}

/// How long a hook's job waits for its write before it runs anyway (after
/// checking the write happened).
pub const HOOK_INTENT_MS: u64 = 10_000;
/// How long a claimed hook job is its node's before another may claim it,
/// until its run extends the lease.
pub const HOOK_CLAIM_LEASE_MS: u64 = 10_000;

/// Indexes the queue by app, status and due time: a pending count and an
/// app's due jobs read only that app's part of the index.
pub async fn create_index(documents: &Documents) -> Result<(), StoreError> {
    documents
        .create_index(JOBS, &json!({"app": 1, "status": 1, "due_ms": 1}), false)
        .await
}

/// Jobs of `app` waiting to run (counted from the index).
pub async fn count_pending(documents: &Documents, app: &str) -> Result<u64, StoreError> {
    documents
        .count(JOBS, &json!({"app": app, "status": JobStatus::Pending}))
        .await
}

pub async fn insert(documents: &Documents, job: &Job) -> Result<(), StoreError> {
    documents
        .insert(JOBS, vec![to_document(job)])
        .await
        .map(|_| ())
}

/// Cancels a waiting job of `app`: `false` when there is none with this id.
pub async fn cancel(documents: &Documents, app: &str, id: &str) -> Result<bool, StoreError> {
    let outcome = documents
        .update(
            JOBS,
            &json!({"_id": id, "app": app, "status": JobStatus::Pending}),
            &json!({"$set": {"status": JobStatus::Cancelled, "ended_ms": now_ms()}}),
            false,
            false,
        )
        .await?;
    Ok(outcome.matched > 0)
}

/// How often a node looks for hook jobs whose lease ran out (a node died
/// running them); leases last 10 s at least, so this adds little delay.
pub const RECLAIM_EVERY_MS: u64 = 5_000;

/// Claims due jobs for `node`, at most `per_app` of each app in `apps`, so
/// one app's backlog never delays another app's jobs by more than a tick.
/// Each job is claimed by one node only (the update from `pending` to
/// `running` matches once). With `reclaim`, also hook jobs whose lease ran out.
pub async fn claim_due(
    documents: &Documents,
    node: &str,
    now: u64,
    apps: &[&str],
    per_app: u64,
    reclaim: bool,
) -> Result<Vec<Job>, StoreError> {
    let mut claimed = Vec::new();
    for app in apps {
        claimed.extend(claim_due_of(documents, node, now, app, per_app, reclaim).await?);
    }
    Ok(claimed)
}

async fn claim_due_of(
    documents: &Documents,
    node: &str,
    now: u64,
    app: &str,
    limit: u64,
    reclaim: bool,
) -> Result<Vec<Job>, StoreError> {
    let mut claimed = claim(
        documents,
        node,
        now,
        json!({"app": app, "status": JobStatus::Pending, "due_ms": {"$lte": now}}),
        limit,
    )
    .await?;
    if !reclaim {
        return Ok(claimed);
    }
    // Hook jobs whose node stopped before it finished them.
    let left = limit.saturating_sub(claimed.len() as u64).max(1);
    claimed.extend(
        claim(
            documents,
            node,
            now,
            json!({"app": app, "status": JobStatus::Running, "due_ms": {"$lte": now}, "hook": {"$exists": true}}),
            left,
        )
        .await?,
    );
    Ok(claimed)
}

async fn claim(
    documents: &Documents,
    node: &str,
    now: u64,
    filter: serde_json::Value,
    limit: u64,
) -> Result<Vec<Job>, StoreError> {
    let page = documents
        .find(
            JOBS,
            &filter,
            FindOptions {
                sort: Some(json!({"due_ms": 1})),
                limit: Some(limit),
                ..FindOptions::default()
            },
        )
        .await?;
    let mut claimed = Vec::new();
    for doc in page.documents {
        let Some(id) = doc["_id"].as_str() else {
            continue;
        };
        // Matching the due time as read makes the claim one node's only.
        let mut set = json!({"status": JobStatus::Running, "node": node, "started_ms": now});
        if doc.get("hook").is_some() {
            set["due_ms"] = json!(now + HOOK_CLAIM_LEASE_MS);
        }
        let won = documents
            .find_one_and_update(
                JOBS,
                &json!({"_id": id, "status": doc["status"], "due_ms": doc["due_ms"]}),
                &json!({ "$set": set }),
                true,
                false,
            )
            .await?;
        match won.map(|doc| from_document::<Job>("job", doc)) {
            Some(Ok(job)) => claimed.push(job),
            Some(Err(err)) => {
                tracing::error!("a claimed job does not read, so it does not run: {err}")
            }
            None => {}
        }
    }
    Ok(claimed)
}

/// Makes a hook's job due now: its write committed.
pub async fn release(documents: &Documents, id: &str) -> Result<(), StoreError> {
    documents
        .update(
            JOBS,
            &json!({"_id": id, "status": JobStatus::Pending}),
            &json!({"$set": {"due_ms": now_ms()}}),
            false,
            false,
        )
        .await
        .map(|_| ())
}

/// Removes a hook's job whose write did not happen.
pub async fn withdraw(documents: &Documents, id: &str) -> Result<(), StoreError> {
    documents
        .delete(
            JOBS,
            &json!({"_id": id, "status": JobStatus::Pending}),
            false,
        )
        .await
        .map(|_| ())
}

/// Extends the lease of a running hook job to `until_ms`.
pub async fn extend(documents: &Documents, id: &str, until_ms: u64) -> Result<(), StoreError> {
    documents
        .update(
            JOBS,
            &json!({"_id": id, "status": JobStatus::Running}),
            &json!({"$set": {"due_ms": until_ms}}),
            false,
            false,
        )
        .await
        .map(|_| ())
}

/// Puts a hook's job back in the queue for its next attempt at `due_ms`.
pub async fn retry(
    documents: &Documents,
    id: &str,
    attempt: u32,
    due_ms: u64,
    error: &str,
) -> Result<(), StoreError> {
    documents
        .update(
            JOBS,
            &json!({"_id": id}),
            &json!({"$set": {"status": JobStatus::Pending, "due_ms": due_ms, "hook.attempt": attempt, "error": error}}),
            false,
            false,
        )
        .await
        .map(|_| ())
}

/// Records how a claimed job ended.
pub async fn finish(
    documents: &Documents,
    id: &str,
    status: JobStatus,
    error: Option<&str>,
) -> Result<(), StoreError> {
    documents
        .update(
            JOBS,
            &json!({"_id": id}),
            &json!({"$set": {"status": status, "error": error, "ended_ms": now_ms()}}),
            false,
            false,
        )
        .await
        .map(|_| ())
}
