//! The loop: occurrences start when they fall due (a heap by due time);
//! every tick it reads the live triggers and claims the due one-off jobs.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::{CronRunner, CronTrigger, TICK, to_ms};
use crate::invocation::App;
use crate::store::platform::{jobs, runs};

/// Due one-off jobs of one app a node claims per round; rounds repeat
/// while any app has more due, so one app's backlog is taken in turns.
const JOBS_PER_APP_PER_ROUND: u64 = 20;
/// How soon the loop claims again while a job backlog drains.
const JOB_BACKLOG_PAUSE: Duration = Duration::from_millis(10);
/// Rounds of job claims one tick makes at most, so the loop still starts
/// occurrences on time while a backlog drains.
const JOB_ROUNDS_PER_TICK: usize = 10;

/// A trigger as the loop tracks it: its address (the loop holds the `Arc`,
/// so the address is not reused meanwhile). Every deploy makes new triggers,
/// which start from the stored state of their name: a changed schedule takes
/// effect at its next occurrence, and nothing runs twice.
type TriggerKey = usize;

impl CronRunner {
    /// Every [`TICK`] the loop reads the live triggers (new, changed and
    /// removed ones) and claims due jobs; between ticks it sleeps until the
    /// next occurrence falls due, so an occurrence starts when it is due,
    /// not at the next tick. Occurrences wait in a heap by due time.
    pub(super) async fn run(self: Arc<Self>) {
        if let Err(err) = runs::create_index(&self.documents).await {
            tracing::warn!("cannot index the run history: {err}");
        }
        if let Err(err) = jobs::create_index(&self.documents).await {
            tracing::warn!("cannot index the job queue: {err}");
        }
        let mut next: HashMap<TriggerKey, (Arc<CronTrigger>, Arc<App>, DateTime<Utc>)> =
            HashMap::new();
        let mut due_order: BinaryHeap<Reverse<(DateTime<Utc>, TriggerKey)>> = BinaryHeap::new();
        let mut seen = HashSet::new();
        let mut refresh_at = tokio::time::Instant::now();
        let mut jobs_left = false;
        loop {
            if tokio::time::Instant::now() >= refresh_at {
                refresh_at = tokio::time::Instant::now() + TICK;
                let now = Utc::now();
                seen.clear();
                let live = (self.source)();
                for crons in &live {
                    for trigger in crons.triggers.iter() {
                        let key = Arc::as_ptr(trigger) as usize;
                        seen.insert(key);
                        if next.contains_key(&key) {
                            continue;
                        }
                        match self.first_look(&crons.app, trigger, now).await {
                            Ok(due) => {
                                next.insert(key, (trigger.clone(), crons.app.clone(), due));
                                due_order.push(Reverse((due, key)));
                            }
                            Err(err) => {
                                tracing::warn!(app = %crons.app.name, trigger = %trigger.name, "cron state unreadable: {err}");
                            }
                        }
                    }
                }
                // A removed or changed trigger stops here; a running run finishes.
                next.retain(|key, _| seen.contains(key));
                jobs_left = self.claim_jobs(&live, now).await;
            }
            let now = Utc::now();
            while let Some(Reverse((due, key))) = due_order.peek().copied() {
                if due > now {
                    break;
                }
                due_order.pop();
                // An entry of a removed trigger, or one already moved on.
                let Some((trigger, app, current)) = next.get_mut(&key) else {
                    continue;
                };
                if *current != due {
                    continue;
                }
                self.tasks
                    .spawn(self.clone().occurrence(app.clone(), trigger.clone(), due));
                if let Some(after) = trigger.schedule.next_after(due) {
                    *current = after;
                    due_order.push(Reverse((after, key)));
                }
            }
            // A backlog of jobs is claimed again soon; otherwise sleep until
            // the next occurrence or the next tick.
            let mut wake = refresh_at;
            if jobs_left {
                wake = wake.min(tokio::time::Instant::now() + JOB_BACKLOG_PAUSE);
                refresh_at = wake;
            }
            if let Some(Reverse((due, _))) = due_order.peek() {
                let until = (*due - Utc::now()).to_std().unwrap_or_default();
                wake = wake.min(tokio::time::Instant::now() + until);
            }
            tokio::time::sleep_until(wake).await;
        }
    }

    /// Claims due jobs in rounds of [`JOBS_PER_APP_PER_ROUND`] per app,
    /// apps in a new order each tick so none is always first, until none is
    /// due or [`JOB_ROUNDS_PER_TICK`] rounds ran. Returns whether jobs may
    /// be left.
    async fn claim_jobs(self: &Arc<Self>, live: &[super::LiveCrons], now: DateTime<Utc>) -> bool {
        let mut apps: Vec<&str> = live.iter().map(|l| &*l.app.name).collect();
        if apps.is_empty() {
            return false;
        }
        let turn = (to_ms(now) / TICK.as_millis() as u64) as usize % apps.len();
        apps.rotate_left(turn);
        // The first tick of each window looks for lapsed hook leases too.
        let mut reclaim = to_ms(now) % jobs::RECLAIM_EVERY_MS < TICK.as_millis() as u64;
        for _ in 0..JOB_ROUNDS_PER_TICK {
            let claimed = jobs::claim_due(
                &self.documents,
                &self.node,
                to_ms(now),
                &apps,
                JOBS_PER_APP_PER_ROUND,
                reclaim,
            )
            .await;
            reclaim = false;
            match claimed {
                Ok(claimed) => {
                    // Fewer than one app's full round in all: none is left.
                    let full = claimed.len() as u64 >= JOBS_PER_APP_PER_ROUND;
                    for job in claimed {
                        self.tasks.spawn(self.clone().run_job(job));
                    }
                    if !full {
                        return false;
                    }
                }
                Err(err) => {
                    tracing::warn!("cannot read the job queue: {err}");
                    return false;
                }
            }
        }
        true
    }
}
