//! Resumable uploads: a client declares a file's size, then sends its bytes
//! in as many requests as it needs, each continuing at the offset the
//! server last confirmed; an interrupted request loses only what was not
//! yet confirmed. One protocol on both backends:
//!
//! - local: the bytes go to a staging file, fsynced before the offset
//!   advances, and the file is renamed into place at the end;
//! - S3: a multipart upload; parts of [`PART_BYTES`] are sent as they fill,
//!   so the confirmed offset is a multiple of it until the last part, and
//!   bytes of an unfilled part are sent again by the next request.

use std::io::SeekFrom;

use bytes::{Bytes, BytesMut};
use futures::stream::Stream;
use object_store::PutPayload;
use object_store::multipart::{MultipartStore, PartId};
use tokio::io::{AsyncSeekExt, AsyncWriteExt};

use super::files::{FileMeta, Files, Overwrite, next_chunk};
use super::{StorageError, keys};
use crate::store::platform::now_ms;
use crate::store::platform::uploads::{self as records, UploadRecord};
use crate::store::query::new_id;

/// Bytes per S3 part of a resumable upload.
pub const PART_BYTES: usize = 8 * 1024 * 1024;
/// How long an unfinished upload may be continued.
const LIFETIME_MS: u64 = 24 * 3600 * 1000;
/// How long one append may hold an upload.
const LEASE_MS: u64 = 10 * 60 * 1000;
/// Unfinished uploads one app may have.
const OPEN_PER_APP: u64 = 100;

/// Where an upload stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Progress {
    pub id: String,
    pub key: String,
    pub offset: u64,
    pub size: u64,
    /// The stored file, once the last byte arrived.
    pub file: Option<FileMeta>,
}

fn progress(record: &UploadRecord, file: Option<FileMeta>) -> Progress {
    Progress {
        id: record.id.clone(),
        key: record.key.clone(),
        offset: record.offset,
        size: record.size,
        file,
    }
}

/// An upload's id: 128 bits from the operating system's generator, in hex.
fn upload_id() -> Result<String, StorageError> {
    use ring::rand::SecureRandom;
    let mut bits = [0u8; 16];
    ring::rand::SystemRandom::new()
        .fill(&mut bits)
        .map_err(|_| StorageError::Unavailable("the system's random generator failed".into()))?;
    Ok(hex::encode(bits))
}

fn gone(id: &str) -> StorageError {
    StorageError::NotFound(format!(
        "no upload `{}` (finished, aborted or expired)",
        id.escape_debug()
    ))
}

impl Files {
    /// Starts an upload of `size` bytes to `key`, for `owner` alone when
    /// signed in.
    pub async fn start_upload(
        &self,
        app: &str,
        owner: Option<&str>,
        key: &str,
        size: u64,
        content_type: &str,
        overwrite: Overwrite,
    ) -> Result<Progress, StorageError> {
        keys::check(key)?;
        if size == 0 {
            return Err(StorageError::InvalidInput(
                "a resumable upload has at least 1 byte; store an empty file with PUT".into(),
            ));
        }
        if records::count(&self.documents, app, now_ms()).await? >= OPEN_PER_APP {
            return Err(StorageError::Busy(format!(
                "app `{app}` already has {OPEN_PER_APP} unfinished uploads"
            )));
        }
        let id = upload_id()?;
        let blob = new_id();
        let multipart = match self.blobs.multipart() {
            Some(s3) => Some(
                s3.create_multipart_opts(
                    &self.blobs.path(app, &blob),
                    self.blobs.put_options(content_type),
                )
                .await
                .map_err(|e| StorageError::Unavailable(format!("file backend: {e}")))?,
            ),
            None => {
                let staging = self.blobs.staging(app, &blob)?;
                tokio::fs::File::create(&staging)
                    .await
                    .map_err(|e| StorageError::Unavailable(format!("staging an upload: {e}")))?;
                None
            }
        };
        let now = now_ms();
        let record = UploadRecord {
            id,
            app: app.to_string(),
            owner: owner.map(str::to_string),
            key: key.to_string(),
            size,
            content_type: content_type.to_string(),
            offset: 0,
            blob,
            multipart,
            parts: Vec::new(),
            overwrite: overwrite == Overwrite::Allowed,
            created_ms: now,
            expires_ms: now + LIFETIME_MS,
            busy_until_ms: 0,
        };
        records::insert(&self.documents, &record).await?;
        Ok(progress(&record, None))
    }

    /// Where the upload stands; not found for a caller other than its owner.
    pub async fn upload_progress(
        &self,
        app: &str,
        id: &str,
        caller: Option<&str>,
    ) -> Result<Progress, StorageError> {
        let record = records::get(&self.documents, app, id, caller)
            .await?
            .filter(|r| r.expires_ms > now_ms())
            .ok_or_else(|| gone(id))?;
        Ok(progress(&record, None))
    }

    /// Appends `body` at `offset` (which must be the confirmed offset); at
    /// the last byte the file is stored.
    pub async fn append_upload<S, E>(
        &self,
        app: &str,
        id: &str,
        caller: Option<&str>,
        offset: u64,
        mut body: S,
    ) -> Result<Progress, StorageError>
    where
        S: Stream<Item = Result<Bytes, E>> + Send + Unpin,
        E: std::fmt::Display,
    {
        let now = now_ms();
        let Some(mut record) = records::claim(
            &self.documents,
            app,
            id,
            caller,
            offset,
            now,
            now + LEASE_MS,
        )
        .await?
        else {
            let current = self.upload_progress(app, id, caller).await?;
            if current.offset == offset {
                return Err(StorageError::Busy(
                    "another request is appending to this upload; try again when it ends".into(),
                ));
            }
            return Err(StorageError::Conflict(format!(
                "the upload is at offset {}, not {offset}",
                current.offset
            )));
        };
        let outcome = self.append(&mut record, &mut body).await;
        // Whatever happened, what was confirmed is recorded and the upload let go.
        records::advance(&self.documents, &record).await?;
        outcome?;
        if record.offset < record.size {
            return Ok(progress(&record, None));
        }
        self.finish_upload(&record).await
    }

    async fn append<S, E>(
        &self,
        record: &mut UploadRecord,
        body: &mut S,
    ) -> Result<(), StorageError>
    where
        S: Stream<Item = Result<Bytes, E>> + Send + Unpin,
        E: std::fmt::Display,
    {
        let room = record.size - record.offset;
        match &record.multipart {
            None => {
                let staging = self.blobs.staging(&record.app, &record.blob)?;
                let mut file = tokio::fs::OpenOptions::new()
                    .write(true)
                    .open(&staging)
                    .await
                    .map_err(|e| StorageError::Unavailable(format!("staging an upload: {e}")))?;
                // Bytes past the confirmed offset (a request that failed
                // before confirming them) are written again.
                file.set_len(record.offset).await.map_err(io)?;
                file.seek(SeekFrom::Start(record.offset))
                    .await
                    .map_err(io)?;
                let mut written = 0u64;
                let result = loop {
                    match next_chunk(body).await {
                        Ok(None) => break Ok(()),
                        Ok(Some(chunk)) => {
                            if written + chunk.len() as u64 > room {
                                break Err(over(record.size));
                            }
                            if let Err(e) = file.write_all(&chunk).await {
                                break Err(io(e));
                            }
                            written += chunk.len() as u64;
                        }
                        Err(e) => break Err(e),
                    }
                };
                // Confirm only whole chunks that are durable; a failed
                // request keeps them, and the client continues after them.
                file.set_len(record.offset + written).await.map_err(io)?;
                file.sync_data().await.map_err(io)?;
                record.offset += written;
                result
            }
            Some(multipart) => {
                let s3 = self.blobs.multipart().ok_or_else(|| {
                    StorageError::Unavailable("an S3 upload on a server without S3".into())
                })?;
                let path = self.blobs.path(&record.app, &record.blob);
                let mut buffer = BytesMut::new();
                let mut received = 0u64;
                let result = loop {
                    match next_chunk(body).await {
                        Ok(None) => break Ok(()),
                        Ok(Some(chunk)) => {
                            received += chunk.len() as u64;
                            if received > room {
                                break Err(over(record.size));
                            }
                            buffer.extend_from_slice(&chunk);
                            while buffer.len() >= PART_BYTES {
                                let part = buffer.split_to(PART_BYTES).freeze();
                                let id = put_part(
                                    s3.as_ref(),
                                    &path,
                                    multipart,
                                    record.parts.len(),
                                    part,
                                )
                                .await?;
                                record.parts.push(id);
                                record.offset += PART_BYTES as u64;
                            }
                        }
                        Err(e) => break Err(e),
                    }
                };
                // The last part may be short; any other unfilled part is
                // sent again by the next request.
                if result.is_ok()
                    && record.offset + buffer.len() as u64 == record.size
                    && !buffer.is_empty()
                {
                    let len = buffer.len() as u64;
                    let id = put_part(
                        s3.as_ref(),
                        &path,
                        multipart,
                        record.parts.len(),
                        buffer.freeze(),
                    )
                    .await?;
                    record.parts.push(id);
                    record.offset += len;
                }
                result
            }
        }
    }

    async fn finish_upload(&self, record: &UploadRecord) -> Result<Progress, StorageError> {
        // From here the blob is no longer the upload's: pending until the record points at it.
        self.while_pending(
            &record.app,
            &record.key,
            &record.blob,
            self.complete_upload(record),
        )
        .await
    }

    async fn complete_upload(&self, record: &UploadRecord) -> Result<Progress, StorageError> {
        let path = self.blobs.path(&record.app, &record.blob);
        match (&record.multipart, self.blobs.multipart()) {
            (Some(multipart), Some(s3)) => {
                let parts = record
                    .parts
                    .iter()
                    .map(|id| PartId {
                        content_id: id.clone(),
                    })
                    .collect();
                s3.complete_multipart(&path, multipart, parts)
                    .await
                    .map_err(|e| StorageError::Unavailable(format!("file backend: {e}")))?;
            }
            _ => {
                let staging = self.blobs.staging(&record.app, &record.blob)?;
                let target = self.blobs.local_file(&record.app, &record.blob)?;
                if let Some(folder) = target.parent() {
                    tokio::fs::create_dir_all(folder).await.map_err(io)?;
                }
                tokio::fs::rename(&staging, &target).await.map_err(io)?;
                self.blobs.make_durable(&record.app, &record.blob).await?;
            }
        }
        records::delete(&self.documents, &record.app, &record.id).await?;
        let overwrite = if record.overwrite {
            Overwrite::Allowed
        } else {
            Overwrite::Refused
        };
        let meta = self
            .commit(
                &record.app,
                &record.key,
                record.blob.clone(),
                record.size,
                record.content_type.clone(),
                overwrite,
            )
            .await?;
        Ok(Progress {
            id: record.id.clone(),
            key: record.key.clone(),
            offset: record.size,
            size: record.size,
            file: Some(meta),
        })
    }

    /// Drops an unfinished upload and what it stored.
    pub async fn abort_upload(
        &self,
        app: &str,
        id: &str,
        caller: Option<&str>,
    ) -> Result<(), StorageError> {
        let record = records::get(&self.documents, app, id, caller)
            .await?
            .ok_or_else(|| gone(id))?;
        records::delete(&self.documents, app, id).await?;
        self.discard_upload(&record).await;
        Ok(())
    }

    /// Uploads past their time, swept: returns how many were dropped.
    pub(super) async fn sweep_uploads(
        &self,
        now_ms: u64,
        limit: u64,
    ) -> Result<usize, StorageError> {
        let mut dropped = 0;
        for record in records::expired(&self.documents, now_ms, limit).await? {
            if records::delete_expired(&self.documents, &record.id, now_ms).await? {
                self.discard_upload(&record).await;
                dropped += 1;
            }
        }
        Ok(dropped)
    }

    /// Drops the bytes of an upload whose record is gone.
    async fn discard_upload(&self, record: &UploadRecord) {
        let app = &record.app;
        match (&record.multipart, self.blobs.multipart()) {
            (Some(multipart), Some(s3)) => {
                let path = self.blobs.path(app, &record.blob);
                if let Err(err) = s3.abort_multipart(&path, multipart).await {
                    tracing::warn!(
                        app,
                        upload = record.id,
                        "an aborted upload left parts behind: {err}"
                    );
                }
            }
            _ => {
                if let Ok(staging) = self.blobs.staging(app, &record.blob) {
                    let _ = tokio::fs::remove_file(staging).await;
                }
            }
        }
    }
}

async fn put_part(
    s3: &dyn MultipartStore,
    path: &object_store::path::Path,
    multipart: &str,
    index: usize,
    bytes: Bytes,
) -> Result<String, StorageError> {
    let part = s3
        .put_part(
            path,
            &multipart.to_string(),
            index,
            PutPayload::from_bytes(bytes),
        )
        .await
        .map_err(|e| StorageError::Unavailable(format!("file backend: {e}")))?;
    Ok(part.content_id)
}

fn over(size: u64) -> StorageError {
    StorageError::LimitExceeded(format!(
        "the upload was declared as {size} bytes and sent more"
    ))
}

fn io(err: std::io::Error) -> StorageError {
    StorageError::Unavailable(format!("staging an upload: {err}"))
}
