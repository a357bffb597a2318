//! The loop: every tick, start the occurrences that fell due and claim the
//! due one-off jobs.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use chrono::{DateTime, Utc};

use super::{CronRunner, CronTrigger, TICK, to_ms};
use crate::store::platform::{jobs, runs};

/// Due one-off jobs of one app a node claims per tick.
const JOBS_PER_APP_PER_TICK: u64 = 20;

/// A trigger as the loop tracks it: its address (the loop holds the `Arc`,
/// so the address is not reused meanwhile). Every deploy makes new triggers,
/// which start from the stored state of their name: a changed schedule takes
/// effect at its next occurrence, and nothing runs twice.
type TriggerKey = usize;

impl CronRunner {
    pub(super) async fn run(self: Arc<Self>) {
        if let Err(err) = runs::create_index(&self.documents).await {
            tracing::warn!("cannot index the run history: {err}");
        }
        if let Err(err) = jobs::create_index(&self.documents).await {
            tracing::warn!("cannot index the job queue: {err}");
        }
        let mut next: HashMap<TriggerKey, (Arc<CronTrigger>, DateTime<Utc>)> = HashMap::new();
        let mut seen = HashSet::new();
        let mut ticks = tokio::time::interval(TICK);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            ticks.tick().await;
            let now = Utc::now();
            seen.clear();
            let live = (self.source)();
            for crons in &live {
                for trigger in crons.triggers.iter() {
                    let key = Arc::as_ptr(trigger) as usize;
                    seen.insert(key);
                    let mut due = match next.get(&key) {
                        Some((_, due)) => *due,
                        None => match self.first_look(&crons.app, trigger, now).await {
                            Ok(due) => due,
                            Err(err) => {
                                tracing::warn!(app = %crons.app.name, trigger = %trigger.name, "cron state unreadable: {err}");
                                continue;
                            }
                        },
                    };
                    while due <= now {
                        self.tasks.spawn(self.clone().occurrence(
                            crons.app.clone(),
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
            next.retain(|key, _| seen.contains(key));
            self.claim_jobs(&live, now).await;
        }
    }

    /// Claims due jobs, apps in a new order each tick so none is always first.
    async fn claim_jobs(self: &Arc<Self>, live: &[super::LiveCrons], now: DateTime<Utc>) {
        let mut apps: Vec<&str> = live.iter().map(|l| &*l.app.name).collect();
        if !apps.is_empty() {
            let turn = (to_ms(now) / TICK.as_millis() as u64) as usize % apps.len();
            apps.rotate_left(turn);
        }
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
