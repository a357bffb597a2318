//! Claiming occurrences (one node wins each) and trigger locks with a
//! lease, by the trigger's overlap policy.

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::attempts::Occurrence;
use super::{CronRunner, Overlap, TICK, to_ms};
use crate::store::StoreError;
use crate::store::platform::cron::{self as bookkeeping, trigger_id};
use crate::store::platform::runs::RunStatus;

/// A run's lock outlives its timeout by this much, then another may start.
const LOCK_MARGIN: Duration = Duration::from_secs(10);

/// A trigger's lock as one run holds it (or, with `overlap = "allow"`, does not).
pub(super) struct TriggerLock {
    pub id: String,
    pub holder: String,
    pub lease: Duration,
    pub held: bool,
}

impl CronRunner {
    /// Inserts the claim record of an occurrence: `true` when this node won it.
    pub(super) async fn claim(&self, app: &str, trigger: &str, due: DateTime<Utc>) -> bool {
        let id = trigger_id(app, trigger);
        let now = to_ms(Utc::now());
        match bookkeeping::claim(&self.documents, &id, to_ms(due), &self.node, now).await {
            Ok(true) => {}
            Ok(false) => return false,
            Err(err) => {
                tracing::error!(
                    app,
                    trigger,
                    "cannot claim an occurrence, so it does not run: {err}"
                );
                return false;
            }
        }
        if let Err(err) = bookkeeping::advance_state(&self.documents, &id, to_ms(due)).await {
            tracing::warn!(app, trigger, "cannot record the latest occurrence: {err}");
        }
        true
    }

    /// Takes the trigger's lock for an occurrence, by its overlap policy:
    /// `None` when it does not run (recorded as skipped, or failed).
    pub(super) async fn acquire(&self, occurrence: &Occurrence<'_>) -> Option<TriggerLock> {
        let trigger = occurrence.trigger;
        let lock = TriggerLock {
            id: trigger_id(occurrence.app, &trigger.name),
            holder: format!("{}|{}|{}", self.node, trigger.name, to_ms(occurrence.due)),
            lease: trigger.function.limits.timeout + LOCK_MARGIN,
            held: trigger.overlap != Overlap::Allow,
        };
        if !lock.held {
            return Some(lock);
        }
        loop {
            let (status, error) = match self.lock(&lock.id, &lock.holder, lock.lease).await {
                Ok(true) => return Some(lock),
                Ok(false) if trigger.overlap == Overlap::Queue => {
                    tokio::time::sleep(TICK).await;
                    continue;
                }
                Ok(false) => (
                    RunStatus::Skipped,
                    "the previous run of this trigger was still running".to_string(),
                ),
                Err(err) => (
                    RunStatus::Failed,
                    format!("the platform database was unavailable: {err}"),
                ),
            };
            self.save(&self.record(occurrence, 1, status, Some(error)))
                .await;
            return None;
        }
    }

    /// Takes (or renews) the trigger's lock until now + `lease`.
    pub(super) async fn lock(
        &self,
        id: &str,
        holder: &str,
        lease: Duration,
    ) -> Result<bool, StoreError> {
        let now = to_ms(Utc::now());
        let until = now.saturating_add(lease.as_millis() as u64);
        bookkeeping::lock(&self.documents, id, holder, &self.node, now, until).await
    }

    pub(super) async fn unlock(&self, id: &str, holder: &str) {
        if let Err(err) = bookkeeping::unlock(&self.documents, id, holder).await {
            tracing::warn!(
                lock = id,
                "cannot release a cron lock (it expires by itself): {err}"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::store::sqlite::SqliteStore;
    use crate::store::{Documents, StoreLimits};

    fn runner(documents: &Documents) -> Arc<CronRunner> {
        CronRunner::new(documents.clone(), Arc::new(Vec::new))
    }

    fn documents(dir: &std::path::Path) -> Documents {
        let store = SqliteStore::open(&dir.join("db"), Duration::from_secs(5)).unwrap();
        Documents::new(Arc::new(store), StoreLimits::default())
    }

    #[tokio::test]
    async fn each_occurrence_has_one_winning_claim_among_runners() {
        let dir = tempfile::tempdir().unwrap();
        let documents = documents(dir.path());
        let nodes: Vec<_> = (0..3).map(|_| runner(&documents)).collect();
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
        let state = bookkeeping::state(&documents, "app|tick")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            state.last_ms,
            Some(to_ms(base + chrono::Duration::seconds(19)))
        );
    }

    #[tokio::test]
    async fn the_trigger_lock_has_one_holder_until_released_or_expired() {
        let dir = tempfile::tempdir().unwrap();
        let documents = documents(dir.path());
        let a = runner(&documents);
        let b = runner(&documents);
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
