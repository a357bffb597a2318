//! One scheduled invocation: a fresh instance, the guest's
//! `scheduled-handler.run`, the function's limits.

use tokio::time::Instant;
use wasmtime::component::{ComponentType, Lower};

use super::CronApp;
use super::runs::{RunStatus, bounded_logs};
use crate::engine::function::Function;
use crate::engine::logs::emit;
use crate::engine::{Engine, is_pool_exhausted};

/// `kiln:platform/scheduled-handler.invocation`.
#[derive(ComponentType, Lower, Clone, Debug)]
#[component(record)]
pub struct Invocation {
    pub trigger: String,
    #[component(name = "scheduled-ms")]
    pub scheduled_ms: u64,
    #[component(name = "started-ms")]
    pub started_ms: u64,
    pub payload: String,
}

/// How one attempt ended.
pub struct Outcome {
    pub status: RunStatus,
    pub error: Option<String>,
    pub logs: String,
}

impl Outcome {
    fn failed(error: String) -> Self {
        Outcome {
            status: RunStatus::Failed,
            error: Some(error),
            logs: String::new(),
        }
    }
}

pub async fn invoke(
    engine: &Engine,
    app: &CronApp,
    function: &Function,
    invocation: Invocation,
    request_id: &str,
) -> Outcome {
    let loaded = match function.component.get().await {
        Ok(loaded) => loaded,
        Err(message) => {
            return Outcome::failed(format!("the function could not be loaded: {message}"));
        }
    };
    let Some(run) = loaded.scheduled else {
        return Outcome::failed("the function exports no scheduled handler".into());
    };
    let limits = function.limits;
    let deadline = Instant::now() + limits.timeout;
    let _admission = match function.admit(deadline).await {
        Ok(admission) => admission,
        Err(overloaded) => {
            return Outcome {
                status: RunStatus::TimedOut,
                error: Some(overloaded.to_string()),
                logs: String::new(),
            };
        }
    };
    let mut store = engine.new_store(function.invocation_context(
        request_id,
        &app.app,
        &app.function_names,
        &app.services,
    ));
    let result = tokio::time::timeout_at(deadline, async {
        let instance = loaded.pre.instantiate_async(&mut store).await?;
        let func =
            instance.get_typed_func::<(Invocation,), (Result<(), String>,)>(&mut store, &run)?;
        let (result,) = func.call_async(&mut store, (invocation,)).await?;
        Ok::<_, wasmtime::Error>(result)
    })
    .await;
    let (stdout, stdout_dropped) = store.data().stdout.take();
    let (stderr, stderr_dropped) = store.data().stderr.take();
    let ctx = &store.data().context;
    emit(ctx, &function.app_quota, "stdout", &stdout, stdout_dropped);
    emit(ctx, &function.app_quota, "stderr", &stderr, stderr_dropped);
    let logs = bounded_logs(&stdout, &stderr);
    let (status, error) = match result {
        Ok(Ok(Ok(()))) => (RunStatus::Succeeded, None),
        Ok(Ok(Err(message))) => (RunStatus::Failed, Some(message)),
        Ok(Err(trap)) if is_pool_exhausted(&trap) => (
            RunStatus::Failed,
            Some("the server had no free instance slot".into()),
        ),
        Ok(Err(trap)) => (
            RunStatus::Failed,
            Some(format!("the function trapped: {trap:#}")),
        ),
        Err(_) => (
            RunStatus::TimedOut,
            Some(format!(
                "the function did not finish within {:?}",
                limits.timeout
            )),
        ),
    };
    Outcome {
        status,
        error,
        logs,
    }
}
