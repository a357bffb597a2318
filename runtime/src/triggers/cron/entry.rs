//! `kiln:platform/scheduled-handler.run` as an entry point of the
//! invocation core, and how one attempt's outcome reads in a run record.

use std::sync::Arc;

use chrono::Utc;
use wasmtime::Store;
use wasmtime::component::InstancePre;

use super::to_ms;
use crate::invocation::{EntryPoint, Function, InvocationState, Outcome};
use crate::store::platform::runs::{RunRecord, RunStatus, bounded_logs};

mod bindings {
    wasmtime::component::bindgen!({
        path: "../wit",
        inline: "
            package kiln:host;
            world scheduled-entry {
                export kiln:platform/scheduled-handler@0.1.0;
            }
        ",
        world: "kiln:host/scheduled-entry",
        exports: { default: async },
    });
}

use bindings::ScheduledEntryPre;
use bindings::exports::kiln::platform::scheduled_handler::Invocation;

/// The export of scheduled functions.
pub const SCHEDULED_EXPORT: &str = "kiln:platform/scheduled-handler@0.1.0";

/// One occurrence of a trigger, or one job, for the guest.
pub struct ScheduledEntry(Invocation);

impl ScheduledEntry {
    /// `trigger` is the trigger's name, or the job's id.
    pub fn new(trigger: &str, scheduled_ms: u64, started_ms: u64, payload: &str) -> Self {
        ScheduledEntry(Invocation {
            trigger: trigger.to_string(),
            scheduled_ms,
            started_ms,
            payload: payload.to_string(),
        })
    }
}

impl EntryPoint for ScheduledEntry {
    const EXPORT: &'static str = SCHEDULED_EXPORT;
    type Resolved = ScheduledEntryPre<InvocationState>;
    type Output = Result<(), String>;

    fn resolve(pre: &InstancePre<InvocationState>) -> Option<Self::Resolved> {
        ScheduledEntryPre::new(pre.clone()).ok()
    }

    async fn call(
        self,
        resolved: &Self::Resolved,
        store: &mut Store<InvocationState>,
    ) -> wasmtime::Result<Result<(), String>> {
        let instance = resolved.instantiate_async(&mut *store).await?;
        instance
            .kiln_platform_scheduled_handler()
            .call_run(&mut *store, &self.0)
            .await
    }
}

/// How one attempt ended, as its run record shows it.
pub struct Attempt {
    status: RunStatus,
    error: Option<String>,
    logs: String,
}

impl Attempt {
    /// Runs `entry` through the invocation core.
    pub async fn run(function: &Function, run_id: &str, entry: ScheduledEntry) -> Attempt {
        let request_id: Arc<str> = run_id.into();
        let invoked = function.invoke(&request_id, Vec::new(), None, entry).await;
        let logs = bounded_logs(&invoked.stdout, &invoked.stderr);
        let (status, error) = match invoked.outcome {
            Outcome::Returned(Ok(())) => (RunStatus::Succeeded, None),
            Outcome::Returned(Err(message)) => (RunStatus::Failed, Some(message)),
            Outcome::Unavailable(message) => (RunStatus::Failed, Some(message)),
            Outcome::Overloaded(overloaded @ crate::invocation::Overloaded::Server) => {
                (RunStatus::Failed, Some(overloaded.to_string()))
            }
            Outcome::Overloaded(overloaded) => (RunStatus::TimedOut, Some(overloaded.to_string())),
            Outcome::Trapped(trap) => (
                RunStatus::Failed,
                Some(format!("the function trapped: {trap:#}")),
            ),
            Outcome::TimedOut(timeout) => (
                RunStatus::TimedOut,
                Some(format!("the function did not finish within {timeout:?}")),
            ),
        };
        Attempt {
            status,
            error,
            logs,
        }
    }

    pub fn write_to(self, record: &mut RunRecord) {
        record.status = self.status;
        record.error = self.error;
        record.logs = self.logs;
        record.ended_ms = Some(to_ms(Utc::now()));
    }
}
