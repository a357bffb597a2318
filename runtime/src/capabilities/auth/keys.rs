//! Each app's signing keys, read from the store and kept in memory. A node
//! rereads them every [`RELOAD_AFTER`], and at once (at most once a second)
//! when a token names a key it does not know, so a rotation made through
//! another node is picked up.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::settings::MAX_ACCESS_TTL;
use super::tokens::SigningKey;
use crate::store::platform::now_ms;
use crate::store::platform::signing_keys;
use crate::store::{Documents, StoreError};

const RELOAD_AFTER: Duration = Duration::from_secs(30);
const MIN_RELOAD_INTERVAL: Duration = Duration::from_secs(1);

/// An app's keys: every one verifies; the newest unretired one signs.
pub struct Ring {
    pub keys: Vec<SigningKey>,
    loaded: Instant,
}

impl Ring {
    pub fn current(&self) -> Option<&SigningKey> {
        self.keys.iter().rev().find(|k| k.retired_ms.is_none())
    }
}

pub struct KeyRings {
    documents: Documents,
    rings: Mutex<HashMap<String, Arc<Ring>>>,
    /// One load at a time, so a burst of requests reads the store once.
    loading: tokio::sync::Mutex<()>,
}

impl KeyRings {
    pub fn new(documents: Documents) -> Self {
        KeyRings {
            documents,
            rings: Mutex::new(HashMap::new()),
            loading: tokio::sync::Mutex::new(()),
        }
    }

    fn cached(&self, app: &str) -> Option<Arc<Ring>> {
        self.rings
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(app)
            .cloned()
    }

    /// The app's keys, creating its first key when it has none.
    pub async fn ring(&self, app: &str) -> Result<Arc<Ring>, StoreError> {
        match self.cached(app) {
            Some(ring) if ring.loaded.elapsed() < RELOAD_AFTER => Ok(ring),
            _ => self.load(app, RELOAD_AFTER).await,
        }
    }

    /// Rereads the keys after a token named an unknown one.
    pub async fn reload(&self, app: &str) -> Result<Arc<Ring>, StoreError> {
        self.load(app, MIN_RELOAD_INTERVAL).await
    }

    async fn load(&self, app: &str, fresher_than: Duration) -> Result<Arc<Ring>, StoreError> {
        let _one = self.loading.lock().await;
        if let Some(ring) = self
            .cached(app)
            .filter(|r| r.loaded.elapsed() < fresher_than)
        {
            return Ok(ring);
        }
        let mut records = signing_keys::of_app(&self.documents, app).await?;
        if !records.iter().any(|k| k.retired_ms.is_none()) {
            let first = SigningKey::generate(app);
            signing_keys::insert(&self.documents, &first).await?;
            records.push(first);
        }
        let keys = records
            .iter()
            .filter_map(|record| match SigningKey::from_record(record) {
                Ok(key) => Some(key),
                Err(err) => {
                    tracing::error!(app, "a signing key does not read, so it is skipped: {err}");
                    None
                }
            })
            .collect();
        let ring = Arc::new(Ring {
            keys,
            loaded: Instant::now(),
        });
        self.rings
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(app.to_string(), ring.clone());
        Ok(ring)
    }

    /// Makes a new key current. The previous ones keep verifying; keys
    /// retired longer ago than any token lives are deleted.
    pub async fn rotate(&self, app: &str) -> Result<String, StoreError> {
        let key = SigningKey::generate(app);
        signing_keys::insert(&self.documents, &key).await?;
        signing_keys::retire_others(&self.documents, app, &key.id).await?;
        let expired = now_ms().saturating_sub(MAX_ACCESS_TTL.as_millis() as u64 + 60_000);
        signing_keys::delete_retired_before(&self.documents, app, expired).await?;
        self.load(app, Duration::ZERO).await?;
        Ok(key.id)
    }
}
