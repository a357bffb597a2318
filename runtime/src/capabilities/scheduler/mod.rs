//! `kiln:platform/scheduler`: one-off runs of a function of the app, at a
//! time, with a payload. A job is a record in the platform database
//! ([`crate::store::platform::jobs`]), written before `schedule` returns;
//! the cron trigger claims due jobs (one node wins each) and runs them once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use wasmtime::component::{HasSelf, Linker};
use wasmtime_wasi::WasiCtxBuilder;

use super::bindings::kiln::platform::scheduler::{self as wit, Error, Host};
use super::{
    AppManifest, Backends, Capability, CapabilityView, ConfigureError, FunctionManifest, Instances,
    Invocation, Pick, instance,
};
use crate::store::Documents;
use crate::store::platform::jobs::{self, Job, JobStatus};
use crate::store::platform::now_ms;
use crate::store::query::{new_id, parse_json};

/// Largest payload of a job.
const MAX_PAYLOAD_BYTES: usize = 64 * 1024;
/// Jobs an app may have waiting.
const MAX_PENDING_PER_APP: u64 = 10_000;
/// How far ahead a job may be scheduled.
const MAX_AHEAD_MS: u64 = 366 * 24 * 3600 * 1000;

type AppLocks = Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>;

pub struct Scheduler {
    documents: Documents,
    /// One lock per app, held while a `schedule` counts and inserts, so
    /// concurrent calls on this node cannot both take the last place.
    app_locks: Arc<AppLocks>,
}

/// What a function's invocations share: the app and its functions.
pub struct AppJobs {
    app: Arc<str>,
    functions: Arc<[Arc<str>]>,
}

/// The queue as one invocation sees it: its app's jobs only.
pub struct JobQueue {
    documents: Documents,
    app_locks: Arc<AppLocks>,
    jobs: Arc<AppJobs>,
    request_id: Arc<str>,
}

impl Capability for Scheduler {
    type App = Arc<AppJobs>;
    type Configured = Arc<AppJobs>;
    type Instance = JobQueue;

    fn init(backends: &Backends) -> Self {
        Scheduler {
            documents: backends.documents.clone(),
            app_locks: Arc::default(),
        }
    }

    fn link<T: CapabilityView>(linker: &mut Linker<T>) -> wasmtime::Result<()>
    where
        Instances: Pick<Self>,
    {
        wit::add_to_linker::<T, HasSelf<JobQueue>>(linker, |t| instance::<Scheduler, T>(t))
    }

    fn configure_app(&self, app: &AppManifest<'_>) -> Result<Arc<AppJobs>, ConfigureError> {
        Ok(Arc::new(AppJobs {
            app: app.app.into(),
            functions: app.app_functions.clone(),
        }))
    }

    fn configure(
        &self,
        jobs: &Arc<AppJobs>,
        _: &FunctionManifest<'_>,
    ) -> Result<Arc<AppJobs>, ConfigureError> {
        Ok(jobs.clone())
    }

    fn prepare(
        &self,
        configured: &Arc<AppJobs>,
        invocation: &Invocation<'_>,
        _: &mut WasiCtxBuilder,
    ) -> JobQueue {
        JobQueue {
            documents: self.documents.clone(),
            app_locks: self.app_locks.clone(),
            jobs: configured.clone(),
            request_id: invocation.request_id.clone(),
        }
    }
}

impl JobQueue {
    fn app_lock(&self) -> Arc<tokio::sync::Mutex<()>> {
        self.app_locks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(self.jobs.app.to_string())
            .or_default()
            .clone()
    }
}

impl Host for JobQueue {
    async fn schedule(
        &mut self,
        function: String,
        at_ms: u64,
        payload: String,
    ) -> Result<String, Error> {
        let app = &*self.jobs.app;
        if !self.jobs.functions.iter().any(|f| **f == *function) {
            return Err(Error::NotFound(format!(
                "app `{app}` has no function `{}`",
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
        let lock = self.app_lock();
        let _held = lock.lock().await;
        if jobs::count_pending(&self.documents, app).await? >= MAX_PENDING_PER_APP {
            return Err(Error::LimitExceeded(format!(
                "app `{app}` already has {MAX_PENDING_PER_APP} jobs waiting"
            )));
        }
        let job = Job {
            id: new_id(),
            app: app.to_string(),
            function,
            // A time in the past means now: it does not jump the queue.
            due_ms: at_ms.max(now),
            payload: payload.to_string(),
            status: JobStatus::Pending,
            created_ms: now,
            created_by: self.request_id.to_string(),
            node: None,
            started_ms: None,
            ended_ms: None,
            error: None,
            hook: None,
        };
        jobs::insert(&self.documents, &job).await?;
        Ok(job.id)
    }

    async fn cancel(&mut self, job_id: String) -> Result<(), Error> {
        if !jobs::cancel(&self.documents, &self.jobs.app, &job_id).await? {
            return Err(Error::NotFound(format!(
                "app `{}` has no waiting job `{}`",
                self.jobs.app,
                job_id.escape_debug()
            )));
        }
        Ok(())
    }
}
