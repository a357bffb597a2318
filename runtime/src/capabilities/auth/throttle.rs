//! Sign-in throttling, per account and per client address, kept in each
//! node's memory. After an allowance of failures, each further failure
//! doubles a wait (1 s, 2 s, 4 s, ... up to [`MAX_DELAY`]) during which
//! attempts are refused without checking the password; a success clears
//! the account's count. Unknown emails count like known ones, so the
//! answers do not tell them apart.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub const MAX_DELAY: Duration = Duration::from_secs(15 * 60);

/// A count is forgotten this long after its last failure.
const FORGET_AFTER: Duration = Duration::from_secs(3600);

/// Most keys tracked per app; past it, forgotten and idle ones go first,
/// and if every one is still counting, new keys of that app are refused
/// (fail closed). Per app, so one app's flood of distinct emails cannot
/// crowd out another app's counts.
const MAX_KEYS: usize = 100_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Kind {
    Account,
    Address,
}

struct Count {
    failures: u32,
    last: Instant,
    blocked_until: Option<Instant>,
}

type Counts = HashMap<(Kind, String), Count>;

#[derive(Default)]
pub struct Throttle {
    /// Per app.
    apps: Mutex<HashMap<String, Counts>>,
}

/// Attempts are refused for this long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Wait(pub Duration);

impl Throttle {
    /// Whether an attempt of `app` for `account` (an email) from `address`
    /// (an IP) may go ahead now.
    pub fn check(&self, app: &str, account: &str, address: &str) -> Result<(), Wait> {
        let now = Instant::now();
        let apps = self.apps.lock().unwrap_or_else(|e| e.into_inner());
        let Some(counts) = apps.get(app) else {
            return Ok(());
        };
        let mut wait = Duration::ZERO;
        for key in [(Kind::Account, account), (Kind::Address, address)] {
            if let Some(until) = counts
                .get(&(key.0, key.1.to_string()))
                .and_then(|c| c.blocked_until)
                && until > now
            {
                wait = wait.max(until - now);
            }
        }
        if counts.len() >= MAX_KEYS
            && (!counts.contains_key(&(Kind::Account, account.to_string()))
                || !counts.contains_key(&(Kind::Address, address.to_string())))
        {
            wait = wait.max(Duration::from_secs(1));
        }
        match wait.is_zero() {
            true => Ok(()),
            false => Err(Wait(wait)),
        }
    }

    /// Records a failed attempt, with the allowance of each kind.
    pub fn failed(&self, app: &str, account: &str, address: &str, allowance: (u32, u32)) {
        let now = Instant::now();
        let mut apps = self.apps.lock().unwrap_or_else(|e| e.into_inner());
        let counts = apps.entry(app.to_string()).or_default();
        if counts.len() >= MAX_KEYS {
            counts.retain(|_, c| {
                now.duration_since(c.last) < FORGET_AFTER
                    && c.blocked_until.is_some_and(|until| until > now)
            });
        }
        for (kind, key, allowed) in [
            (Kind::Account, account, allowance.0),
            (Kind::Address, address, allowance.1),
        ] {
            if counts.len() >= MAX_KEYS && !counts.contains_key(&(kind, key.to_string())) {
                continue;
            }
            let count = counts.entry((kind, key.to_string())).or_insert(Count {
                failures: 0,
                last: now,
                blocked_until: None,
            });
            if now.duration_since(count.last) >= FORGET_AFTER {
                count.failures = 0;
            }
            count.failures += 1;
            count.last = now;
            if count.failures >= allowed {
                let doublings = (count.failures - allowed).min(20);
                let delay = Duration::from_secs(1 << doublings).min(MAX_DELAY);
                count.blocked_until = Some(now + delay);
            }
        }
    }

    /// Clears the account's count after a successful sign-in.
    pub fn succeeded(&self, app: &str, account: &str) {
        if let Some(counts) = self
            .apps
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_mut(app)
        {
            counts.remove(&(Kind::Account, account.to_string()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_start_after_the_allowance_and_double() {
        let throttle = Throttle::default();
        for _ in 0..2 {
            assert!(throttle.check("shop", "a", "ip").is_ok());
            throttle.failed("shop", "a", "ip", (3, 100));
        }
        assert!(throttle.check("shop", "a", "ip").is_ok());
        throttle.failed("shop", "a", "ip", (3, 100));
        let Err(Wait(first)) = throttle.check("shop", "a", "ip") else {
            panic!("the third failure starts a wait");
        };
        assert!(first <= Duration::from_secs(1) && first > Duration::ZERO);
        throttle.failed("shop", "a", "ip", (3, 100));
        let Err(Wait(second)) = throttle.check("shop", "a", "ip") else {
            panic!("still waiting");
        };
        assert!(second > Duration::from_secs(1), "{second:?}");
        // Another account from another address is not held back.
        assert!(throttle.check("shop", "b", "ip2").is_ok());
        throttle.succeeded("shop", "a");
        assert!(throttle.check("shop", "a", "ip2").is_ok());
    }

    #[test]
    fn an_address_is_throttled_across_accounts() {
        let throttle = Throttle::default();
        for i in 0..3 {
            throttle.failed("shop", &format!("user{i}"), "ip", (100, 3));
        }
        assert!(throttle.check("shop", "fresh", "ip").is_err());
        assert!(throttle.check("shop", "fresh", "other-ip").is_ok());
    }

    #[test]
    fn one_apps_full_table_does_not_hold_back_another_app() {
        let throttle = Throttle::default();
        for i in 0..MAX_KEYS {
            throttle.failed("flood", &format!("user{i}"), "ip", (1, u32::MAX));
        }
        assert!(
            throttle.check("flood", "someone-new", "ip2").is_err(),
            "fails closed"
        );
        assert!(throttle.check("calm", "someone-new", "ip2").is_ok());
    }
}
