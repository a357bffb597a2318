//! `kiln:platform/scheduler`: one-off runs of a function of the app, at a
//! time, with a payload. A job is a record in the platform database, written
//! before `schedule` returns; the cron trigger's scheduler claims due jobs
//! (one node wins each) and runs them once.

use serde_json::{Value, json};
use wasmtime::component::{HasData, Linker};

use super::bindings::kiln::platform::scheduler::{self as wit, Error, Host};
use crate::engine::InvocationState;
use crate::store::query::{new_id, parse_json};
use crate::store::{Documents, FindOptions, Namespace, PLATFORM_DATABASE, StoreError};

pub const JOBS: Namespace<'static> = Namespace {
    database: PLATFORM_DATABASE,
    collection: "jobs",
};

/// Largest payload of a job.
const MAX_PAYLOAD_BYTES: usize = 64 * 1024;
/// Jobs an app may have waiting.
const MAX_PENDING_PER_APP: u64 = 10_000;
/// How far ahead a job may be scheduled.
const MAX_AHEAD_MS: u64 = 366 * 24 * 3600 * 1000;

pub(super) fn add_to_linker(linker: &mut Linker<InvocationState>) -> wasmtime::Result<()> {
    wit::add_to_linker::<_, Scheduler>(linker, |state| SchedulerHost {
        documents: &state.context.services.documents,
        app: &state.context.app,
        functions: &state.context.app_functions,
        request_id: &state.context.request_id,
    })
}

struct Scheduler;

impl HasData for Scheduler {
    type Data<'a> = SchedulerHost<'a>;
}

struct SchedulerHost<'a> {
    documents: &'a Documents,
    app: &'a str,
    functions: &'a [std::sync::Arc<str>],
    request_id: &'a str,
}

fn unavailable(err: StoreError) -> Error {
    match err {
        StoreError::Unavailable(m) => Error::Unavailable(m),
        other => Error::Unavailable(other.to_string()),
    }
}

impl Host for SchedulerHost<'_> {
    async fn schedule(
        &mut self,
        function: String,
        at_ms: u64,
        payload: String,
    ) -> Result<String, Error> {
        if !self.functions.iter().any(|f| **f == *function) {
            return Err(Error::NotFound(format!(
                "app `{}` has no function `{}`",
                self.app,
                function.escape_debug()
            )));
        }
        if payload.len() > MAX_PAYLOAD_BYTES {
            return Err(Error::LimitExceeded(format!(
                "a job's payload is at most {MAX_PAYLOAD_BYTES} bytes"
            )));
        }
        let payload =
            parse_json(&payload).map_err(|e| Error::InvalidInput(format!("payload: {e}")))?;
        let now = now_ms();
        if at_ms > now.saturating_add(MAX_AHEAD_MS) {
            return Err(Error::InvalidInput(
                "a job is at most 366 days ahead".into(),
            ));
        }
        // A time in the past means now: it does not jump the queue.
        let due_ms = at_ms.max(now);
        // Count and insert under the app's lock, so concurrent calls on this
        // node cannot both take the last place.
        let lock = app_lock(self.app);
        let _held = lock.lock().await;
        let pending = self
            .documents
            .count(JOBS, &json!({"app": self.app, "status": "pending"}))
            .await
            .map_err(unavailable)?;
        if pending >= MAX_PENDING_PER_APP {
            return Err(Error::LimitExceeded(format!(
                "app `{}` already has {MAX_PENDING_PER_APP} jobs waiting",
                self.app
            )));
        }
        let id = new_id();
        let job = json!({
            "_id": id,
            "app": self.app,
            "function": function,
            "due_ms": due_ms,
            "payload": payload.to_string(),
            "status": "pending",
            "created_ms": now,
            "created_by": self.request_id,
        });
        self.documents
            .insert(JOBS, vec![job])
            .await
            .map_err(unavailable)?;
        Ok(id)
    }

    async fn cancel(&mut self, job_id: String) -> Result<(), Error> {
        let outcome = self
            .documents
            .update(
                JOBS,
                &json!({"_id": job_id, "app": self.app, "status": "pending"}),
                &json!({"$set": {"status": "cancelled", "ended_ms": now_ms()}}),
                false,
                false,
            )
            .await
            .map_err(unavailable)?;
        if outcome.matched == 0 {
            return Err(Error::NotFound(format!(
                "app `{}` has no waiting job `{}`",
                self.app,
                job_id.escape_debug()
            )));
        }
        Ok(())
    }
}

/// A job a node claimed.
#[derive(Debug, Clone)]
pub struct Job {
    pub id: String,
    pub app: String,
    pub function: String,
    pub due_ms: u64,
    pub payload: String,
}

/// One lock per app, held while a `schedule` counts and inserts.
fn app_lock(app: &str) -> std::sync::Arc<tokio::sync::Mutex<()>> {
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex, OnceLock};
    type Locks = Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>;
    static LOCKS: OnceLock<Locks> = OnceLock::new();
    LOCKS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .entry(app.to_string())
        .or_default()
        .clone()
}

/// Indexes the queue by app, status and due time: a pending count and an
/// app's due jobs read only that app's part of the index.
pub async fn create_index(documents: &Documents) -> Result<(), StoreError> {
    documents
        .create_index(JOBS, &json!({"app": 1, "status": 1, "due_ms": 1}), false)
        .await
}

/// Claims due jobs for `node`, at most `per_app` of each app in `apps`, so
/// one app's backlog never delays another app's jobs by more than a tick.
/// Each job is claimed by one node only (the update from `pending` to
/// `running` matches once).
pub async fn claim_due(
    documents: &Documents,
    node: &str,
    now: u64,
    apps: &[&str],
    per_app: u64,
) -> Result<Vec<Job>, StoreError> {
    let mut claimed = Vec::new();
    for app in apps {
        claimed.extend(claim_due_of(documents, node, now, app, per_app).await?);
    }
    Ok(claimed)
}

async fn claim_due_of(
    documents: &Documents,
    node: &str,
    now: u64,
    app: &str,
    limit: u64,
) -> Result<Vec<Job>, StoreError> {
    let page = documents
        .find(
            JOBS,
            &json!({"app": app, "status": "pending", "due_ms": {"$lte": now}}),
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
        let won = documents
            .find_one_and_update(
                JOBS,
                &json!({"_id": id, "status": "pending"}),
                &json!({"$set": {"status": "running", "node": node, "started_ms": now}}),
                true,
                false,
            )
            .await?;
        if let Some(job) = won.as_ref().and_then(job_of) {
            claimed.push(job);
        }
    }
    Ok(claimed)
}

/// Records how a claimed job ended.
pub async fn finish(
    documents: &Documents,
    id: &str,
    status: &str,
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

fn job_of(doc: &Value) -> Option<Job> {
    Some(Job {
        id: doc["_id"].as_str()?.to_string(),
        app: doc["app"].as_str()?.to_string(),
        function: doc["function"].as_str()?.to_string(),
        due_ms: doc["due_ms"].as_u64()?,
        payload: doc["payload"].as_str()?.to_string(),
    })
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
