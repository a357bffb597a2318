//! What interrupted work leaves behind, deleted in the background by every
//! node: resumable uploads past their 24 hours (records, staging files, S3
//! parts), and blobs still pending a day after their write or delete began
//! (a crash between a blob and its record, or a failed delete). Each pass
//! does a bounded amount of work; nodes sweeping at once only repeat
//! deletes.

use std::time::Duration;

use super::StorageError;
use super::files::Files;
use crate::store::platform::files as records;
use crate::store::platform::now_ms;
use crate::store::platform::pending_blobs as pending;

/// How often a node sweeps.
pub const SWEEP_EVERY: Duration = Duration::from_secs(10 * 60);
/// How long a blob may stay pending before the sweep judges it: longer
/// than any write is expected to take.
pub const PENDING_GRACE_MS: u64 = 24 * 3600 * 1000;
/// Uploads and blobs judged per pass, each.
const PER_PASS: u64 = 1000;

/// What one pass deleted.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Swept {
    pub uploads: usize,
    pub blobs: usize,
}

impl Files {
    /// One pass, as of `now_ms`.
    pub async fn sweep(&self, now_ms: u64) -> Result<Swept, StorageError> {
        let uploads = self.sweep_uploads(now_ms, PER_PASS).await?;
        let mut blobs = 0;
        let before = now_ms.saturating_sub(PENDING_GRACE_MS);
        for blob in pending::stale(&self.documents, before, PER_PASS).await? {
            let current = records::get(&self.documents, &blob.app, &blob.key).await?;
            let in_use = current.is_some_and(|record| record.blob == blob.blob);
            if !in_use {
                if !self.delete_blob_now(&blob.app, &blob.blob).await {
                    // The backend failed: left pending for the next pass.
                    continue;
                }
                blobs += 1;
            }
            self.settle(&blob.blob).await;
        }
        Ok(Swept { uploads, blobs })
    }
}

/// Sweeps every [`SWEEP_EVERY`] until the task is aborted.
pub async fn run(files: Files) {
    // Not at start-up: what it finds is a day old anyway.
    let mut ticks =
        tokio::time::interval_at(tokio::time::Instant::now() + SWEEP_EVERY, SWEEP_EVERY);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        match files.sweep(now_ms()).await {
            Ok(swept) if swept != Swept::default() => {
                tracing::info!(
                    uploads = swept.uploads,
                    blobs = swept.blobs,
                    "swept expired uploads and left-behind file bytes"
                );
            }
            Ok(_) => {}
            Err(err) => tracing::warn!("sweeping file storage: {err}"),
        }
    }
}
