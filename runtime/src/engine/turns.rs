//! Turns at running guest code, so one tenant's spinning guests leave
//! threads for the others.

use std::sync::Arc;

use super::EPOCH_TICK;

/// Turns at running guest code, shared by the stores of one tenant: at
/// most this many of its guests run at once for longer than an epoch tick,
/// so a tenant whose guests spin cannot take every thread from the others.
/// A turn lasts one tick, whatever the guest does meanwhile (a guest that
/// waits on the host does not keep it); guests waiting for one are served
/// in order.
#[derive(Clone)]
pub struct Turns(Arc<tokio::sync::Semaphore>);

impl Turns {
    pub fn new(at_once: usize) -> Self {
        Turns(Arc::new(tokio::sync::Semaphore::new(at_once.max(1))))
    }

    pub(super) fn all_taken(&self) -> bool {
        self.0.available_permits() == 0
    }

    /// Yields, then waits for a turn, held for one tick.
    pub(super) async fn take(self) {
        tokio::task::yield_now().await;
        if let Ok(turn) = self.0.acquire_owned().await {
            tokio::spawn(async move {
                tokio::time::sleep(EPOCH_TICK).await;
                drop(turn);
            });
        }
    }
}
