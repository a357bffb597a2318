//! Change counters every node sharing an embedded store sees: a small file
//! beside the databases, mapped into memory by each node (as SQLite maps its
//! own `-shm` file, and with the same reach: the nodes of one host).
//!
//! A node that caches a record reads the counter before it reads the record
//! and keeps the value with it; a writer bumps the counter after its write
//! commits. A cached record whose value still equals the counter's was read
//! after every write that completed before the check, so it is current. The
//! counter of a key lives in one of [`SLOTS`] slots: two keys sharing a slot
//! only cost each other some extra reads.

use std::collections::HashMap;
use std::fs::OpenOptions;
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use memmap2::MmapRaw;
use sha2::{Digest, Sha256};

use super::StoreError;

const SLOTS: usize = 1024;
const BYTES: u64 = (SLOTS * size_of::<u64>()) as u64;

pub struct ChangeCounters {
    map: MmapRaw,
}

impl ChangeCounters {
    /// Maps (creating) the counters file at `path`.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let failed = |e: std::io::Error| {
            StoreError::Unavailable(format!("change counters {}: {e}", path.display()))
        };
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(failed)?;
        // Growing to the same length keeps what another node already wrote.
        if file.metadata().map_err(failed)?.len() < BYTES {
            file.set_len(BYTES).map_err(failed)?;
        }
        let map = MmapRaw::map_raw(&file).map_err(failed)?;
        if map.len() < BYTES as usize {
            return Err(StoreError::Unavailable(format!(
                "change counters {}: mapped {} bytes, not {BYTES}",
                path.display(),
                map.len()
            )));
        }
        Ok(ChangeCounters { map })
    }

    fn slot(&self, key: &str) -> &AtomicU64 {
        // A hash every node computes alike (std's is seeded per process).
        let digest = Sha256::digest(key.as_bytes());
        let index = u16::from_le_bytes([digest[0], digest[1]]) as usize % SLOTS;
        // SAFETY: the mapping is page-aligned, at least BYTES long (checked
        // in `open`) and lives as long as `self`; other processes change it
        // only through atomic operations on the same aligned words.
        unsafe { AtomicU64::from_ptr(self.map.as_mut_ptr().cast::<u64>().add(index)) }
    }

    /// The counter of `key` now.
    pub fn read(&self, key: &str) -> u64 {
        self.slot(key).load(Ordering::Acquire)
    }

    /// Marks a committed change under `key`.
    pub fn bump(&self, key: &str) {
        self.slot(key).fetch_add(1, Ordering::SeqCst);
    }
}

/// Records one node keeps per app; past it, the app's are dropped.
const KEPT_PER_APP: usize = 10_000;
/// A kept record is read again after this long even with no change
/// counted: the backstop for a node that died between a write and its bump.
const KEPT_MS: u64 = 60_000;

/// Records (or their absence) a node read, by app and id, each kept with
/// the counter it was read under and used while that counter is unchanged.
pub struct Kept<V> {
    apps: Mutex<HashMap<String, HashMap<String, KeptRecord<V>>>>,
}

struct KeptRecord<V> {
    value: Option<V>,
    counter: u64,
    read_ms: u64,
}

impl<V> Default for Kept<V> {
    fn default() -> Self {
        Kept {
            apps: Mutex::default(),
        }
    }
}

impl<V: Clone> Kept<V> {
    /// Record `id` of `app`: the kept one while `key`'s counter is unchanged
    /// and `usable` says so, else what `read` reads (then kept).
    pub async fn get(
        &self,
        counters: &ChangeCounters,
        key: &str,
        app: &str,
        id: &str,
        now_ms: u64,
        usable: impl Fn(&V) -> bool,
        read: impl Future<Output = Result<Option<V>, StoreError>>,
    ) -> Result<Option<V>, StoreError> {
        // Read before the record, so a write that lands in between is
        // counted after what is kept.
        let counter = counters.read(key);
        if let Some(kept) = self
            .apps
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(app)
            .and_then(|records| records.get(id))
            .filter(|k| {
                k.counter == counter
                    && now_ms < k.read_ms + KEPT_MS
                    && k.value.as_ref().is_none_or(&usable)
            })
        {
            return Ok(kept.value.clone());
        }
        let value = read.await?;
        let mut apps = self.apps.lock().unwrap_or_else(|e| e.into_inner());
        let records = apps.entry(app.to_string()).or_default();
        if records.len() >= KEPT_PER_APP {
            records.clear();
        }
        let kept = KeptRecord {
            value: value.clone(),
            counter,
            read_ms: now_ms,
        };
        records.insert(id.to_string(), kept);
        Ok(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_mappings_of_one_file_see_each_others_bumps() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("changes");
        let one = ChangeCounters::open(&path).unwrap();
        let two = ChangeCounters::open(&path).unwrap();
        let before = two.read("sessions/shop");
        one.bump("sessions/shop");
        assert_eq!(two.read("sessions/shop"), before + 1);
        drop(one);
        // Reopening keeps the counts.
        let three = ChangeCounters::open(&path).unwrap();
        assert_eq!(three.read("sessions/shop"), before + 1);
    }
}
