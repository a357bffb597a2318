//! Scheduled functions: what a cron trigger (or a one-off job) calls.
//!
//! ```ignore
//! #[derive(serde::Deserialize)]
//! struct Cleanup { days: u32 }
//!
//! fn run(job: kiln_sdk::scheduled::Run<Cleanup>) -> Result<(), String> {
//!     println!("{} due at {} ms", job.trigger, job.scheduled_ms);
//!     Ok(())
//! }
//!
//! kiln_sdk::scheduled_function!(run);
//! ```

use serde::de::DeserializeOwned;

use crate::scheduled_bindings::exports::kiln::platform::scheduled_handler::Invocation;

/// One run of a trigger, with its payload decoded.
#[derive(Debug, Clone)]
pub struct Run<P> {
    /// The trigger's name.
    pub trigger: String,
    /// When the occurrence was due, in milliseconds since the Unix epoch.
    pub scheduled_ms: u64,
    /// When this run started, in milliseconds since the Unix epoch.
    pub started_ms: u64,
    /// The trigger's payload (`()` or `serde_json::Value` when there is none).
    pub payload: P,
}

#[doc(hidden)]
pub fn dispatch<P: DeserializeOwned>(
    invocation: Invocation,
    handler: impl FnOnce(Run<P>) -> Result<(), String>,
) -> Result<(), String> {
    let payload = serde_json::from_str(&invocation.payload)
        .map_err(|e| format!("the payload does not fit the handler's type: {e}"))?;
    handler(Run {
        trigger: invocation.trigger,
        scheduled_ms: invocation.scheduled_ms,
        started_ms: invocation.started_ms,
        payload,
    })
}

/// Exports `fn(Run<P>) -> Result<(), String>` as the component's scheduled
/// handler. An `Err` (or a panic) fails the run, which the trigger may retry.
#[macro_export]
macro_rules! scheduled_function {
    ($handler:path) => {
        struct __KilnScheduledFunction;
        impl $crate::scheduled_bindings::exports::kiln::platform::scheduled_handler::Guest
            for __KilnScheduledFunction
        {
            fn run(
                invocation: $crate::scheduled_bindings::exports::kiln::platform::scheduled_handler::Invocation,
            ) -> Result<(), String> {
                $crate::scheduled::dispatch(invocation, $handler)
            }
        }
        $crate::scheduled_bindings::__export_scheduled_function!(__KilnScheduledFunction with_types_in $crate::scheduled_bindings);
    };
}
