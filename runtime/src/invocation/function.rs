//! A deployed function and the app version it belongs to.

use std::sync::Arc;

use http::{HeaderName, HeaderValue};
use tokio::sync::Semaphore;
use tokio::time::Instant;

use super::logs::emit;
use super::quota::AppQuota;
use super::state::InvocationState;
use super::{EntryPoint, Invoked, Invoker, LoadError, Outcome, Tiered};
use crate::capabilities::auth::Identity;
use crate::capabilities::{Configured, Invocation};
use crate::engine::StoreTurn;
use crate::engine::is_pool_exhausted;
use crate::engine::lazy::Lazy;

/// One version of an app, serving: what every trigger is given.
pub struct App {
    pub name: Arc<str>,
    pub version: u64,
    /// Sorted by name.
    pub functions: Vec<Arc<Function>>,
}

impl App {
    pub fn function(&self, name: &str) -> Option<&Arc<Function>> {
        self.functions.iter().find(|f| *f.name == *name)
    }
}

/// A function of a deployed version: its component (loaded on first use),
/// its limits and its capabilities' configuration.
pub struct Function {
    pub app: Arc<str>,
    pub name: Arc<str>,
    pub limits: super::Limits,
    component: Lazy<Arc<Tiered>, LoadError>,
    capabilities: Configured,
    invoker: Arc<Invoker>,
    /// Permits for `limits.max_concurrency` instances at once.
    concurrency: Arc<Semaphore>,
    /// The app's share of the server, shared by all its functions.
    quota: Arc<AppQuota>,
}

impl Function {
    pub fn new(
        invoker: &Arc<Invoker>,
        app: Arc<str>,
        name: Arc<str>,
        digest: String,
        limits: super::Limits,
        capabilities: Configured,
        quota: Arc<AppQuota>,
    ) -> Self {
        let component = {
            let invoker = invoker.clone();
            Lazy::new(move || {
                let (invoker, digest) = (invoker.clone(), digest.clone());
                Box::pin(async move { invoker.load(&digest).await })
            })
        };
        Function {
            app,
            name,
            concurrency: Arc::new(Semaphore::new(limits.max_concurrency as usize)),
            limits,
            component,
            capabilities,
            invoker: invoker.clone(),
            quota,
        }
    }

    /// Runs one invocation of `entry`: loads the component if needed, waits
    /// for a slot of the function and of its app, instantiates into a fresh
    /// store and calls the export, all within the function's timeout; then
    /// writes the guest's output to the server log within the app's allowance.
    /// `trigger_headers` are the headers the trigger added to the input
    /// (outbound requests drop them); `identity` is the caller the trigger
    /// verified.
    pub async fn invoke<E: EntryPoint>(
        &self,
        request_id: &Arc<str>,
        trigger_headers: Vec<(HeaderName, HeaderValue)>,
        identity: Option<Identity>,
        entry: E,
    ) -> Invoked<E::Output> {
        let deadline = Instant::now() + self.limits.timeout;
        let unavailable = |message| Invoked::before_the_guest(Outcome::Unavailable(message));
        let loaded = match self.component.get().await {
            Ok(tiered) => tiered.current(),
            Err(err) => {
                tracing::error!(%request_id, app = %self.app, function = %self.name, "cannot load the function: {err}");
                return unavailable(format!("the function could not be loaded: {err}"));
            }
        };
        let Some(resolved) = loaded.entry::<E>() else {
            tracing::error!(%request_id, app = %self.app, function = %self.name, "the function does not export `{}`", E::EXPORT);
            return unavailable(format!("the function does not export `{}`", E::EXPORT));
        };
        let admission = match self
            .quota
            .admit(&self.concurrency, self.limits.max_concurrency, deadline)
            .await
        {
            Ok(admission) => admission,
            Err(overloaded) => return Invoked::before_the_guest(Outcome::Overloaded(overloaded)),
        };
        let turn = StoreTurn::new(self.quota.turns());
        let invocation = Invocation {
            app: &self.app,
            function: &self.name,
            request_id,
            trigger_headers: &trigger_headers,
            identity: identity.as_ref(),
            turn: &turn,
        };
        let state = InvocationState::new(&self.limits, |wasi| {
            self.invoker
                .capabilities()
                .prepare(&self.capabilities, &invocation, wasi)
        });
        let mut store = loaded.engine.new_store(state, turn);
        let result = tokio::time::timeout_at(deadline, entry.call(&resolved, &mut store)).await;
        drop(admission);
        let (stdout, stdout_dropped) = store.data().stdout.take();
        let (stderr, stderr_dropped) = store.data().stderr.take();
        for (stream, text, dropped) in [
            ("stdout", &stdout, stdout_dropped),
            ("stderr", &stderr, stderr_dropped),
        ] {
            emit(self, &self.quota, request_id, stream, text, dropped);
        }
        let outcome = match result {
            Ok(Ok(output)) => Outcome::Returned(output),
            Ok(Err(err)) if is_pool_exhausted(&err) => {
                Outcome::Overloaded(super::Overloaded::Server)
            }
            // A guest refused memory usually traps soon after (Rust aborts
            // on a failed allocation): say which limit it reached.
            Ok(Err(trap)) if store.data().memory_refused() => {
                Outcome::Trapped(trap.context(format!(
                    "the function reached its memory limit (limits.memory_mb = {})",
                    self.limits.memory_mb
                )))
            }
            Ok(Err(trap)) => Outcome::Trapped(trap),
            Err(_) => Outcome::TimedOut(self.limits.timeout),
        };
        Invoked {
            outcome,
            stdout,
            stderr,
        }
    }
}
