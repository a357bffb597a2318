//! `after_write` hooks, run as jobs: each attempt asks the hook's function
//! through its HTTP handler (`kiln-trigger: after-write`), is recorded in
//! the run history, and is retried with doubling backoff up to the
//! collection's `retries`.

use std::sync::Arc;

use chrono::Utc;
use serde_json::Value;

use super::{CronRunner, to_ms};
use crate::store::app_namespace;
use crate::store::platform::jobs::{self, HookJob, Job, JobStatus};
use crate::store::platform::runs::{RunRecord, RunStatus};
use crate::triggers::http::ask::ask;

/// Extra lease a running hook holds past its function's timeout.
const LEASE_MARGIN_MS: u64 = 5_000;

impl CronRunner {
    /// Runs one attempt of a claimed hook job.
    pub(super) async fn run_hook(self: Arc<Self>, job: Job, hook: HookJob) {
        let started = Utc::now();
        let mut record = RunRecord {
            id: format!("{}|{}|attempt{}", job.app, job.id, hook.attempt),
            app: job.app.clone(),
            trigger: format!("after_write:{}", hook.collection),
            function: job.function.clone(),
            scheduled_ms: job.created_ms,
            started_ms: Some(to_ms(started)),
            ended_ms: None,
            status: RunStatus::Running,
            attempt: hook.attempt,
            node: self.node.clone(),
            error: None,
            logs: String::new(),
            manual: false,
            job: true,
        };
        let event: Value = serde_json::from_str(&job.payload).unwrap_or(Value::Null);
        if !self.write_happened(&job, &hook, &event).await {
            record.status = RunStatus::Skipped;
            record.error = Some("the write never committed (the server stopped before it)".into());
            record.ended_ms = Some(to_ms(Utc::now()));
            self.save(&record).await;
            self.finish(&job, JobStatus::Cancelled, record.error.as_deref())
                .await;
            return;
        }
        let found = self.live(&job.app).and_then(|live| {
            let function = live.app.function(&job.function)?.clone();
            Some((live.app, function))
        });
        let Some((app, function)) = found else {
            record.status = RunStatus::Failed;
            record.error = Some(format!(
                "app `{}` has no function `{}` any more",
                job.app, job.function
            ));
            record.ended_ms = Some(to_ms(Utc::now()));
            self.save(&record).await;
            self.finish(&job, JobStatus::Failed, record.error.as_deref())
                .await;
            return;
        };
        let lease =
            to_ms(Utc::now()) + function.limits.timeout.as_millis() as u64 + LEASE_MARGIN_MS;
        if let Err(err) = jobs::extend(&self.documents, &job.id, lease).await {
            tracing::warn!(job = %job.id, "cannot extend an after_write job's lease: {err}");
        }
        self.save(&record).await;
        let request_id: Arc<str> = format!("hook-{}-{}", job.id, hook.attempt).into();
        let answer = ask(
            &app,
            &job.function,
            "after-write",
            &event,
            None,
            &request_id,
        )
        .await;
        record.ended_ms = Some(to_ms(Utc::now()));
        match answer {
            Ok(_) => {
                record.status = RunStatus::Succeeded;
                self.save(&record).await;
                self.finish(&job, JobStatus::Succeeded, None).await;
            }
            Err(err) => {
                let error = err.to_string();
                record.status = RunStatus::Failed;
                record.error = Some(error.clone());
                self.save(&record).await;
                if hook.attempt > hook.retries {
                    self.finish(&job, JobStatus::Failed, Some(&error)).await;
                    return;
                }
                let backoff = hook
                    .backoff_ms
                    .saturating_mul(2u64.saturating_pow(hook.attempt - 1));
                let due = to_ms(Utc::now()).saturating_add(backoff);
                if let Err(err) =
                    jobs::retry(&self.documents, &job.id, hook.attempt + 1, due, &error).await
                {
                    tracing::error!(job = %job.id, "cannot queue an after_write retry: {err}");
                }
            }
        }
    }

    /// Whether the job's write committed: it may not have, if its node
    /// stopped between writing the job and the write. The document still
    /// being exactly as before the write means it did not.
    async fn write_happened(&self, job: &Job, hook: &HookJob, event: &Value) -> bool {
        let (before, after) = (&event["before"], &event["after"]);
        if before == after {
            return true;
        }
        let Ok(ns) = app_namespace(&job.app, &hook.collection) else {
            return false;
        };
        match self.documents.get(ns, &hook.document).await {
            Ok(current) => current.as_ref().unwrap_or(&Value::Null) != before,
            // Unknown: run it (at least once).
            Err(_) => true,
        }
    }

    async fn finish(&self, job: &Job, status: JobStatus, error: Option<&str>) {
        if let Err(err) = jobs::finish(&self.documents, &job.id, status, error).await {
            tracing::error!(job = %job.id, "cannot record how an after_write job ended: {err}");
        }
    }
}
