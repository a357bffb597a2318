//! Where password hashes are computed: on the blocking pool, at most one
//! per core server-wide and one per app at a time, so one app's sign-in
//! flood queues behind itself and not in front of other apps. A hash waits
//! at most [`MAX_WAIT`] for its turn.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Semaphore;

use super::passwords::{self, HashCost};

pub const MAX_WAIT: Duration = Duration::from_secs(10);

/// Every hashing slot of the server.
pub struct Hashing {
    server: Arc<Semaphore>,
    per_app: Mutex<HashMap<String, Arc<Semaphore>>>,
}

/// No slot freed up within [`MAX_WAIT`].
#[derive(Debug)]
pub struct Busy;

impl Default for Hashing {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Hashing {
            server: Arc::new(Semaphore::new(cores)),
            per_app: Mutex::new(HashMap::new()),
        }
    }
}

impl Hashing {
    /// Runs `work` in `app`'s turn.
    async fn run<T: Send + 'static>(
        &self,
        app: &str,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, Busy> {
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
            Ok::<_, Busy>((app_permit, server_permit))
        };
        let permits = tokio::time::timeout(MAX_WAIT, turn)
            .await
            .map_err(|_| Busy)??;
        tokio::task::spawn_blocking(move || {
            let _permits = permits;
            work()
        })
        .await
        .map_err(|_| Busy)
    }

    pub async fn hash(&self, app: &str, password: String, cost: HashCost) -> Result<String, Busy> {
        self.run(app, move || passwords::hash(&password, &cost))
            .await
    }

    pub async fn verify(&self, app: &str, password: String, stored: String) -> Result<bool, Busy> {
        self.run(app, move || passwords::verify(&password, &stored))
            .await
    }
}
