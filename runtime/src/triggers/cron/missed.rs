//! Occurrences that fell while no node ran: recorded as missed, and the
//! latest run once when the trigger asks (`missed = "run-latest"`).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::attempts::Occurrence;
use super::{CronRunner, CronTrigger, Missed, from_ms, to_ms};
use crate::invocation::App;
use crate::store::StoreError;
use crate::store::platform::cron::{self as bookkeeping, trigger_id};
use crate::store::platform::runs::RunStatus;

/// An occurrence a node first sees less than this late is run, not missed.
const ON_TIME: Duration = Duration::from_secs(2);
/// Missed occurrences recorded one by one; earlier ones get one record.
const MISSED_RECORDS: usize = 100;
/// Missed occurrences counted one by one after an outage; past this the
/// count is a lower bound.
const MISSED_COUNTED: usize = 100_000;
/// Why a missed occurrence did not run.
const MISSED: &str = "no Kiln server was running when it was due";

impl CronRunner {
    /// The first occurrence this node handles for `trigger`. Occurrences
    /// that fell while no node ran are recorded as missed (and the latest
    /// run, if the trigger asks).
    pub(super) async fn first_look(
        self: &Arc<Self>,
        app: &Arc<App>,
        trigger: &Arc<CronTrigger>,
        now: DateTime<Utc>,
    ) -> Result<DateTime<Utc>, StoreError> {
        let id = trigger_id(&app.name, &trigger.name);
        let schedule = format!(
            "{} {}",
            trigger.expression,
            trigger.timezone.as_deref().unwrap_or("UTC")
        );
        let last = bookkeeping::state(&self.documents, &id)
            .await?
            .filter(|state| state.schedule.as_deref() == Some(schedule.as_str()))
            .and_then(|state| state.last_ms)
            .and_then(from_ms);
        let on_time_from = now - chrono::Duration::from_std(ON_TIME).expect("small");
        let Some(last) = last else {
            // A new trigger, or a new schedule, starts now: nothing before
            // it was missed.
            bookkeeping::restart_state(&self.documents, &id, &schedule, to_ms(now)).await?;
            return Ok(trigger
                .schedule
                .next_after(now)
                .unwrap_or(DateTime::<Utc>::MAX_UTC));
        };
        let mut missed = VecDeque::new();
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
                && self.claim(&app.name, &trigger.name, latest).await
            {
                let occurrence = Occurrence::new(app, trigger, latest, false);
                let record = self.record(&occurrence, 1, RunStatus::Missed, Some(MISSED.into()));
                self.save(&record).await;
                if let Some(lock) = self.acquire(&occurrence).await {
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
            .unwrap_or(DateTime::<Utc>::MAX_UTC))
    }

    async fn record_missed(
        self: Arc<Self>,
        app: Arc<App>,
        trigger: Arc<CronTrigger>,
        missed: Vec<DateTime<Utc>>,
        count: usize,
    ) {
        let earlier = count - missed.len();
        for (i, due) in missed.iter().enumerate() {
            // A lost claim: another node recorded it (or `first_look` did, for a catch-up).
            if !self.claim(&app.name, &trigger.name, *due).await {
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
            let occurrence = Occurrence::new(&app, &trigger, *due, false);
            self.save(&self.record(&occurrence, 1, RunStatus::Missed, Some(error)))
                .await;
        }
    }
}
