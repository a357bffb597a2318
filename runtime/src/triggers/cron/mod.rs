//! Cron triggers and the scheduler that fires them.
//!
//! Every node runs a scheduler over the live versions of every app. Each
//! occurrence of a trigger is claimed in the platform database by inserting
//! a record keyed by (app, trigger, scheduled time): the node whose insert
//! succeeds runs it, so an occurrence runs once across every node sharing
//! the store. A lock per trigger, with a lease, keeps two runs of one trigger
//! from overlapping. Every run, attempt, skip and missed occurrence is
//! recorded in the run history.

mod invoke;
pub mod runs;
mod schedule;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;

use self::invoke::{Invocation, invoke};
use self::runs::{RunRecord, RunStatus};
pub use self::schedule::Schedule;
use crate::capabilities::Services;
use crate::capabilities::scheduler::{self as jobs, Job};
use crate::engine::Engine;
use crate::engine::function::Function;
use crate::store::{Documents, Namespace, PLATFORM_DATABASE, StoreError};

/// How often the scheduler looks for due occurrences.
const TICK: Duration = Duration::from_millis(200);
/// An occurrence a node first sees less than this late is run, not missed.
const ON_TIME: Duration = Duration::from_secs(2);
/// Missed occurrences recorded one by one; earlier ones get one record.
const MISSED_RECORDS: usize = 100;
/// Missed occurrences counted one by one after an outage; past this the
/// count is a lower bound.
const MISSED_COUNTED: usize = 100_000;
/// Why a run stopped when its node shut down.
const INTERRUPTED: &str = "interrupted: the server shut down while it ran";
/// Why a missed occurrence did not run.
const MISSED: &str = "no Kiln server was running when it was due";
/// Due one-off jobs of one app a node claims per tick.
const JOBS_PER_APP_PER_TICK: u64 = 20;
/// A run's lock outlives its timeout by this much, then another may start.
const LOCK_MARGIN: Duration = Duration::from_secs(10);

/// Occurrences claimed, one record each (the claim is the insert).
const CLAIMS: Namespace<'static> = Namespace {
    database: PLATFORM_DATABASE,
    collection: "cron_claims",
};
/// Per trigger: the latest occurrence any node has claimed.
const STATE: Namespace<'static> = Namespace {
    database: PLATFORM_DATABASE,
    collection: "cron_state",
};
/// Per trigger: who runs it now, until when.
const LOCKS: Namespace<'static> = Namespace {
    database: PLATFORM_DATABASE,
    collection: "cron_locks",
};

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

/// The cron side of one deployment of an app.
pub struct CronApp {
    pub app: Arc<str>,
    pub services: Services,
    pub triggers: Vec<Arc<CronTrigger>>,
    /// Every function of the version, for one-off jobs.
    pub functions: Vec<Arc<Function>>,
    pub function_names: Arc<[Arc<str>]>,
}

/// The live cron triggers, from the server.
pub type CronSource = Arc<dyn Fn() -> Vec<Arc<CronApp>> + Send + Sync>;

/// Why a manual run could not start.
#[derive(Debug, thiserror::Error)]
pub enum RunNowError {
    #[error("app `{app}` has no cron trigger `{trigger}`")]
    UnknownTrigger { app: String, trigger: String },
}

pub struct Scheduler {
    engine: Arc<Engine>,
    documents: Documents,
    node: String,
    source: CronSource,
    /// Every run and job this node started, so a shutdown can wait for them.
    tasks: tokio_util::task::TaskTracker,
    /// Runs in progress on this node, by record id: marked interrupted if
    /// the node stops before they end.
    running: std::sync::Mutex<HashMap<String, RunRecord>>,
}

/// A trigger as the loop tracks it: its address (the loop holds the `Arc`,
/// so the address is not reused meanwhile). Every deploy makes new triggers,
/// which start from the stored state of their name: a changed schedule takes
/// effect at its next occurrence, and nothing runs twice.
type TriggerKey = usize;

impl Scheduler {
    pub fn new(engine: Arc<Engine>, documents: Documents, source: CronSource) -> Arc<Self> {
        let node = format!("{:012x}", rand::random::<u64>() & 0xffff_ffff_ffff);
        Arc::new(Scheduler {
            engine,
            documents,
            node,
            source,
            tasks: tokio_util::task::TaskTracker::new(),
            running: std::sync::Mutex::new(HashMap::new()),
        })
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
            if record.job
                && let Err(err) = jobs::finish(
                    &self.documents,
                    &record.trigger,
                    "failed",
                    Some(INTERRUPTED),
                )
                .await
            {
                tracing::error!(job = %record.trigger, "cannot record an interrupted job: {err}");
            }
        }
    }

    /// Runs the loop until the task is aborted.
    pub fn spawn(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        tokio::spawn(self.clone().run())
    }

    pub fn documents(&self) -> &Documents {
        &self.documents
    }

    async fn run(self: Arc<Self>) {
        if let Err(err) = runs::create_index(&self.documents).await {
            tracing::warn!("cannot index the run history: {err}");
        }
        if let Err(err) = jobs::create_index(&self.documents).await {
            tracing::warn!("cannot index the job queue: {err}");
        }
        let mut next: HashMap<TriggerKey, (Arc<CronTrigger>, DateTime<Utc>)> = HashMap::new();
        let mut live = HashSet::new();
        let mut ticks = tokio::time::interval(TICK);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            ticks.tick().await;
            let now = Utc::now();
            live.clear();
            let cron_apps = (self.source)();
            for app in &cron_apps {
                for trigger in &app.triggers {
                    let key = Arc::as_ptr(trigger) as usize;
                    live.insert(key);
                    let mut due = match next.get(&key) {
                        Some((_, due)) => *due,
                        None => match self.first_look(app, trigger, now).await {
                            Ok(due) => due,
                            Err(err) => {
                                tracing::warn!(app = %app.app, trigger = %trigger.name, "cron state unreadable: {err}");
                                continue;
                            }
                        },
                    };
                    while due <= now {
                        self.tasks.spawn(self.clone().occurrence(
                            app.clone(),
                            trigger.clone(),
                            due,
                        ));
                        match trigger.schedule.next_after(due) {
                            Some(after) => due = after,
                            None => break,
                        }
                    }
                    next.insert(key, (trigger.clone(), due));
                }
            }
            // A removed or changed trigger stops here; a running run finishes.
            next.retain(|key, _| live.contains(key));
            // Apps in a new order each tick, so none is always first.
            let mut apps: Vec<Arc<str>> = cron_apps.iter().map(|a| a.app.clone()).collect();
            if !apps.is_empty() {
                let turn = (to_ms(now) / TICK.as_millis() as u64) as usize % apps.len();
                apps.rotate_left(turn);
            }
            let apps: Vec<&str> = apps.iter().map(|a| &**a).collect();
            match jobs::claim_due(
                &self.documents,
                &self.node,
                to_ms(now),
                &apps,
                JOBS_PER_APP_PER_TICK,
            )
            .await
            {
                Ok(claimed) => {
                    for job in claimed {
                        self.tasks.spawn(self.clone().run_job(job));
                    }
                }
                Err(err) => tracing::warn!("cannot read the job queue: {err}"),
            }
        }
    }

    /// The first occurrence this node handles for `trigger`. Occurrences
    /// that fell while no node ran are recorded as missed (and the latest
    /// run, if the trigger asks).
    async fn first_look(
        self: &Arc<Self>,
        app: &Arc<CronApp>,
        trigger: &Arc<CronTrigger>,
        now: DateTime<Utc>,
    ) -> Result<DateTime<Utc>, StoreError> {
        let id = state_id(&app.app, &trigger.name);
        let schedule = format!(
            "{} {}",
            trigger.expression,
            trigger.timezone.as_deref().unwrap_or("UTC")
        );
        let state = self.documents.get(STATE, &id).await?;
        let last = state
            .as_ref()
            .filter(|doc| doc["schedule"] == schedule.as_str())
            .and_then(|doc| doc["last_ms"].as_u64())
            .and_then(from_ms);
        let on_time_from = now - chrono::Duration::from_std(ON_TIME).expect("small");
        let Some(last) = last else {
            // A new trigger, or a new schedule, starts now: nothing before
            // it was missed.
            self.documents
                .update(
                    STATE,
                    &json!({"_id": id}),
                    &json!({"$max": {"last_ms": to_ms(now)}, "$set": {"schedule": schedule}}),
                    true,
                    false,
                )
                .await?;
            return Ok(trigger.schedule.next_after(now).unwrap_or(far_future()));
        };
        let mut missed = std::collections::VecDeque::new();
        let mut count = 0usize;
        let mut at = last;
        while let Some(due) = trigger.schedule.next_after(at) {
            if due > on_time_from {
                break;
            }
            count += 1;
            missed.push_back(due);
            if missed.len() > MISSED_RECORDS {
                missed.pop_front();
            }
            at = due;
            // A long outage of a frequent trigger: count no further, and
            // skip ahead to the occurrences just before now.
            if count == MISSED_COUNTED {
                let resume = on_time_from - chrono::Duration::from_std(ON_TIME).expect("small");
                if resume > at {
                    at = resume;
                    missed.clear();
                }
            }
        }
        let missed: Vec<_> = missed.into();
        if let Some(&latest) = missed.last() {
            // The catch-up run takes the trigger's lock before this
            // trigger's on-time occurrences are started, so they see it.
            if trigger.missed == Missed::RunLatest
                && self.claim(&app.app, &trigger.name, latest).await
            {
                let error = MISSED.to_string();
                let record = self.record(
                    &app.app,
                    trigger,
                    latest,
                    1,
                    RunStatus::Missed,
                    Some(error),
                    false,
                );
                self.save(&record).await;
                if let Some(lock) = self.acquire(app, trigger, latest, false).await {
                    self.tasks.spawn(self.clone().attempts(
                        app.clone(),
                        trigger.clone(),
                        latest,
                        false,
                        lock,
                    ));
                }
            }
            self.tasks.spawn(self.clone().record_missed(
                app.clone(),
                trigger.clone(),
                missed,
                count,
            ));
        }
        Ok(trigger
            .schedule
            .next_after(at.max(last))
            .unwrap_or(far_future()))
    }

    async fn record_missed(
        self: Arc<Self>,
        app: Arc<CronApp>,
        trigger: Arc<CronTrigger>,
        missed: Vec<DateTime<Utc>>,
        count: usize,
    ) {
        let earlier = count - missed.len();
        for (i, due) in missed.iter().enumerate() {
            // A lost claim: another node recorded it (or `first_look` did, for a catch-up).
            if !self.claim(&app.app, &trigger.name, *due).await {
                continue;
            }
            let mut error = MISSED.to_string();
            if i == 0 && earlier > 0 {
                let at_least = if count >= MISSED_COUNTED {
                    "at least "
                } else {
                    ""
                };
                error.push_str(&format!(
                    " ({at_least}{earlier} earlier occurrences were missed too)"
                ));
            }
            self.save(&self.record(
                &app.app,
                &trigger,
                *due,
                1,
                RunStatus::Missed,
                Some(error),
                false,
            ))
            .await;
        }
    }

    /// Claims and runs one occurrence (if this node wins the claim).
    async fn occurrence(
        self: Arc<Self>,
        app: Arc<CronApp>,
        trigger: Arc<CronTrigger>,
        due: DateTime<Utc>,
    ) {
        if self.claim(&app.app, &trigger.name, due).await {
            self.run_claimed(app, trigger, due, false).await;
        }
    }

    /// Starts a run of `trigger` now, outside its schedule (the overlap
    /// policy still applies). Returns the scheduled time it runs under.
    pub fn run_now(self: &Arc<Self>, app: &str, trigger: &str) -> Result<u64, RunNowError> {
        let unknown = || RunNowError::UnknownTrigger {
            app: app.to_string(),
            trigger: trigger.to_string(),
        };
        let live = (self.source)()
            .into_iter()
            .find(|a| &*a.app == app)
            .ok_or_else(unknown)?;
        let found = live
            .triggers
            .iter()
            .find(|t| t.name == trigger)
            .cloned()
            .ok_or_else(unknown)?;
        let now = Utc::now();
        self.tasks
            .spawn(self.clone().run_claimed(live, found, now, true));
        Ok(to_ms(now))
    }

    /// Inserts the claim record of an occurrence: `true` when this node won it.
    async fn claim(&self, app: &str, trigger: &str, due: DateTime<Utc>) -> bool {
        let claim = json!({
            "_id": format!("{}|{}", state_id(app, trigger), to_ms(due)),
            "node": self.node,
            "claimed_ms": to_ms(Utc::now()),
        });
        match self.documents.insert(CLAIMS, vec![claim]).await {
            Ok(_) => {}
            Err(StoreError::Conflict(_)) => return false,
            Err(err) => {
                tracing::error!(
                    app,
                    trigger,
                    "cannot claim an occurrence, so it does not run: {err}"
                );
                return false;
            }
        }
        if let Err(err) = self.advance_state(&state_id(app, trigger), due).await {
            tracing::warn!(app, trigger, "cannot record the latest occurrence: {err}");
        }
        true
    }

    async fn advance_state(&self, id: &str, to: DateTime<Utc>) -> Result<(), StoreError> {
        self.documents
            .update(
                STATE,
                &json!({"_id": id}),
                &json!({"$max": {"last_ms": to_ms(to)}}),
                true,
                false,
            )
            .await
            .map(|_| ())
    }

    /// Runs a claimed occurrence: the overlap policy, then attempts with
    /// backoff, each recorded.
    async fn run_claimed(
        self: Arc<Self>,
        app: Arc<CronApp>,
        trigger: Arc<CronTrigger>,
        due: DateTime<Utc>,
        manual: bool,
    ) {
        if let Some(lock) = self.acquire(&app, &trigger, due, manual).await {
            self.attempts(app, trigger, due, manual, lock).await;
        }
    }

    /// Takes the trigger's lock for an occurrence, by its overlap policy:
    /// `None` when it does not run (recorded as skipped, or failed).
    async fn acquire(
        &self,
        app: &CronApp,
        trigger: &CronTrigger,
        due: DateTime<Utc>,
        manual: bool,
    ) -> Option<TriggerLock> {
        let lock = TriggerLock {
            id: state_id(&app.app, &trigger.name),
            holder: format!("{}|{}|{}", self.node, trigger.name, to_ms(due)),
            lease: trigger.function.limits.timeout + LOCK_MARGIN,
            held: trigger.overlap != Overlap::Allow,
        };
        if !lock.held {
            return Some(lock);
        }
        loop {
            match self.lock(&lock.id, &lock.holder, lock.lease).await {
                Ok(true) => return Some(lock),
                Ok(false) if trigger.overlap == Overlap::Queue => tokio::time::sleep(TICK).await,
                Ok(false) => {
                    let error = "the previous run of this trigger was still running".to_string();
                    let record = self.record(
                        &app.app,
                        trigger,
                        due,
                        1,
                        RunStatus::Skipped,
                        Some(error),
                        manual,
                    );
                    self.save(&record).await;
                    return None;
                }
                Err(err) => {
                    let error = format!("the platform database was unavailable: {err}");
                    let record = self.record(
                        &app.app,
                        trigger,
                        due,
                        1,
                        RunStatus::Failed,
                        Some(error),
                        manual,
                    );
                    self.save(&record).await;
                    return None;
                }
            }
        }
    }

    /// The attempts of an occurrence whose lock this node holds.
    async fn attempts(
        self: Arc<Self>,
        app: Arc<CronApp>,
        trigger: Arc<CronTrigger>,
        due: DateTime<Utc>,
        manual: bool,
        lock: TriggerLock,
    ) {
        let next_occurrence = trigger.schedule.next_after(due);
        let mut attempt = 1;
        loop {
            let started = Utc::now();
            let mut record = self.record(
                &app.app,
                &trigger,
                due,
                attempt,
                RunStatus::Running,
                None,
                manual,
            );
            record.started_ms = Some(to_ms(started));
            self.save(&record).await;
            let invocation = Invocation {
                trigger: trigger.name.clone(),
                scheduled_ms: to_ms(due),
                started_ms: to_ms(started),
                payload: trigger.payload.clone(),
            };
            let outcome = invoke(
                &self.engine,
                &app,
                &trigger.function,
                invocation,
                &record.id,
            )
            .await;
            record.status = outcome.status;
            record.error = outcome.error;
            record.logs = outcome.logs;
            record.ended_ms = Some(to_ms(Utc::now()));
            self.save(&record).await;
            if record.status == RunStatus::Succeeded || attempt > trigger.retries {
                break;
            }
            // Overflowing arithmetic (a stored trigger with a huge backoff)
            // ends the retries instead of panicking with the lock held.
            let Some((backoff, retry_at)) = trigger
                .retry_backoff
                .checked_mul(2u32.saturating_pow(attempt - 1))
                .and_then(|b| {
                    Some((
                        b,
                        Utc::now().checked_add_signed(chrono::Duration::from_std(b).ok()?)?,
                    ))
                })
            else {
                break;
            };
            // A retry never runs into the next occurrence.
            if next_occurrence.is_some_and(|next| retry_at >= next) {
                break;
            }
            if lock.held
                && !matches!(
                    self.lock(&lock.id, &lock.holder, lock.lease + backoff)
                        .await,
                    Ok(true)
                )
            {
                break;
            }
            tokio::time::sleep(backoff).await;
            attempt += 1;
        }
        if lock.held {
            self.unlock(&lock.id, &lock.holder).await;
        }
    }

    /// Runs a claimed one-off job once, on the live version of its app.
    async fn run_job(self: Arc<Self>, job: Job) {
        let due = from_ms(job.due_ms).unwrap_or_else(Utc::now);
        let started = Utc::now();
        let mut record = RunRecord {
            id: format!("{}|{}|job", job.app, job.id),
            app: job.app.clone(),
            trigger: job.id.clone(),
            function: job.function.clone(),
            scheduled_ms: job.due_ms,
            started_ms: Some(to_ms(started)),
            ended_ms: None,
            status: RunStatus::Running,
            attempt: 1,
            node: self.node.clone(),
            error: None,
            logs: String::new(),
            manual: false,
            job: true,
        };
        let live = (self.source)().into_iter().find(|a| *a.app == *job.app);
        let function = live
            .as_ref()
            .and_then(|app| app.functions.iter().find(|f| *f.name == *job.function));
        match (live.as_ref(), function) {
            (Some(app), Some(function)) => {
                self.save(&record).await;
                let invocation = Invocation {
                    trigger: job.id.clone(),
                    scheduled_ms: to_ms(due),
                    started_ms: to_ms(started),
                    payload: job.payload.clone(),
                };
                let outcome = invoke(&self.engine, app, function, invocation, &record.id).await;
                record.status = outcome.status;
                record.error = outcome.error;
                record.logs = outcome.logs;
            }
            _ => {
                record.status = RunStatus::Failed;
                record.error = Some(format!(
                    "app `{}` has no function `{}` any more",
                    job.app, job.function
                ));
            }
        }
        record.ended_ms = Some(to_ms(Utc::now()));
        self.save(&record).await;
        if let Err(err) = jobs::finish(
            &self.documents,
            &job.id,
            record.status.as_str(),
            record.error.as_deref(),
        )
        .await
        {
            tracing::error!(job = %job.id, "cannot record how a job ended: {err}");
        }
    }

    /// Takes (or renews) the trigger's lock until now + `lease`.
    async fn lock(&self, id: &str, holder: &str, lease: Duration) -> Result<bool, StoreError> {
        let now = to_ms(Utc::now());
        let until = now + lease.as_millis() as u64;
        let free_or_mine =
            json!({"_id": id, "$or": [{"until_ms": {"$lt": now}}, {"holder": holder}]});
        let set = json!({"$set": {"until_ms": until, "holder": holder, "node": self.node}});
        match self
            .documents
            .update(LOCKS, &free_or_mine, &set, true, false)
            .await
        {
            Ok(_) => Ok(true),
            // The lock exists and is held: the upsert's insert collided.
            Err(StoreError::Conflict(_)) => Ok(false),
            Err(err) => Err(err),
        }
    }

    async fn unlock(&self, id: &str, holder: &str) {
        let mine = json!({"_id": id, "holder": holder});
        let release = json!({"$set": {"until_ms": 0}});
        if let Err(err) = self
            .documents
            .update(LOCKS, &mine, &release, false, false)
            .await
        {
            tracing::warn!(
                lock = id,
                "cannot release a cron lock (it expires by itself): {err}"
            );
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn record(
        &self,
        app: &str,
        trigger: &CronTrigger,
        due: DateTime<Utc>,
        attempt: u32,
        status: RunStatus,
        error: Option<String>,
        manual: bool,
    ) -> RunRecord {
        let kind = match status {
            RunStatus::Skipped => "skipped".to_string(),
            RunStatus::Missed => "missed".to_string(),
            _ => format!("attempt{attempt}"),
        };
        let manual_tag = if manual { "|manual" } else { "" };
        RunRecord {
            id: format!(
                "{}|{}|{kind}{manual_tag}",
                state_id(app, &trigger.name),
                to_ms(due)
            ),
            app: app.to_string(),
            trigger: trigger.name.clone(),
            function: trigger.function.name.to_string(),
            scheduled_ms: to_ms(due),
            started_ms: None,
            ended_ms: None,
            status,
            attempt,
            node: self.node.clone(),
            error,
            logs: String::new(),
            manual,
            job: false,
        }
    }

    async fn save(&self, record: &RunRecord) {
        {
            let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
            if record.status == RunStatus::Running {
                running.insert(record.id.clone(), record.clone());
            } else {
                running.remove(&record.id);
            }
        }
        if let Err(err) = runs::save(&self.documents, record).await {
            tracing::error!(run = %record.id, status = record.status.as_str(), "cannot record a run: {err}");
        }
    }
}

/// A trigger's lock as one run holds it (or, with `overlap = "allow"`, does not).
struct TriggerLock {
    id: String,
    holder: String,
    lease: Duration,
    held: bool,
}

fn state_id(app: &str, trigger: &str) -> String {
    format!("{app}|{trigger}")
}

pub fn to_ms(t: DateTime<Utc>) -> u64 {
    u64::try_from(t.timestamp_millis()).unwrap_or(0)
}

fn from_ms(ms: u64) -> Option<DateTime<Utc>> {
    Utc.timestamp_millis_opt(i64::try_from(ms).ok()?).single()
}

fn far_future() -> DateTime<Utc> {
    DateTime::<Utc>::MAX_UTC
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::EngineSettings;
    use crate::store::StoreLimits;
    use crate::store::sqlite::SqliteStore;

    fn scheduler(documents: &Documents, cache: &std::path::Path) -> Arc<Scheduler> {
        let engine = Engine::new(
            &EngineSettings {
                cache_dir: cache.to_path_buf(),
                max_instances: 1,
                cache_key: b"test".to_vec(),
            },
            |_| Ok(()),
        )
        .unwrap();
        Scheduler::new(engine, documents.clone(), Arc::new(Vec::new))
    }

    #[tokio::test]
    async fn each_occurrence_has_one_winning_claim_among_schedulers() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("db"), Duration::from_secs(5)).unwrap();
        let documents = Documents::new(Arc::new(store), StoreLimits::default());
        let nodes: Vec<_> = (0..3).map(|_| scheduler(&documents, dir.path())).collect();
        let base = Utc::now();
        let mut claims = Vec::new();
        for second in 0..20 {
            let due = base + chrono::Duration::seconds(second);
            for node in &nodes {
                let node = node.clone();
                claims.push(tokio::spawn(async move {
                    (second, node.claim("app", "tick", due).await)
                }));
            }
        }
        let mut winners = [0; 20];
        for claim in claims {
            let (second, won) = claim.await.unwrap();
            winners[second as usize] += usize::from(won);
        }
        assert_eq!(winners, [1; 20]);
        let state = documents.get(STATE, "app|tick").await.unwrap().unwrap();
        assert_eq!(
            state["last_ms"],
            to_ms(base + chrono::Duration::seconds(19))
        );
    }

    #[tokio::test]
    async fn the_trigger_lock_has_one_holder_until_released_or_expired() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("db"), Duration::from_secs(5)).unwrap();
        let documents = Documents::new(Arc::new(store), StoreLimits::default());
        let a = scheduler(&documents, dir.path());
        let b = scheduler(&documents, dir.path());
        let long = Duration::from_secs(60);
        assert!(a.lock("app|tick", "run-a", long).await.unwrap());
        assert!(
            !b.lock("app|tick", "run-b", long).await.unwrap(),
            "held by a"
        );
        assert!(
            a.lock("app|tick", "run-a", long).await.unwrap(),
            "a renews its own"
        );
        a.unlock("app|tick", "run-a").await;
        assert!(
            b.lock("app|tick", "run-b", Duration::ZERO).await.unwrap(),
            "released"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
        assert!(
            a.lock("app|tick", "run-a", long).await.unwrap(),
            "b's lease expired"
        );
    }
}
