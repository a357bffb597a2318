//! What starts an invocation: HTTP routes today, cron schedules next.

pub mod cron;
pub mod http;
