//! What starts an invocation: HTTP routes, cron schedules and one-off jobs.
//! Each trigger translates its input into an entry point of the invocation
//! core and its outcome back into its own answer.

pub mod cron;
pub mod http;
