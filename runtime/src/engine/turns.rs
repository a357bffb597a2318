//! Turns at running guest code, so one tenant's spinning guests leave
//! threads for the others.

use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::EPOCH_TICK;

/// The longest a store holds a turn: past its next tick (epoch ticks come
/// a little later than every 10 ms), so a running guest always gives its
/// turn back at that tick, and only a guest waiting on the host (which
/// has no tick) is ever timed out of one.
const TURN_LIMIT: std::time::Duration = EPOCH_TICK.saturating_mul(2);

/// Turns at running guest code, shared by the stores of one tenant: at
/// most this many of its guests run at once past an epoch tick, so a
/// tenant whose guests spin cannot take every thread from the others.
/// A guest takes a turn at each tick it runs through and holds it until
/// its next tick or its end, and never longer than two ticks (a guest that
/// then waits on the host does not keep it); guests waiting for one are
/// served in order.
#[derive(Clone)]
pub struct Turns(Arc<Semaphore>);

impl Turns {
    pub fn new(at_once: usize) -> Self {
        Turns(Arc::new(Semaphore::new(at_once.max(1))))
    }

    /// Whether every turn is held: a guest starting now waits for one.
    pub(super) fn all_taken(&self) -> bool {
        self.0.available_permits() == 0
    }
}

/// The turn one store holds, if any; given back when the store is dropped.
pub(super) struct StoreTurn {
    turns: Turns,
    /// Made at the first tick: most guests end before one.
    held: Option<Arc<Mutex<Held>>>,
}

#[derive(Default)]
struct Held {
    /// Counts the turns taken, so a tick's timer gives back only its own.
    taken: u64,
    turn: Option<OwnedSemaphorePermit>,
}

impl StoreTurn {
    pub(super) fn new(turns: &Turns) -> Self {
        StoreTurn {
            turns: turns.clone(),
            held: None,
        }
    }

    /// At a tick: yields, then gives back the turn held and waits for the
    /// next. Yielding first, still holding the turn, puts the tasks already
    /// queued (other apps' requests) ahead of the next guest the release
    /// wakes: woken on this thread, that guest would run next, and a
    /// chain of them held the thread for a whole round of turns.
    pub(super) fn next(&mut self) -> impl Future<Output = ()> + Send + 'static {
        let held = self.held.get_or_insert_with(Arc::default).clone();
        let turns = self.turns.0.clone();
        async move {
            tokio::task::yield_now().await;
            lock(&held).turn = None;
            let Ok(turn) = turns.acquire_owned().await else {
                return;
            };
            let taken = {
                let mut held = lock(&held);
                held.taken += 1;
                held.turn = Some(turn);
                held.taken
            };
            let held = Arc::downgrade(&held);
            tokio::spawn(async move {
                tokio::time::sleep(TURN_LIMIT).await;
                if let Some(held) = held.upgrade() {
                    let mut held = lock(&held);
                    if held.taken == taken {
                        held.turn = None;
                    }
                }
            });
        }
    }
}

impl Drop for StoreTurn {
    fn drop(&mut self) {
        if let Some(held) = &self.held {
            lock(held).turn = None;
        }
    }
}

fn lock(held: &Mutex<Held>) -> std::sync::MutexGuard<'_, Held> {
    held.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_turn_is_given_back_at_the_next_tick_or_when_its_store_ends() {
        let turns = Turns::new(1);
        let mut first = StoreTurn::new(&turns);
        first.next().await;
        assert!(turns.all_taken());
        // The next tick gives it back, then waits for another.
        first.next().await;
        assert!(turns.all_taken());
        let mut second = StoreTurn::new(&turns);
        drop(first);
        assert!(!turns.all_taken());
        second.next().await;
        assert!(turns.all_taken());
        // Never longer than two ticks.
        tokio::time::sleep(TURN_LIMIT + EPOCH_TICK).await;
        assert!(!turns.all_taken());
        drop(second);
    }
}
