//! Running a claimed occurrence or job: attempts with backoff and the run
//! records that show them.

use std::sync::Arc;

use chrono::{DateTime, Utc};

use super::claims::TriggerLock;
use super::entry::{Attempt, ScheduledEntry};
use super::{CronRunner, CronTrigger, from_ms, to_ms};
use crate::invocation::App;
use crate::store::platform::cron::trigger_id;
use crate::store::platform::jobs::{self, Job, JobStatus};
use crate::store::platform::runs::{self, RunRecord, RunStatus};

/// One occurrence of a trigger, as its run records name it.
pub(super) struct Occurrence<'a> {
    pub app: &'a str,
    pub trigger: &'a CronTrigger,
    pub due: DateTime<Utc>,
    /// Started from the admin API.
    pub manual: bool,
}

impl<'a> Occurrence<'a> {
    pub fn new(app: &'a App, trigger: &'a CronTrigger, due: DateTime<Utc>, manual: bool) -> Self {
        Occurrence {
            app: &app.name,
            trigger,
            due,
            manual,
        }
    }
}

impl CronRunner {
    /// Claims and runs one occurrence (if this node wins the claim).
    pub(super) async fn occurrence(
        self: Arc<Self>,
        app: Arc<App>,
        trigger: Arc<CronTrigger>,
        due: DateTime<Utc>,
    ) {
        if self.claim(&app.name, &trigger.name, due).await {
            self.run_claimed(app, trigger, due, false).await;
        }
    }

    /// Runs a claimed occurrence: the overlap policy, then attempts with
    /// backoff, each recorded.
    pub(super) async fn run_claimed(
        self: Arc<Self>,
        app: Arc<App>,
        trigger: Arc<CronTrigger>,
        due: DateTime<Utc>,
        manual: bool,
    ) {
        let lock = self
            .acquire(&Occurrence::new(&app, &trigger, due, manual))
            .await;
        if let Some(lock) = lock {
            self.attempts(app, trigger, due, manual, lock).await;
        }
    }

    /// The attempts of an occurrence whose lock this node holds.
    pub(super) async fn attempts(
        self: Arc<Self>,
        app: Arc<App>,
        trigger: Arc<CronTrigger>,
        due: DateTime<Utc>,
        manual: bool,
        lock: TriggerLock,
    ) {
        let occurrence = Occurrence::new(&app, &trigger, due, manual);
        let next_occurrence = trigger.schedule.next_after(due);
        let mut attempt = 1;
        loop {
            let started = Utc::now();
            let mut record = self.record(&occurrence, attempt, RunStatus::Running, None);
            record.started_ms = Some(to_ms(started));
            self.save(&record).await;
            let entry =
                ScheduledEntry::new(&trigger.name, to_ms(due), to_ms(started), &trigger.payload);
            let ended = Attempt::run(&trigger.function, &record.id, entry).await;
            ended.write_to(&mut record);
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
    pub(super) async fn run_job(self: Arc<Self>, job: Job) {
        if let Some(hook) = job.hook.clone() {
            return self.run_hook(job, hook).await;
        }
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
        let live = self.live(&job.app);
        let function = live
            .as_ref()
            .and_then(|live| live.app.function(&job.function).cloned());
        match function {
            Some(function) => {
                self.save(&record).await;
                let entry = ScheduledEntry::new(&job.id, to_ms(due), to_ms(started), &job.payload);
                Attempt::run(&function, &record.id, entry)
                    .await
                    .write_to(&mut record);
            }
            None => {
                record.status = RunStatus::Failed;
                record.error = Some(format!(
                    "app `{}` has no function `{}` any more",
                    job.app, job.function
                ));
            }
        }
        record.ended_ms = Some(to_ms(Utc::now()));
        self.save(&record).await;
        let status = match record.status {
            RunStatus::Succeeded => JobStatus::Succeeded,
            RunStatus::TimedOut => JobStatus::TimedOut,
            _ => JobStatus::Failed,
        };
        if let Err(err) =
            jobs::finish(&self.documents, &job.id, status, record.error.as_deref()).await
        {
            tracing::error!(job = %job.id, "cannot record how a job ended: {err}");
        }
    }

    /// The record of one attempt (or skip, or miss) of an occurrence.
    pub(super) fn record(
        &self,
        occurrence: &Occurrence<'_>,
        attempt: u32,
        status: RunStatus,
        error: Option<String>,
    ) -> RunRecord {
        let kind = match status {
            RunStatus::Skipped => "skipped".to_string(),
            RunStatus::Missed => "missed".to_string(),
            _ => format!("attempt{attempt}"),
        };
        let manual_tag = if occurrence.manual { "|manual" } else { "" };
        let trigger = occurrence.trigger;
        RunRecord {
            id: format!(
                "{}|{}|{kind}{manual_tag}",
                trigger_id(occurrence.app, &trigger.name),
                to_ms(occurrence.due)
            ),
            app: occurrence.app.to_string(),
            trigger: trigger.name.clone(),
            function: trigger.function.name.to_string(),
            scheduled_ms: to_ms(occurrence.due),
            started_ms: None,
            ended_ms: None,
            status,
            attempt,
            node: self.node.clone(),
            error,
            logs: String::new(),
            manual: occurrence.manual,
            job: false,
        }
    }

    /// Saves a record, and tracks it while it is running (for a shutdown).
    pub(super) async fn save(&self, record: &RunRecord) {
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
