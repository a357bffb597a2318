//! The work one store call may do for its caller.
//!
//! Every loop the query code runs over guest-controlled input (documents,
//! arrays, `$in` lists, paths) charges the budget, so a call stops at its
//! deadline, or as soon as its caller is gone, even inside the evaluation of
//! one document.

use std::cell::Cell;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::QueryError;

/// Units of work between two looks at the clock (a unit is a value visited
/// or compared: a few nanoseconds to a few microseconds).
const CHECK_EVERY: u32 = 1024;

/// A deadline and a cancellation flag, checked as work is charged.
#[derive(Debug)]
pub struct Budget {
    deadline: Instant,
    cancelled: Arc<AtomicBool>,
    since_check: Cell<u32>,
}

impl Budget {
    /// A budget ending at `deadline`, or when `cancelled` is set (the caller
    /// went away: the guest's own deadline passed).
    pub fn new(deadline: Instant, cancelled: Arc<AtomicBool>) -> Self {
        Budget {
            deadline,
            cancelled,
            since_check: Cell::new(0),
        }
    }

    /// A budget of `duration` from now that nobody cancels.
    pub fn of(duration: Duration) -> Self {
        Budget::new(Instant::now() + duration, Arc::new(AtomicBool::new(false)))
    }

    /// Charges `units` of work; fails once the budget is spent.
    pub fn charge(&self, units: usize) -> Result<(), QueryError> {
        let spent = self
            .since_check
            .get()
            .saturating_add(u32::try_from(units).unwrap_or(u32::MAX));
        if spent < CHECK_EVERY {
            self.since_check.set(spent);
            return Ok(());
        }
        self.since_check.set(0);
        self.check()
    }

    /// Fails if the deadline passed or the call was cancelled.
    pub fn check(&self) -> Result<(), QueryError> {
        if self.cancelled.load(Ordering::Relaxed) {
            return Err(QueryError::OverBudget(
                "the call was cancelled: its invocation ended".into(),
            ));
        }
        if Instant::now() > self.deadline {
            return Err(QueryError::OverBudget(
                "the query ran past its time budget; add an index or narrow the filter".into(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stops_at_the_deadline_and_on_cancellation() {
        let budget = Budget::of(Duration::from_secs(60));
        assert!(budget.charge(10_000).is_ok());
        let flag = Arc::new(AtomicBool::new(false));
        let budget = Budget::new(Instant::now() + Duration::from_secs(60), flag.clone());
        flag.store(true, Ordering::Relaxed);
        assert!(matches!(
            budget.charge(usize::MAX),
            Err(QueryError::OverBudget(_))
        ));
        let budget = Budget::of(Duration::ZERO);
        std::thread::sleep(Duration::from_millis(2));
        assert!(
            budget.charge(1).is_ok(),
            "small charges look at the clock only now and then"
        );
        assert!(budget.charge(CHECK_EVERY as usize).is_err());
    }
}
