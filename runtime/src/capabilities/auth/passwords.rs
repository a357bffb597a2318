//! Password hashing with argon2id. Hashing is CPU and memory work a client
//! can ask for at will, so it runs on the blocking pool behind a server-wide
//! and a per-app limit (see [`super::hashing`]).

use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use argon2::{Algorithm, Argon2, Params, Version};
use serde::Deserialize;

/// argon2id's cost, per app (`[auth.argon2]`). The default is OWASP's
/// first recommendation (19 MiB, 2 passes, 1 lane).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HashCost {
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
}

impl Default for HashCost {
    fn default() -> Self {
        HashCost {
            memory_kib: 19 * 1024,
            iterations: 2,
            parallelism: 1,
        }
    }
}

/// The most memory one hash may take: an app cannot make a sign-in cost
/// the server more than this.
pub const MAX_MEMORY_KIB: u32 = 64 * 1024;
pub const MAX_ITERATIONS: u32 = 10;
pub const MAX_PARALLELISM: u32 = 4;

impl HashCost {
    /// Why the cost is refused, if it is.
    pub fn check(&self) -> Result<(), String> {
        if !(1..=MAX_PARALLELISM).contains(&self.parallelism) {
            return Err(format!("parallelism is 1 to {MAX_PARALLELISM}"));
        }
        if self.memory_kib < 8 * self.parallelism || self.memory_kib > MAX_MEMORY_KIB {
            return Err(format!("memory_kib is 8 × parallelism to {MAX_MEMORY_KIB}"));
        }
        if !(1..=MAX_ITERATIONS).contains(&self.iterations) {
            return Err(format!("iterations is 1 to {MAX_ITERATIONS}"));
        }
        Ok(())
    }

    fn hasher(&self) -> Argon2<'static> {
        let params = Params::new(self.memory_kib, self.iterations, self.parallelism, None)
            .expect("checked at deploy");
        Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
    }

    /// The PHC parameter segment a hash made at this cost has.
    fn phc_params(&self) -> String {
        format!(
            "m={},t={},p={}",
            self.memory_kib, self.iterations, self.parallelism
        )
    }
}

/// Hashes a password (PHC string).
pub fn hash(password: &str, cost: &HashCost) -> String {
    cost.hasher()
        .hash_password(password.as_bytes())
        .expect("argon2 hashes any password at a checked cost")
        .to_string()
}

/// Whether `password` matches `stored`; argon2 compares in constant time.
/// A stored hash that does not read matches nothing.
pub fn verify(password: &str, stored: &str) -> bool {
    // The hash's own parameters decide the work, so they are bounded too:
    // a corrupt record must not make one sign-in take a gigabyte.
    if !stored_cost_is_bounded(stored) {
        return false;
    }
    Argon2::default()
        .verify_password(password.as_bytes(), stored)
        .is_ok()
}

/// Whether a hash was made at another cost than `cost` (so a successful
/// sign-in rehashes the password).
pub fn needs_rehash(stored: &str, cost: &HashCost) -> bool {
    let mut parts = stored.split('$');
    let (_, algorithm, _, params) = (parts.next(), parts.next(), parts.next(), parts.next());
    algorithm != Some("argon2id") || params != Some(cost.phc_params().as_str())
}

fn stored_cost_is_bounded(stored: &str) -> bool {
    let Some(params) = stored.split('$').nth(3) else {
        return false;
    };
    let mut cost = HashCost {
        memory_kib: 0,
        iterations: 0,
        parallelism: 0,
    };
    for pair in params.split(',') {
        let Some((key, value)) = pair.split_once('=') else {
            return false;
        };
        let Ok(value) = value.parse::<u32>() else {
            return false;
        };
        match key {
            "m" => cost.memory_kib = value,
            "t" => cost.iterations = value,
            "p" => cost.parallelism = value,
            _ => return false,
        }
    }
    cost.check().is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHEAP: HashCost = HashCost {
        memory_kib: 64,
        iterations: 1,
        parallelism: 1,
    };

    #[test]
    fn hashes_verify_and_report_a_changed_cost() {
        let stored = hash("correct horse", &CHEAP);
        assert!(
            stored.starts_with("$argon2id$v=19$m=64,t=1,p=1$"),
            "{stored}"
        );
        assert!(verify("correct horse", &stored));
        assert!(!verify("correct horsf", &stored));
        assert!(!needs_rehash(&stored, &CHEAP));
        assert!(needs_rehash(&stored, &HashCost::default()));
        assert!(!verify("x", "not a hash"));
        assert!(!verify(
            "x",
            "$argon2id$v=19$m=4194304,t=1,p=1$c2FsdHNhbHQ$aGFzaA"
        ));
    }

    #[test]
    fn costs_outside_the_bounds_are_refused() {
        assert!(HashCost::default().check().is_ok());
        for bad in [
            HashCost {
                memory_kib: MAX_MEMORY_KIB + 1,
                ..CHEAP
            },
            HashCost {
                iterations: 0,
                ..CHEAP
            },
            HashCost {
                parallelism: 9,
                ..CHEAP
            },
        ] {
            assert!(bad.check().is_err(), "{bad:?}");
        }
    }
}
