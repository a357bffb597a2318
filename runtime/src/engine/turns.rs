//! Turns at running guest code, so one tenant's spinning guests leave
//! threads for the others.

use std::sync::atomic::{AtomicBool, Ordering};
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
/// its next tick or its end, and never longer than two ticks. Host code
/// that waits (a database call, a file) gives it back for the wait
/// ([`StoreTurn::waiting`]: waiting uses no thread) and, if every turn is
/// taken when the call returns, the guest queues for one before it runs
/// on; quick host calls keep it. Guests waiting for one are served in
/// order.
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
/// Host code holds a clone to give it back while it waits.
#[derive(Clone)]
pub struct StoreTurn {
    turns: Turns,
    held: Arc<Shared>,
}

#[derive(Default)]
struct Shared {
    /// Whether a turn is held: the host-call hook's fast path reads only this.
    holding: AtomicBool,
    /// Set when host code gave the turn back to wait, until the call returns.
    released: AtomicBool,
    held: Mutex<Held>,
}

#[derive(Default)]
struct Held {
    /// Counts the turns taken, so a tick's timer gives back only its own.
    taken: u64,
    turn: Option<OwnedSemaphorePermit>,
}

/// What a store does at a host call's return, when it gave its turn back.
pub(super) enum AfterHostCall {
    /// Run on until the next tick.
    RunOn,
    /// Queue for a turn before running on: every turn is taken.
    Queue,
}

impl StoreTurn {
    pub fn new(turns: &Turns) -> Self {
        StoreTurn {
            turns: turns.clone(),
            held: Arc::default(),
        }
    }

    /// Runs host work the guest waits on (I/O, not computation) with the
    /// store's turn given back, so the app's other guests run meanwhile.
    pub async fn waiting<F: Future>(&self, work: F) -> F::Output {
        if self.held.holding.load(Ordering::Relaxed) {
            self.give_back();
            self.held.released.store(true, Ordering::Relaxed);
        }
        work.await
    }

    /// At a host call's return: what the guest does next, if the call gave
    /// its turn back to wait (`None`: it did not).
    pub(super) fn returning_from_host(&self) -> Option<AfterHostCall> {
        if !self.held.released.swap(false, Ordering::Relaxed) {
            return None;
        }
        Some(match self.turns.all_taken() {
            true => AfterHostCall::Queue,
            false => AfterHostCall::RunOn,
        })
    }

    /// Whether every turn of the tenant is held.
    pub(super) fn all_taken(&self) -> bool {
        self.turns.all_taken()
    }

    fn give_back(&self) {
        let mut held = lock(&self.held.held);
        held.turn = None;
        self.held.holding.store(false, Ordering::Relaxed);
    }

    /// At a tick: yields, then gives back the turn held and waits for the
    /// next. Yielding first, still holding the turn, puts the tasks already
    /// queued (other apps' requests) ahead of the next guest the release
    /// wakes: woken on this thread, that guest would run next, and a
    /// chain of them held the thread for a whole round of turns.
    pub(super) fn next(&mut self) -> impl Future<Output = ()> + Send + 'static {
        let this = self.clone();
        async move {
            tokio::task::yield_now().await;
            this.give_back();
            let Ok(turn) = this.turns.0.clone().acquire_owned().await else {
                return;
            };
            let taken = {
                let mut held = lock(&this.held.held);
                held.taken += 1;
                held.turn = Some(turn);
                this.held.holding.store(true, Ordering::Relaxed);
                held.taken
            };
            let shared = Arc::downgrade(&this.held);
            tokio::spawn(async move {
                tokio::time::sleep(TURN_LIMIT).await;
                if let Some(shared) = shared.upgrade() {
                    let mut held = lock(&shared.held);
                    if held.taken == taken {
                        held.turn = None;
                        shared.holding.store(false, Ordering::Relaxed);
                    }
                }
            });
        }
    }
}

/// Gives the turn back when the store is dropped (the last clone of its
/// state is in the store's hooks).
impl Drop for Shared {
    fn drop(&mut self) {
        lock(&self.held).turn = None;
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

    #[tokio::test]
    async fn a_wait_on_the_host_gives_the_turn_back_and_queues_again_if_all_are_taken() {
        let turns = Turns::new(1);
        let mut first = StoreTurn::new(&turns);
        first.next().await;
        assert!(turns.all_taken());
        first.waiting(async {}).await;
        assert!(!turns.all_taken(), "waiting on the host takes no turn");
        let mut second = StoreTurn::new(&turns);
        second.next().await;
        assert!(matches!(
            first.returning_from_host(),
            Some(AfterHostCall::Queue)
        ));
        assert!(first.returning_from_host().is_none(), "once per call");
        drop(second);
        first.waiting(async {}).await;
        assert!(
            first.returning_from_host().is_none(),
            "no turn held, none given back"
        );
    }
}
