//! What one app may take of the server at once, across its functions and
//! its versions: instances (a share of the pooling slots) and log bytes.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The window the log allowance refills over.
const LOG_WINDOW: Duration = Duration::from_secs(60);

/// One app's share of the server; kept across deploys.
pub struct AppQuota {
    instances: Arc<Semaphore>,
    max_instances: u32,
    log_bytes_per_window: usize,
    log: Mutex<LogWindow>,
}

struct LogWindow {
    started: Instant,
    used: usize,
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
    pub fn new(max_instances: u32, log_bytes_per_minute: usize) -> Self {
        AppQuota {
            instances: Arc::new(Semaphore::new(max_instances as usize)),
            max_instances,
            log_bytes_per_window: log_bytes_per_minute,
            log: Mutex::new(LogWindow {
                started: Instant::now(),
                used: 0,
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_app_gets_its_share_and_no_more() {
        let quota = AppQuota::new(2, 10);
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
