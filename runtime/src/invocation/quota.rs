//! What one app may take of the server at once, across its functions and
//! its versions: instances (a share of the pooling slots) and log bytes.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::engine::Turns;

/// The window the log allowance refills over.
const LOG_WINDOW: Duration = Duration::from_secs(60);
/// How long after an app's first unlogged output its count is written:
/// at most one such line per app per interval.
const DROPPED_REPORT_AFTER: Duration = Duration::from_secs(5);

/// One app's share of the server; kept across deploys.
pub struct AppQuota {
    app: Arc<str>,
    instances: Arc<Semaphore>,
    /// Turns at running guest code past one epoch tick.
    turns: Turns,
    max_instances: u32,
    log_bytes_per_window: usize,
    log: Mutex<LogWindow>,
}

struct LogWindow {
    started: Instant,
    used: usize,
    /// Output that left no log event at all, not yet reported.
    unlogged: Unlogged,
    /// Whether a report of `unlogged` is scheduled.
    report_pending: bool,
}

#[derive(Default, Clone, Copy)]
struct Unlogged {
    events: u64,
    bytes: u64,
}

/// Why an invocation was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Overloaded {
    #[error("the function stayed at its {0} concurrent instances until the invocation's deadline")]
    Function(u32),
    #[error("the app stayed at its {0} concurrent instances until the invocation's deadline")]
    App(u32),
    #[error("the server had no free instance slot")]
    Server,
}

/// Held while an invocation runs: its function's and its app's permits.
pub struct Admission {
    _function: OwnedSemaphorePermit,
    _app: OwnedSemaphorePermit,
}

impl AppQuota {
    /// `guest_turns`: the app's guests that may run past an epoch tick at once.
    pub fn new(
        app: Arc<str>,
        max_instances: u32,
        guest_turns: usize,
        log_bytes_per_minute: usize,
    ) -> Self {
        AppQuota {
            app,
            instances: Arc::new(Semaphore::new(max_instances as usize)),
            turns: Turns::new(guest_turns),
            max_instances,
            log_bytes_per_window: log_bytes_per_minute,
            log: Mutex::new(LogWindow {
                started: Instant::now(),
                used: 0,
                unlogged: Unlogged::default(),
                report_pending: false,
            }),
        }
    }

    /// Waits (until `deadline`) for a slot of the function, then of the app.
    pub async fn admit(
        &self,
        function: &Arc<Semaphore>,
        function_max: u32,
        deadline: tokio::time::Instant,
    ) -> Result<Admission, Overloaded> {
        let Ok(Ok(function)) =
            tokio::time::timeout_at(deadline, function.clone().acquire_owned()).await
        else {
            return Err(Overloaded::Function(function_max));
        };
        let Ok(Ok(app)) =
            tokio::time::timeout_at(deadline, self.instances.clone().acquire_owned()).await
        else {
            return Err(Overloaded::App(self.max_instances));
        };
        Ok(Admission {
            _function: function,
            _app: app,
        })
    }

    pub fn turns(&self) -> &Turns {
        &self.turns
    }

    /// How many of `wanted` bytes of guest output the app may still write
    /// to the server log in this minute; takes them from the allowance.
    pub fn take_log_bytes(&self, wanted: usize) -> usize {
        let mut log = self.log.lock().unwrap_or_else(|e| e.into_inner());
        if log.started.elapsed() >= LOG_WINDOW {
            log.started = Instant::now();
            log.used = 0;
        }
        let granted = wanted.min(self.log_bytes_per_window.saturating_sub(log.used));
        log.used += granted;
        granted
    }

    /// Counts output the allowance left no event for (`bytes` of one
    /// stream of one invocation), to be reported in one line per app
    /// within [`DROPPED_REPORT_AFTER`].
    pub fn count_unlogged(self: &Arc<Self>, bytes: usize) {
        let mut log = self.log.lock().unwrap_or_else(|e| e.into_inner());
        log.unlogged.events += 1;
        log.unlogged.bytes += bytes as u64;
        if log.report_pending {
            return;
        }
        log.report_pending = true;
        let quota = Arc::downgrade(self);
        tokio::spawn(async move {
            tokio::time::sleep(DROPPED_REPORT_AFTER).await;
            if let Some(quota) = quota.upgrade() {
                quota.report_unlogged();
            }
        });
    }

    fn report_unlogged(&self) {
        let unlogged = {
            let mut log = self.log.lock().unwrap_or_else(|e| e.into_inner());
            log.report_pending = false;
            std::mem::take(&mut log.unlogged)
        };
        tracing::warn!(
            target: "kiln::guest",
            app = %self.app,
            "guest output dropped: app `{}` is past its log allowance of {} bytes a minute; {} streams with {} bytes left no log event",
            self.app,
            self.log_bytes_per_window,
            unlogged.events,
            unlogged.bytes,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_app_gets_its_share_and_no_more() {
        let quota = AppQuota::new("shop".into(), 2, 1, 10);
        let function = Arc::new(Semaphore::new(10));
        let soon = || tokio::time::Instant::now() + Duration::from_millis(20);
        let a = quota.admit(&function, 10, soon()).await.unwrap();
        let _b = quota.admit(&function, 10, soon()).await.unwrap();
        assert_eq!(
            quota.admit(&function, 10, soon()).await.err(),
            Some(Overloaded::App(2))
        );
        drop(a);
        assert!(quota.admit(&function, 10, soon()).await.is_ok());
        assert_eq!(quota.take_log_bytes(7), 7);
        assert_eq!(quota.take_log_bytes(7), 3);
        assert_eq!(quota.take_log_bytes(7), 0);
    }
}
