//! Access tokens whose signature has verified, so a client that sends the
//! same token on every request pays for the Ed25519 check once. Entries are
//! kept per app, keyed by SHA-256 of the whole token (a changed byte is
//! another entry), hold the verified claims, and count only until the
//! token's `exp`. This caches the signature, never whether the session is
//! live (see `store::platform::sessions::LiveSessions`).

use std::collections::HashMap;
use std::sync::Mutex;

use sha2::{Digest, Sha256};

use super::tokens::{AccessClaims, LEEWAY_SECS};
use crate::store::platform::now_ms;

/// Most tokens of one app remembered; past it the app's expired go, and if
/// none has expired, all of the app's go (its next requests verify again).
/// Per app, so one app minting tokens cannot push out another's.
const MAX_PER_APP: usize = 10_000;

#[derive(Default)]
pub struct VerifiedTokens {
    apps: Mutex<HashMap<String, HashMap<[u8; 32], AccessClaims>>>,
}

fn key(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

fn live(claims: &AccessClaims, now: u64) -> bool {
    claims.exp + LEEWAY_SECS > now
}

impl VerifiedTokens {
    pub fn get(&self, app: &str, token: &str) -> Option<AccessClaims> {
        let now = now_ms() / 1000;
        let apps = self.apps.lock().unwrap_or_else(|e| e.into_inner());
        apps.get(app)?
            .get(&key(token))
            .filter(|c| live(c, now))
            .cloned()
    }

    pub fn insert(&self, app: &str, token: &str, claims: &AccessClaims) {
        let now = now_ms() / 1000;
        let mut apps = self.apps.lock().unwrap_or_else(|e| e.into_inner());
        let entries = apps.entry(app.to_string()).or_default();
        if entries.len() >= MAX_PER_APP {
            entries.retain(|_, c| live(c, now));
            if entries.len() >= MAX_PER_APP {
                entries.clear();
            }
        }
        entries.insert(key(token), claims.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(exp: u64) -> AccessClaims {
        AccessClaims {
            iss: "kiln:shop".into(),
            aud: "shop".into(),
            sub: "u".into(),
            sid: "s".into(),
            iat: 0,
            nbf: 0,
            exp,
            mfa: false,
        }
    }

    #[test]
    fn remembers_a_token_of_one_app_until_it_expires() {
        let cache = VerifiedTokens::default();
        let now = now_ms() / 1000;
        cache.insert("shop", "t1", &claims(now + 60));
        cache.insert("shop", "t2", &claims(now - 60));
        assert!(cache.get("shop", "t1").is_some());
        assert!(cache.get("other", "t1").is_none(), "another app's entry");
        assert!(cache.get("shop", "t1x").is_none());
        assert!(cache.get("shop", "t2").is_none(), "expired");
    }
}
