//! `kiln:platform/storage`: the app's files, for its functions. The same
//! [`Files`] service serves the client endpoints and the admin API.
//!
//! Streams: `write` hands the guest a `wasi:io` output stream whose bytes
//! flow through a bounded pipe into a multipart upload, and `read` hands it
//! an input stream over the backend's download, so a function passes a
//! large file through without holding it.

pub mod backend;
pub mod buckets;
mod files;
pub mod keys;
pub mod signing;
pub mod sweep;
pub mod thumbnails;
pub mod uploads;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};
use tokio_util::io::{ReaderStream, StreamReader};
use wasmtime::component::{HasData, Linker, Resource, ResourceTable};
use wasmtime_wasi::WasiCtxBuilder;
use wasmtime_wasi::p2::pipe::{AsyncReadStream, AsyncWriteStream};
use wasmtime_wasi::p2::{DynInputStream, DynOutputStream};

pub use self::files::{Download, FileMeta, Files, Listing, MAX_FILE_BYTES, MAX_PAGE, Overwrite};
use super::bindings::kiln::platform::storage::{self as wit, Error, FileMeta as WitMeta, ListPage};
use super::{
    AppManifest, Asked, Backends, Capability, CapabilityView, ConfigureError, FunctionManifest,
    Instances, Invocation, Pick,
};
use crate::store::StoreError;

/// Largest file `put` and `get` move in one call.
const MAX_WHOLE_BYTES: u64 = 16 * 1024 * 1024;
/// Bytes between the guest's stream and the upload.
const PIPE_BYTES: usize = 64 * 1024;
/// What a key's segment keeps unencoded in a URL: RFC 3986's unreserved.
pub const URL_SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');
/// Files one app may be writing at once (functions and clients).
const WRITES_PER_APP: usize = 8;
/// Files one client address may be uploading at once, across apps.
const WRITES_PER_CLIENT: usize = 4;
/// Files the server writes at once: each buffers at most about 15 MiB (two
/// parts in flight and one filling), so writes hold at most about 2 GiB.
const WRITES_PER_SERVER: usize = 128;

/// Why a storage operation failed; each case is one a caller can act on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StorageError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    InvalidInput(String),
    #[error("{0}")]
    PermissionDenied(String),
    #[error("{0}")]
    LimitExceeded(String),
    /// A range starting at or past the end of a file of this size.
    #[error("the range starts at or past the end of the file ({0} bytes)")]
    RangeNotSatisfiable(u64),
    /// The app already writes as many files as it may at once.
    #[error("{0}")]
    Busy(String),
    #[error("{0}")]
    Unavailable(String),
}

impl From<StoreError> for StorageError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::InvalidInput(m) => StorageError::InvalidInput(m),
            StoreError::Conflict(m) => StorageError::Conflict(m),
            StoreError::NotFound(m) => StorageError::NotFound(m),
            StoreError::LimitExceeded(m) => StorageError::LimitExceeded(m),
            StoreError::Unavailable(m) => StorageError::Unavailable(m),
        }
    }
}

impl From<StorageError> for Error {
    fn from(err: StorageError) -> Self {
        match err {
            StorageError::NotFound(m) => Error::NotFound(m),
            StorageError::Conflict(m) => Error::Conflict(m),
            StorageError::InvalidInput(m) => Error::InvalidInput(m),
            e @ StorageError::RangeNotSatisfiable(_) => Error::InvalidInput(e.to_string()),
            StorageError::PermissionDenied(m) => Error::PermissionDenied(m),
            StorageError::LimitExceeded(m) | StorageError::Busy(m) => Error::LimitExceeded(m),
            StorageError::Unavailable(m) => Error::Unavailable(m),
        }
    }
}

/// Writes in progress: per app, per client address and on the whole
/// server. Each write buffers up to two parts, so the server's cap bounds
/// the memory writes take; the others keep one app, or one client, from
/// holding every slot.
pub struct WriteSlots {
    apps: Mutex<HashMap<String, Arc<Semaphore>>>,
    /// Writes per client address (an IPv6 address counts by its /64).
    clients: ClientWrites,
    server: Arc<Semaphore>,
}

impl Default for WriteSlots {
    fn default() -> Self {
        WriteSlots {
            apps: Mutex::default(),
            clients: Arc::default(),
            server: Arc::new(Semaphore::new(WRITES_PER_SERVER)),
        }
    }
}

/// A write's slot, given back when dropped.
pub struct WriteSlot {
    _client: Option<ClientSlot>,
    _app: OwnedSemaphorePermit,
    _server: OwnedSemaphorePermit,
}

/// One of a client address's writes; an address at none is forgotten.
struct ClientSlot {
    address: IpAddr,
    clients: ClientWrites,
}

type ClientWrites = Arc<Mutex<HashMap<IpAddr, usize>>>;

impl Drop for ClientSlot {
    fn drop(&mut self) {
        let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = clients.get_mut(&self.address) {
            *count -= 1;
            if *count == 0 {
                clients.remove(&self.address);
            }
        }
    }
}

/// The address a client's writes count under.
fn client_key(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V6(v6) if v6.to_ipv4_mapped().is_none() => {
            let mut octets = v6.octets();
            octets[8..].fill(0);
            IpAddr::V6(octets.into())
        }
        IpAddr::V6(v6) => IpAddr::V4(v6.to_ipv4_mapped().expect("checked")),
        v4 => v4,
    }
}

impl WriteSlots {
    /// A slot for one more write of `app` (from `client`, for a client's
    /// upload), or `Busy` at once.
    pub fn take(&self, app: &str, client: Option<IpAddr>) -> Result<WriteSlot, StorageError> {
        // Counted and checked under one lock, so racing writes cannot pass the cap.
        let client = client
            .map(|address| {
                let address = client_key(address);
                let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
                let count = clients.entry(address).or_insert(0);
                if *count >= WRITES_PER_CLIENT {
                    return Err(StorageError::Busy(format!(
                        "this client is already uploading {WRITES_PER_CLIENT} files"
                    )));
                }
                *count += 1;
                Ok(ClientSlot {
                    address,
                    clients: self.clients.clone(),
                })
            })
            .transpose()?;
        let slots = self
            .apps
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(app.to_string())
            .or_insert_with(|| Arc::new(Semaphore::new(WRITES_PER_APP)))
            .clone();
        let app_permit = slots.try_acquire_owned().map_err(|_| {
            StorageError::Busy(format!(
                "app `{app}` is already writing {WRITES_PER_APP} files"
            ))
        })?;
        let server_permit = self.server.clone().try_acquire_owned().map_err(|_| {
            StorageError::Busy(format!(
                "the server is already writing {WRITES_PER_SERVER} files"
            ))
        })?;
        Ok(WriteSlot {
            _client: client,
            _app: app_permit,
            _server: server_permit,
        })
    }
}

pub struct Storage {
    files: Files,
}

/// An app's files as its clients reach them: the service and the buckets
/// of the app's live version.
#[derive(Clone)]
pub struct AppStorage {
    pub app: Arc<str>,
    pub files: Files,
    pub buckets: Arc<buckets::Buckets>,
}

impl AppStorage {
    /// A URL allowing `method` ("GET" or "PUT") on `key` for `expires_in`.
    /// On S3 a download is an S3 presigned URL; anything else is a URL of
    /// the app's file endpoint signed by Kiln, relative to the app's base
    /// URL (`/_kiln/files/...`). The key's bucket must be declared.
    pub async fn signed_url(
        &self,
        key: &str,
        method: &str,
        expires_in: std::time::Duration,
    ) -> Result<String, StorageError> {
        keys::check(key)?;
        let secs = expires_in.as_secs();
        if secs == 0 || secs > signing::MAX_EXPIRY_SECS {
            return Err(StorageError::InvalidInput(format!(
                "a signed URL expires in 1 to {} seconds",
                signing::MAX_EXPIRY_SECS
            )));
        }
        let (bucket, _) = key.split_once('/').unwrap_or((key, ""));
        if self.buckets.get(bucket).is_none() {
            return Err(StorageError::InvalidInput(format!(
                "`{}` is not in a bucket declared in kiln.toml (`[buckets.NAME]`)",
                key.escape_debug()
            )));
        }
        if method == "GET"
            && let Some(url) = self.files.presigned_get(&self.app, key, expires_in).await?
        {
            return Ok(url);
        }
        if method != "GET" && method != "PUT" {
            return Err(StorageError::InvalidInput(
                "the method is GET or PUT".into(),
            ));
        }
        let expires = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
            + secs;
        let signature = self.files.signer().sign(method, &self.app, key, expires);
        let path: Vec<String> = key
            .split('/')
            .map(|s| percent_encoding::utf8_percent_encode(s, URL_SEGMENT).to_string())
            .collect();
        Ok(format!(
            "/_kiln/files/{}?expires={expires}&signature={signature}",
            path.join("/")
        ))
    }
}

/// One invocation's view: its app's files.
pub struct AppFiles {
    storage: Arc<AppStorage>,
}

/// A file being written by a function.
pub struct Writer {
    /// The guest's end of the pipe, until `body` hands it out.
    pipe: Option<tokio::io::DuplexStream>,
    /// Told by `finish` that the body is complete; dropped unsent, the
    /// upload is abandoned and nothing is stored.
    finished: Option<oneshot::Sender<()>>,
    upload: Option<tokio::task::JoinHandle<Result<FileMeta, StorageError>>>,
}

impl Capability for Storage {
    const APP_KEYS: &'static [&'static str] = &["buckets"];
    type App = Arc<AppStorage>;
    type Configured = Arc<AppStorage>;
    type Instance = AppFiles;

    fn init(backends: &Backends) -> Self {
        Storage {
            files: backends.files.clone(),
        }
    }

    fn link<T: CapabilityView>(linker: &mut Linker<T>) -> wasmtime::Result<()>
    where
        Instances: Pick<Self>,
    {
        wit::add_to_linker::<T, HasStorage>(linker, |t| {
            let (instances, table) = t.capabilities_and_table();
            StorageHost {
                storage: &Pick::<Storage>::pick(instances).storage,
                table,
            }
        })
    }

    fn configure_app(&self, app: &AppManifest<'_>) -> Result<Arc<AppStorage>, ConfigureError> {
        let buckets = buckets::Buckets::parse(app.app_section)?;
        for (field, function) in buckets.rule_functions() {
            app.check_function(&field, function)?;
        }
        Ok(Arc::new(AppStorage {
            app: app.app.into(),
            files: self.files.clone(),
            buckets: Arc::new(buckets),
        }))
    }

    fn configure(
        &self,
        storage: &Arc<AppStorage>,
        _: &FunctionManifest<'_>,
    ) -> Result<Arc<AppStorage>, ConfigureError> {
        Ok(storage.clone())
    }

    fn asks(storage: &Arc<AppStorage>) -> Vec<Asked> {
        storage
            .buckets
            .rule_functions()
            .map(|(field, function)| Asked {
                asker: "a bucket's rule",
                field,
                function: function.to_string(),
            })
            .collect()
    }

    fn prepare(
        &self,
        storage: &Arc<AppStorage>,
        _: &Invocation<'_>,
        _: &mut WasiCtxBuilder,
    ) -> AppFiles {
        AppFiles {
            storage: storage.clone(),
        }
    }
}

struct HasStorage;

impl HasData for HasStorage {
    type Data<'a> = StorageHost<'a>;
}

/// What the host functions see: the invocation's files and its resources.
pub struct StorageHost<'a> {
    storage: &'a AppStorage,
    table: &'a mut ResourceTable,
}

fn wit_meta(meta: FileMeta) -> WitMeta {
    WitMeta {
        key: meta.key,
        size: meta.size,
        content_type: meta.content_type,
        etag: meta.etag,
        modified_ms: meta.modified_ms,
    }
}

fn table_error(err: wasmtime::component::ResourceTableError) -> Error {
    Error::Unavailable(format!("the invocation's resources: {err}"))
}

impl wit::Host for StorageHost<'_> {
    async fn write(
        &mut self,
        key: String,
        content_type: Option<String>,
        if_absent: bool,
        max_bytes: u64,
    ) -> Result<Resource<Writer>, Error> {
        keys::check(&key)?;
        if max_bytes > MAX_FILE_BYTES {
            return Err(Error::InvalidInput(format!(
                "max-bytes is at most {MAX_FILE_BYTES}"
            )));
        }
        let files = self.storage.files.clone();
        let app = self.storage.app.to_string();
        let slot = files.write_slots().take(&app, None)?;
        let (guest_end, host_end) = tokio::io::duplex(PIPE_BYTES);
        let (finished, told) = oneshot::channel::<()>();
        // The pipe's end is the file's end only once `finish` says so.
        let end = futures::stream::once(async move {
            match told.await {
                Ok(()) => None,
                Err(_) => Some(Err(std::io::Error::other(
                    "the writer was dropped without `finish`",
                ))),
            }
        })
        .filter_map(|last| async move { last });
        let body = ReaderStream::new(host_end).chain(end).boxed();
        let overwrite = if if_absent {
            Overwrite::Refused
        } else {
            Overwrite::Allowed
        };
        let upload = tokio::spawn(async move {
            let _slot = slot;
            files
                .put(
                    &app,
                    &key,
                    content_type.as_deref(),
                    overwrite,
                    max_bytes,
                    body,
                )
                .await
        });
        let writer = Writer {
            pipe: Some(guest_end),
            finished: Some(finished),
            upload: Some(upload),
        };
        self.table.push(writer).map_err(table_error)
    }

    async fn put(
        &mut self,
        key: String,
        data: Vec<u8>,
        content_type: Option<String>,
    ) -> Result<WitMeta, Error> {
        if data.len() as u64 > MAX_WHOLE_BYTES {
            return Err(Error::LimitExceeded(format!(
                "`put` takes at most {MAX_WHOLE_BYTES} bytes: write larger files through `write`"
            )));
        }
        let app = &self.storage.app;
        let _slot = self.storage.files.write_slots().take(app, None)?;
        let body = futures::stream::iter([Ok::<_, std::convert::Infallible>(Bytes::from(data))]);
        let meta = self
            .storage
            .files
            .put(
                app,
                &key,
                content_type.as_deref(),
                Overwrite::Allowed,
                MAX_WHOLE_BYTES,
                body,
            )
            .await?;
        Ok(wit_meta(meta))
    }

    async fn read(
        &mut self,
        key: String,
        range: Option<(u64, u64)>,
    ) -> Result<(WitMeta, Resource<DynInputStream>), Error> {
        let download = self
            .storage
            .files
            .get(
                &self.storage.app,
                &key,
                range.map(|(start, end)| start..end),
            )
            .await?;
        let reader = StreamReader::new(
            download
                .body
                .map(|chunk| chunk.map_err(std::io::Error::other)),
        );
        let stream: DynInputStream = Box::new(AsyncReadStream::new(reader));
        let stream = self.table.push(stream).map_err(table_error)?;
        Ok((wit_meta(download.meta), stream))
    }

    async fn get(&mut self, key: String) -> Result<Vec<u8>, Error> {
        let download = self
            .storage
            .files
            .get(&self.storage.app, &key, None)
            .await?;
        if download.meta.size > MAX_WHOLE_BYTES {
            return Err(Error::LimitExceeded(format!(
                "`get` returns at most {MAX_WHOLE_BYTES} bytes: read larger files through `read`"
            )));
        }
        Ok(download.into_bytes().await?.to_vec())
    }

    async fn head(&mut self, key: String) -> Result<Option<WitMeta>, Error> {
        Ok(self
            .storage
            .files
            .head(&self.storage.app, &key)
            .await?
            .map(wit_meta))
    }

    async fn delete(&mut self, key: String) -> Result<bool, Error> {
        Ok(self.storage.files.delete(&self.storage.app, &key).await?)
    }

    async fn list_files(
        &mut self,
        prefix: String,
        cursor: Option<String>,
        limit: u32,
    ) -> Result<ListPage, Error> {
        let listing = self
            .storage
            .files
            .list(&self.storage.app, &prefix, cursor.as_deref(), limit)
            .await?;
        Ok(ListPage {
            files: listing.files.into_iter().map(wit_meta).collect(),
            cursor: listing.cursor,
        })
    }

    async fn signed_url(
        &mut self,
        key: String,
        method: String,
        expires_secs: u32,
    ) -> Result<String, Error> {
        let storage = self.storage.clone();
        let expires_in = std::time::Duration::from_secs(expires_secs.into());
        Ok(storage.signed_url(&key, &method, expires_in).await?)
    }

    async fn copy(&mut self, source: String, destination: String) -> Result<WitMeta, Error> {
        let app = &self.storage.app;
        let _slot = self.storage.files.write_slots().take(app, None)?;
        Ok(wit_meta(
            self.storage.files.copy(app, &source, &destination).await?,
        ))
    }
}

impl wit::HostWriter for StorageHost<'_> {
    async fn body(&mut self, writer: Resource<Writer>) -> Result<Resource<DynOutputStream>, Error> {
        let state = self.table.get_mut(&writer).map_err(table_error)?;
        let Some(pipe) = state.pipe.take() else {
            return Err(Error::InvalidInput(
                "the writer's body was already taken".into(),
            ));
        };
        let stream: DynOutputStream = Box::new(AsyncWriteStream::new(PIPE_BYTES, pipe));
        self.table.push(stream).map_err(table_error)
    }

    async fn finish(
        &mut self,
        writer: Resource<Writer>,
        body: Resource<DynOutputStream>,
    ) -> Result<WitMeta, Error> {
        let mut body = self.table.delete(body).map_err(table_error)?;
        // Bytes the guest wrote without flushing still reach the pipe.
        if body.flush().is_ok() {
            body.ready().await;
        }
        drop(body);
        let state = self.table.get_mut(&writer).map_err(table_error)?;
        let (Some(finished), Some(upload)) = (state.finished.take(), state.upload.take()) else {
            return Err(Error::InvalidInput(
                "the writer was already finished".into(),
            ));
        };
        state.pipe = None;
        let _ = finished.send(());
        match upload.await {
            Ok(result) => Ok(wit_meta(result?)),
            Err(err) => Err(Error::Unavailable(format!("the upload stopped: {err}"))),
        }
    }

    async fn drop(&mut self, writer: Resource<Writer>) -> wasmtime::Result<()> {
        // Dropping the sender abandons an unfinished upload.
        self.table.delete(writer)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> Option<IpAddr> {
        Some(text.parse().unwrap())
    }

    #[test]
    fn a_client_an_app_and_the_server_each_have_a_cap() {
        let slots = WriteSlots::default();
        let mine: Vec<_> = (0..WRITES_PER_CLIENT)
            .map(|i| slots.take(&format!("app{i}"), ip("10.0.0.1")).unwrap())
            .collect();
        assert!(
            matches!(slots.take("other", ip("10.0.0.1")), Err(StorageError::Busy(m)) if m.contains("client"))
        );
        // One IPv6 client is its /64; an IPv4-mapped address is its IPv4 address.
        let v6: Vec<_> = (0..WRITES_PER_CLIENT)
            .map(|i| slots.take("v6", ip(&format!("2001:db8::{i}"))).unwrap())
            .collect();
        assert!(slots.take("v6b", ip("2001:db8::ffff:1")).is_err());
        assert!(slots.take("v6b", ip("2001:db8:0:1::1")).is_ok());
        assert!(slots.take("v4", ip("::ffff:10.0.0.1")).is_err());
        drop(mine);
        assert!(
            slots.take("other", ip("10.0.0.1")).is_ok(),
            "given back on drop"
        );
        drop(v6);
        assert!(
            slots.clients.lock().unwrap().len() <= 1,
            "idle clients are forgotten"
        );

        let mut held = Vec::new();
        for i in 0..WRITES_PER_APP {
            held.push(
                slots
                    .take("busy", None)
                    .unwrap_or_else(|e| panic!("{i}: {e}")),
            );
        }
        assert!(
            matches!(slots.take("busy", None), Err(StorageError::Busy(m)) if m.contains("app `busy`"))
        );
        let mut apps = 0;
        while held.len() < WRITES_PER_SERVER {
            for _ in 0..WRITES_PER_APP {
                if held.len() < WRITES_PER_SERVER {
                    held.push(slots.take(&format!("filler{apps}"), None).unwrap());
                }
            }
            apps += 1;
        }
        assert!(
            matches!(slots.take("late", None), Err(StorageError::Busy(m)) if m.contains("server"))
        );
        held.pop();
        assert!(slots.take("late", None).is_ok());
    }
}
