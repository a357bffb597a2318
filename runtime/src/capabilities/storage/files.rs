//! The files of every app: what the WIT host, the client endpoints and the
//! admin API share. Bytes go to the blob backend under a random id; the
//! record in the document store ([`crate::store::platform::files`]) maps the
//! app's key to its blob, so every backend behaves alike and a reader sees
//! one version of a file, whole.

use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::stream::{BoxStream, Stream, StreamExt};
use object_store::{GetOptions, GetRange, ObjectStore, ObjectStoreExt, WriteMultipart};

use super::backend::Blobs;
use super::keys;
use super::signing::UrlSigner;
use super::{StorageError, WriteSlots};
use crate::capabilities::turns::BlockingTurns;
use crate::store::Documents;
use crate::store::platform::files::{self as records, FileRecord};
use crate::store::platform::now_ms;
use crate::store::platform::pending_blobs::{self as pending, PendingBlob};
use crate::store::platform::uploads;
use crate::store::query::new_id;

/// Bytes buffered per part of an upload (S3's smallest part is 5 MiB).
const PART_BYTES: usize = 5 * 1024 * 1024;
/// Parts of one upload sent at once.
const PARTS_IN_FLIGHT: usize = 2;
/// Longest wait for the next piece of an upload's body.
const IDLE: Duration = Duration::from_secs(30);
/// Largest file (S3's largest multipart object is 5 TiB; this is Kiln's own bound).
pub const MAX_FILE_BYTES: u64 = 5 * 1024 * 1024 * 1024;
/// Most files one listing page holds.
pub const MAX_PAGE: u32 = 1000;
/// Longest content type kept.
const MAX_CONTENT_TYPE: usize = 255;

/// What is known of a stored file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileMeta {
    pub key: String,
    pub size: u64,
    pub content_type: String,
    pub etag: String,
    pub modified_ms: u64,
}

impl From<&FileRecord> for FileMeta {
    fn from(record: &FileRecord) -> Self {
        FileMeta {
            key: record.key.clone(),
            size: record.size,
            content_type: record.content_type.clone(),
            etag: record.blob.clone(),
            modified_ms: record.modified_ms,
        }
    }
}

/// Whether a write may replace a file already at its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overwrite {
    Allowed,
    /// The write is a `conflict` when a file is there (a conditional create).
    Refused,
}

/// A file being read: its metadata, the bytes asked for, and their stream.
pub struct Download {
    pub meta: FileMeta,
    /// The bytes the stream holds (the whole file without a range).
    pub range: Range<u64>,
    pub body: BoxStream<'static, Result<Bytes, StorageError>>,
}

impl Download {
    /// The bytes, read whole; more than the range holds (the blob and its
    /// record disagree) is `unavailable`.
    pub async fn into_bytes(mut self) -> Result<Bytes, StorageError> {
        let expected = self.range.end - self.range.start;
        let mut bytes = BytesMut::with_capacity(expected as usize);
        while let Some(chunk) = self.body.next().await {
            bytes.extend_from_slice(&chunk?);
            if bytes.len() as u64 > expected {
                return Err(StorageError::Unavailable(format!(
                    "{:?} is longer than its record says",
                    self.meta.key
                )));
            }
        }
        Ok(bytes.freeze())
    }
}

/// One page of a listing.
pub struct Listing {
    pub files: Vec<FileMeta>,
    /// The key to continue after; none on the last page.
    pub cursor: Option<String>,
}

#[derive(Clone)]
pub struct Files {
    pub(super) documents: Documents,
    pub(super) blobs: Arc<Blobs>,
    write_slots: Arc<WriteSlots>,
    pub(super) thumbnail_turns: Arc<BlockingTurns>,
    signer: Arc<UrlSigner>,
    /// Records read for downloads, kept while unchanged.
    live: Arc<records::LiveFiles>,
}

impl Files {
    /// `admin_key` keys the signatures of Kiln's signed URLs.
    pub fn new(documents: Documents, blobs: Arc<Blobs>, admin_key: &str) -> Self {
        Files {
            documents,
            blobs,
            write_slots: Arc::default(),
            thumbnail_turns: Arc::default(),
            signer: Arc::new(UrlSigner::new(admin_key)),
            live: Arc::default(),
        }
    }

    pub fn signer(&self) -> &UrlSigner {
        &self.signer
    }

    /// Writes in progress, per app.
    pub fn write_slots(&self) -> &WriteSlots {
        &self.write_slots
    }

    pub async fn create_indexes(&self) -> Result<(), StorageError> {
        records::create_indexes(&self.documents).await?;
        pending::create_indexes(&self.documents).await?;
        uploads::create_indexes(&self.documents).await?;
        Ok(())
    }

    /// Streams `body` into a new file at `key`, refusing it as soon as it
    /// passes `max_bytes` (nothing is left behind).
    pub async fn put<S, E>(
        &self,
        app: &str,
        key: &str,
        content_type: Option<&str>,
        overwrite: Overwrite,
        max_bytes: u64,
        body: S,
    ) -> Result<FileMeta, StorageError>
    where
        S: Stream<Item = Result<Bytes, E>> + Send + Unpin,
        E: std::fmt::Display,
    {
        keys::check(key)?;
        let content_type = content_type_of(content_type)?;
        if overwrite == Overwrite::Refused
            && records::get(&self.documents, app, key).await?.is_some()
        {
            return Err(conflict(key));
        }
        let blob = new_id();
        self.while_pending(app, key, &blob, async {
            let size = self
                .write_blob(app, &blob, &content_type, max_bytes, body)
                .await?;
            self.commit(app, key, blob.clone(), size, content_type, overwrite)
                .await
        })
        .await
    }

    /// Copies the file at `from` to `to` (replacing what is there).
    pub async fn copy(&self, app: &str, from: &str, to: &str) -> Result<FileMeta, StorageError> {
        keys::check(from)?;
        keys::check(to)?;
        let source = records::get(&self.documents, app, from)
            .await?
            .ok_or_else(|| not_found(from))?;
        let blob = new_id();
        self.while_pending(app, to, &blob, async {
            self.blobs
                .store()
                .copy(
                    &self.blobs.path(app, &source.blob),
                    &self.blobs.path(app, &blob),
                )
                .await
                .map_err(|e| backend_error(from, e))?;
            self.blobs.make_durable(app, &blob).await?;
            self.commit(
                app,
                to,
                blob.clone(),
                source.size,
                source.content_type,
                Overwrite::Allowed,
            )
            .await
        })
        .await
    }

    /// Runs `work`, which writes `blob` for `key` and points the record at
    /// it, with the blob noted as pending meanwhile.
    pub(super) async fn while_pending<T>(
        &self,
        app: &str,
        key: &str,
        blob: &str,
        work: impl Future<Output = Result<T, StorageError>>,
    ) -> Result<T, StorageError> {
        self.mark_pending(app, key, blob).await?;
        let result = work.await;
        self.settle(blob).await;
        result
    }

    /// Notes `blob` as not settled before writing or deleting it, so a
    /// crash in between leaves something the sweep finds.
    async fn mark_pending(&self, app: &str, key: &str, blob: &str) -> Result<(), StorageError> {
        let pending = PendingBlob {
            blob: blob.to_string(),
            app: app.to_string(),
            key: key.to_string(),
            created_ms: now_ms(),
        };
        Ok(pending::mark(&self.documents, &pending).await?)
    }

    /// The blob's fate is settled; a failure here only leaves work for the sweep.
    pub(super) async fn settle(&self, blob: &str) {
        if let Err(err) = pending::settle(&self.documents, blob).await {
            tracing::warn!(blob, "a settled blob stays listed for the sweep: {err}");
        }
    }

    /// Switches `key` to the stored `blob`, then deletes the blob it held;
    /// a refused switch deletes `blob`.
    pub(super) async fn commit(
        &self,
        app: &str,
        key: &str,
        blob: String,
        size: u64,
        content_type: String,
        overwrite: Overwrite,
    ) -> Result<FileMeta, StorageError> {
        let now = now_ms();
        let record = FileRecord {
            id: records::record_id(app, key),
            app: app.to_string(),
            key: key.to_string(),
            blob,
            size,
            content_type,
            created_ms: now,
            modified_ms: now,
        };
        let replaced = match overwrite {
            Overwrite::Refused => match records::create(&self.documents, &record).await {
                Ok(true) => None,
                Ok(false) => {
                    self.delete_blob(app, key, &record.blob).await;
                    return Err(conflict(key));
                }
                Err(err) => {
                    self.delete_blob(app, key, &record.blob).await;
                    return Err(err.into());
                }
            },
            Overwrite::Allowed => match records::replace(&self.documents, &record).await {
                Ok(before) => before,
                Err(err) => {
                    self.delete_blob(app, key, &record.blob).await;
                    return Err(err.into());
                }
            },
        };
        if let Some(old) = replaced {
            self.delete_blob(app, key, &old.blob).await;
        }
        Ok(FileMeta::from(&record))
    }

    /// Writes the blob, counting bytes as they arrive; returns its size.
    async fn write_blob<S, E>(
        &self,
        app: &str,
        blob: &str,
        content_type: &str,
        max_bytes: u64,
        mut body: S,
    ) -> Result<u64, StorageError>
    where
        S: Stream<Item = Result<Bytes, E>> + Send + Unpin,
        E: std::fmt::Display,
    {
        let path = self.blobs.path(app, blob);
        let upload = self
            .blobs
            .store()
            .put_multipart_opts(&path, self.blobs.put_options(content_type))
            .await
            .map_err(|e| backend_error(blob, e))?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, PART_BYTES);
        let mut size = 0u64;
        let outcome: Result<(), StorageError> = async {
            loop {
                let Some(chunk) = next_chunk(&mut body).await? else {
                    return Ok(());
                };
                size += chunk.len() as u64;
                if size > max_bytes {
                    return Err(StorageError::LimitExceeded(format!(
                        "the file is over its limit of {max_bytes} bytes"
                    )));
                }
                writer
                    .wait_for_capacity(PARTS_IN_FLIGHT)
                    .await
                    .map_err(|e| backend_error(blob, e))?;
                writer.put(chunk);
            }
        }
        .await;
        match outcome {
            Ok(()) => {
                writer.finish().await.map_err(|e| backend_error(blob, e))?;
                self.blobs.make_durable(app, blob).await?;
                Ok(size)
            }
            Err(err) => {
                if let Err(abort) = writer.abort().await {
                    tracing::warn!(app, blob, "an aborted upload left parts behind: {abort}");
                }
                Err(err)
            }
        }
    }

    /// The file's metadata, or none.
    pub async fn head(&self, app: &str, key: &str) -> Result<Option<FileMeta>, StorageError> {
        keys::check(key)?;
        Ok(self
            .live
            .get(&self.documents, app, key)
            .await?
            .as_ref()
            .map(FileMeta::from))
    }

    /// Reads the file, or `range` of it (clamped to its end; a range that
    /// starts at or past the end is `invalid-input`).
    pub async fn get(
        &self,
        app: &str,
        key: &str,
        range: Option<Range<u64>>,
    ) -> Result<Download, StorageError> {
        keys::check(key)?;
        let record = self
            .live
            .get(&self.documents, app, key)
            .await?
            .ok_or_else(|| not_found(key))?;
        self.open(app, FileMeta::from(&record), range).await
    }

    /// Reads the version of a file that `meta` (from [`Files::head`])
    /// describes, or `range` of it, without reading its record again.
    pub async fn open(
        &self,
        app: &str,
        meta: FileMeta,
        range: Option<Range<u64>>,
    ) -> Result<Download, StorageError> {
        let range = match range {
            None => 0..meta.size,
            Some(r) if r.start >= meta.size || r.start >= r.end => {
                return Err(StorageError::RangeNotSatisfiable(meta.size));
            }
            Some(r) => r.start..r.end.min(meta.size),
        };
        if range.is_empty() {
            return Ok(Download {
                meta,
                range,
                body: futures::stream::empty().boxed(),
            });
        }
        let options = GetOptions {
            range: Some(GetRange::Bounded(range.clone())),
            ..GetOptions::default()
        };
        // The blob is the version's ETag.
        let found = self
            .blobs
            .store()
            .get_opts(&self.blobs.path(app, &meta.etag), options)
            .await
            .map_err(|e| match e {
                // Replaced and deleted since `meta` was read.
                object_store::Error::NotFound { .. } => StorageError::Conflict(format!(
                    "{:?} changed while it was read; read it again",
                    meta.key
                )),
                other => backend_error(&meta.key, other),
            })?;
        let key = meta.key.clone();
        let body = found
            .into_stream()
            .map(move |chunk| chunk.map_err(|e| backend_error(&key, e)))
            .boxed();
        Ok(Download { meta, range, body })
    }

    /// Deletes the file: `false` when there was none.
    pub async fn delete(&self, app: &str, key: &str) -> Result<bool, StorageError> {
        keys::check(key)?;
        match records::delete(&self.documents, app, key).await? {
            Some(record) => {
                self.delete_blob(app, key, &record.blob).await;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Files whose key starts with `prefix`, in key order, after `cursor`.
    pub async fn list(
        &self,
        app: &str,
        prefix: &str,
        cursor: Option<&str>,
        limit: u32,
    ) -> Result<Listing, StorageError> {
        keys::check_prefix(prefix)?;
        if limit == 0 || limit > MAX_PAGE {
            return Err(StorageError::InvalidInput(format!(
                "a listing's limit is between 1 and {MAX_PAGE}"
            )));
        }
        if let Some(cursor) = cursor {
            keys::check(cursor)?;
        }
        let (found, more) = records::list(&self.documents, app, prefix, cursor, limit).await?;
        let files: Vec<FileMeta> = found.iter().map(FileMeta::from).collect();
        let cursor = more.then(|| files.last().map(|f| f.key.clone())).flatten();
        Ok(Listing { files, cursor })
    }

    /// An S3 presigned URL for the file's bytes; `None` on the local backend.
    pub async fn presigned_get(
        &self,
        app: &str,
        key: &str,
        expires_in: Duration,
    ) -> Result<Option<String>, StorageError> {
        let record = records::get(&self.documents, app, key)
            .await?
            .ok_or_else(|| not_found(key))?;
        self.blobs
            .presign(
                http::Method::GET,
                &self.blobs.path(app, &record.blob),
                expires_in,
            )
            .await
    }

    /// Files and bytes the app stores.
    pub async fn usage(&self, app: &str) -> Result<(u64, u64), StorageError> {
        Ok(records::usage(&self.documents, app).await?)
    }

    /// Deletes a blob no record points at (it was `key`'s). A failure is
    /// logged, never an error for the caller whose write already counted:
    /// the blob stays pending, and the sweep deletes it later.
    async fn delete_blob(&self, app: &str, key: &str, blob: &str) {
        if let Err(err) = self.mark_pending(app, key, blob).await {
            tracing::warn!(app, blob, "a replaced file's bytes were kept: {err}");
            return;
        }
        if self.delete_blob_now(app, blob).await {
            self.settle(blob).await;
        }
    }

    /// Deletes a blob and its thumbnails; false when the backend failed.
    pub(super) async fn delete_blob_now(&self, app: &str, blob: &str) -> bool {
        let path = self.blobs.path(app, blob);
        match self.blobs.store().delete(&path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
            Err(err) => {
                tracing::warn!(app, blob, "a replaced file's bytes were kept: {err}");
                return false;
            }
        }
        self.delete_thumbnails(app, blob).await;
        true
    }
}

/// The next piece of a body: none at its end; `invalid-input` when it was
/// cut off or sent nothing for [`IDLE`].
pub(super) async fn next_chunk<S, E>(body: &mut S) -> Result<Option<Bytes>, StorageError>
where
    S: Stream<Item = Result<Bytes, E>> + Send + Unpin,
    E: std::fmt::Display,
{
    match tokio::time::timeout(IDLE, body.next()).await {
        Err(_) => Err(StorageError::InvalidInput(format!(
            "the upload sent nothing for {} s",
            IDLE.as_secs()
        ))),
        Ok(None) => Ok(None),
        Ok(Some(Ok(chunk))) => Ok(Some(chunk)),
        Ok(Some(Err(e))) => Err(StorageError::InvalidInput(format!(
            "the upload was cut off: {e}"
        ))),
    }
}

fn content_type_of(given: Option<&str>) -> Result<String, StorageError> {
    let given = given.map(str::trim).filter(|t| !t.is_empty());
    let Some(value) = given else {
        return Ok("application/octet-stream".to_string());
    };
    let valid = value.len() <= MAX_CONTENT_TYPE
        && value.contains('/')
        && value.chars().all(|c| c.is_ascii_graphic() || c == ' ');
    if !valid {
        return Err(StorageError::InvalidInput(format!(
            "content type {value:?} is not `type/subtype` in at most {MAX_CONTENT_TYPE} printable ASCII characters"
        )));
    }
    Ok(value.to_string())
}

fn not_found(key: &str) -> StorageError {
    StorageError::NotFound(format!("no file at {key:?}"))
}

fn conflict(key: &str) -> StorageError {
    StorageError::Conflict(format!("a file is already at {key:?}"))
}

fn backend_error(what: &str, err: object_store::Error) -> StorageError {
    match err {
        object_store::Error::NotFound { .. } => StorageError::Unavailable(format!(
            "the bytes of {what:?} are missing from the file backend"
        )),
        other => StorageError::Unavailable(format!("file backend: {other}")),
    }
}
