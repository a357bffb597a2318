//! One-off jobs: run a function of this app later, once, with a payload.
//! The job is stored before `schedule` returns and survives restarts; the
//! function must export a scheduled handler (see [`crate::scheduled`]).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::bindings::kiln::platform::scheduler as wit;

pub use wit::Error;

/// Schedules `function` to run at `at` with `payload`; returns the job id.
pub fn schedule_at(
    function: &str,
    at: SystemTime,
    payload: &impl Serialize,
) -> Result<String, Error> {
    let at_ms = at
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let payload = serde_json::to_string(payload).map_err(|e| Error::InvalidInput(e.to_string()))?;
    wit::schedule(function, at_ms, &payload)
}

/// Schedules `function` to run after `delay`; returns the job id.
pub fn schedule_in(
    function: &str,
    delay: Duration,
    payload: &impl Serialize,
) -> Result<String, Error> {
    schedule_at(function, SystemTime::now() + delay, payload)
}

/// Cancels a job that has not started.
pub fn cancel(job_id: &str) -> Result<(), Error> {
    wit::cancel(job_id)
}
