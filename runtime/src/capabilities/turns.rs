//! CPU-heavy host work (password hashes, thumbnails) on the blocking pool,
//! in fair turns: one per app at a time and one per core server-wide, so
//! one app's flood queues behind itself and not in front of other apps. A
//! turn is waited for at most [`MAX_WAIT`]; the work itself is bounded by
//! its caller's caps, since blocking work cannot be cancelled.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

pub const MAX_WAIT: Duration = Duration::from_secs(10);

/// Every turn of one kind of work on the server.
pub struct BlockingTurns {
    server: Arc<Semaphore>,
    per_app: Mutex<HashMap<String, Arc<Semaphore>>>,
}

/// No turn came within [`MAX_WAIT`].
#[derive(Debug)]
pub struct Busy;

/// An app's turn: held while its work runs.
pub struct Turn {
    _app: OwnedSemaphorePermit,
    _server: OwnedSemaphorePermit,
}

impl Default for BlockingTurns {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        BlockingTurns {
            server: Arc::new(Semaphore::new(cores)),
            per_app: Mutex::new(HashMap::new()),
        }
    }
}

impl BlockingTurns {
    /// Waits for `app`'s turn.
    pub async fn turn(&self, app: &str) -> Result<Turn, Busy> {
        let app_slots = self
            .per_app
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(app.to_string())
            .or_insert_with(|| Arc::new(Semaphore::new(1)))
            .clone();
        let turn = async {
            let app_permit = app_slots.acquire_owned().await.map_err(|_| Busy)?;
            let server_permit = self
                .server
                .clone()
                .acquire_owned()
                .await
                .map_err(|_| Busy)?;
            Ok::<_, Busy>(Turn {
                _app: app_permit,
                _server: server_permit,
            })
        };
        tokio::time::timeout(MAX_WAIT, turn)
            .await
            .map_err(|_| Busy)?
    }

    /// Runs `work` in `app`'s turn.
    pub async fn run<T: Send + 'static>(
        &self,
        app: &str,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, Busy> {
        self.turn(app).await?.run(work).await
    }
}

impl Turn {
    /// Runs `work` on the blocking pool, holding the turn until it ends.
    pub async fn run<T: Send + 'static>(
        self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, Busy> {
        tokio::task::spawn_blocking(move || {
            let _turn = self;
            work()
        })
        .await
        .map_err(|_| Busy)
    }
}
