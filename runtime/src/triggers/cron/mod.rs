//! Cron triggers and one-off jobs, run by every node's [`CronRunner`].
//!
//! Each occurrence of a trigger is claimed in the platform database by
//! inserting a record keyed by (app, trigger, scheduled time): the node whose
//! insert succeeds runs it, so an occurrence runs once across every node
//! sharing the store. A lock per trigger, with a lease, keeps two runs of one
//! trigger from overlapping. Every run, attempt, skip and missed occurrence
//! is recorded in the run history.
//!
//! | file | job |
//! | --- | --- |
//! | `tick.rs` | the loop: due occurrences and due jobs, every tick |
//! | `missed.rs` | occurrences that fell while no node ran |
//! | `claims.rs` | claiming occurrences, trigger locks and their leases |
//! | `attempts.rs` | running an occurrence or a job: attempts, retries, records |
//! | `hooks.rs` | `after_write` hooks' jobs: attempts, retries, records |
//! | `entry.rs` | `scheduled-handler.run` as an entry point of the invocation core |
//! | `schedule.rs` | crontab expressions in a timezone |

mod attempts;
mod claims;
mod entry;
mod hooks;
mod missed;
mod schedule;
mod tick;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use serde::{Deserialize, Serialize};

pub use self::entry::{SCHEDULED_EXPORT, ScheduledEntry};
pub use self::schedule::Schedule;
use crate::invocation::{App, Function};
use crate::store::Documents;
use crate::store::platform::jobs::{self, JobStatus};
use crate::store::platform::runs::{RunRecord, RunStatus};

/// How often the runner looks for due occurrences.
const TICK: Duration = Duration::from_millis(200);
/// Why a run stopped when its node shut down.
const INTERRUPTED: &str = "interrupted: the server shut down while it ran";

/// Most retries a trigger may ask for.
const MAX_RETRIES: u32 = 10;
/// Longest first retry backoff a trigger may ask for.
const MAX_RETRY_BACKOFF: Duration = Duration::from_secs(24 * 3600);

/// What an occurrence does while the previous run of its trigger is running.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Overlap {
    /// It is recorded as skipped.
    #[default]
    Skip,
    /// It waits for the previous run, then runs.
    Queue,
    /// It runs alongside the previous run.
    Allow,
}

/// What a start does with occurrences that fell while no server ran.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Missed {
    /// Each is recorded as missed; none runs.
    #[default]
    Skip,
    /// Each is recorded as missed, and the latest runs once.
    RunLatest,
}

/// A `[[crons]]` entry of the manifest.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CronSpec {
    pub name: String,
    pub schedule: String,
    pub function: String,
    pub timezone: Option<String>,
    pub payload: Option<toml::Value>,
    #[serde(default)]
    pub overlap: Overlap,
    #[serde(default)]
    pub missed: Missed,
    #[serde(default)]
    pub retries: u32,
    #[serde(default = "default_backoff", with = "humantime_serde")]
    pub retry_backoff: Duration,
}

fn default_backoff() -> Duration {
    Duration::from_secs(1)
}

/// A cron trigger of a live version.
pub struct CronTrigger {
    pub name: String,
    pub expression: String,
    pub timezone: Option<String>,
    pub schedule: Schedule,
    pub function: Arc<Function>,
    /// JSON; `null` when the manifest gives none.
    pub payload: String,
    pub overlap: Overlap,
    pub missed: Missed,
    pub retries: u32,
    pub retry_backoff: Duration,
}

impl CronTrigger {
    /// Checks a manifest entry and builds the trigger (the schedule is
    /// parsed here, once). The error names the field, under `field`.
    pub fn new(spec: &CronSpec, field: &str, function: Arc<Function>) -> Result<Self, String> {
        let schedule = Schedule::parse(&spec.schedule, spec.timezone.as_deref())
            .map_err(|e| format!("{field} (`{}`): {e}", spec.name))?;
        if spec.retries > MAX_RETRIES {
            return Err(format!("{field}.retries: at most {MAX_RETRIES}"));
        }
        if spec.retry_backoff > MAX_RETRY_BACKOFF {
            return Err(format!("{field}.retry_backoff: at most 24h"));
        }
        let payload = serde_json::to_string(&spec.payload)
            .map_err(|e| format!("{field} (`{}`).payload: {e}", spec.name))?;
        Ok(CronTrigger {
            name: spec.name.clone(),
            expression: spec.schedule.clone(),
            timezone: spec.timezone.clone(),
            schedule,
            function,
            payload,
            overlap: spec.overlap,
            missed: spec.missed,
            retries: spec.retries,
            retry_backoff: spec.retry_backoff,
        })
    }
}

/// The cron triggers of a live version, with the version.
pub struct LiveCrons {
    pub app: Arc<App>,
    pub triggers: Arc<[Arc<CronTrigger>]>,
}

/// The live versions, from the server.
pub type CronSource = Arc<dyn Fn() -> Vec<LiveCrons> + Send + Sync>;

/// Why a manual run could not start.
#[derive(Debug, thiserror::Error)]
pub enum RunNowError {
    #[error("app `{app}` has no cron trigger `{trigger}`")]
    UnknownTrigger { app: String, trigger: String },
}

/// Runs every live cron trigger and every due one-off job on this node.
pub struct CronRunner {
    documents: Documents,
    node: String,
    source: CronSource,
    /// Every run and job this node started, so a shutdown can wait for them.
    tasks: tokio_util::task::TaskTracker,
    /// Runs in progress on this node, by record id: marked interrupted if
    /// the node stops before they end.
    running: std::sync::Mutex<HashMap<String, RunRecord>>,
}

impl CronRunner {
    pub fn new(documents: Documents, source: CronSource) -> Arc<Self> {
        let node = format!("{:012x}", rand::random::<u64>() & 0xffff_ffff_ffff);
        Arc::new(CronRunner {
            documents,
            node,
            source,
            tasks: tokio_util::task::TaskTracker::new(),
            running: std::sync::Mutex::new(HashMap::new()),
        })
    }

    /// Runs the loop until the task is aborted.
    pub fn spawn(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        tokio::spawn(self.clone().run())
    }

    pub fn documents(&self) -> &Documents {
        &self.documents
    }

    /// Starts no more runs, waits up to `grace` for those in progress, and
    /// records the ones still running as failed ("interrupted"), so no run
    /// or job is left `running` by a stopped node.
    pub async fn drain(&self, grace: Duration) {
        self.tasks.close();
        if tokio::time::timeout(grace, self.tasks.wait()).await.is_ok() {
            return;
        }
        let left: Vec<RunRecord> = self
            .running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain()
            .map(|(_, record)| record)
            .collect();
        for mut record in left {
            record.status = RunStatus::Failed;
            record.error = Some(INTERRUPTED.into());
            record.ended_ms = Some(to_ms(Utc::now()));
            self.save(&record).await;
            // An after_write hook's job keeps its lease: another run claims it.
            if record.job
                && !record.trigger.starts_with("after_write:")
                && let Err(err) = jobs::finish(
                    &self.documents,
                    &record.trigger,
                    JobStatus::Failed,
                    Some(INTERRUPTED),
                )
                .await
            {
                tracing::error!(job = %record.trigger, "cannot record an interrupted job: {err}");
            }
        }
    }

    /// Starts a run of `trigger` now, outside its schedule (the overlap
    /// policy still applies). Returns the scheduled time it runs under.
    pub fn run_now(self: &Arc<Self>, app: &str, trigger: &str) -> Result<u64, RunNowError> {
        let unknown = || RunNowError::UnknownTrigger {
            app: app.to_string(),
            trigger: trigger.to_string(),
        };
        let live = self.live(app).ok_or_else(unknown)?;
        let found = live
            .triggers
            .iter()
            .find(|t| t.name == trigger)
            .cloned()
            .ok_or_else(unknown)?;
        let now = Utc::now();
        self.tasks
            .spawn(self.clone().run_claimed(live.app, found, now, true));
        Ok(to_ms(now))
    }

    fn live(&self, app: &str) -> Option<LiveCrons> {
        (self.source)()
            .into_iter()
            .find(|live| *live.app.name == *app)
    }
}

pub fn to_ms(t: DateTime<Utc>) -> u64 {
    u64::try_from(t.timestamp_millis()).unwrap_or(0)
}

fn from_ms(ms: u64) -> Option<DateTime<Utc>> {
    Utc.timestamp_millis_opt(i64::try_from(ms).ok()?).single()
}
