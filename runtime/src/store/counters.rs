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

use std::fs::OpenOptions;
use std::path::Path;
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
