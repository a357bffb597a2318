//! Where password hashes are computed: in fair turns on the blocking pool
//! (one per app, one per core; see [`BlockingTurns`]).

use super::passwords::{self, HashCost};
use crate::capabilities::turns::{BlockingTurns, Busy};

/// Every hashing turn of the server.
#[derive(Default)]
pub struct Hashing {
    turns: BlockingTurns,
}

impl Hashing {
    pub async fn hash(&self, app: &str, password: String, cost: HashCost) -> Result<String, Busy> {
        self.turns
            .run(app, move || passwords::hash(&password, &cost))
            .await
    }

    pub async fn verify(&self, app: &str, password: String, stored: String) -> Result<bool, Busy> {
        self.turns
            .run(app, move || passwords::verify(&password, &stored))
            .await
    }
}
