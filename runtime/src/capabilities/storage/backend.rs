//! Where bytes live: the local filesystem under the data directory, or an
//! S3 bucket. Both sit behind `object_store`; deployed components and every
//! app's files share the backend, so nodes sharing a bucket and a document
//! store need nothing else in common.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::signer::Signer;
use object_store::{Attribute, ObjectStore, PutMultipartOptions};

use super::StorageError;

/// Which backend, from the server's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BlobSettings {
    /// A folder (`<data dir>/objects`).
    Local { root: PathBuf },
    /// An S3 bucket; credentials from the environment (`AWS_ACCESS_KEY_ID`,
    /// `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`) unless given here.
    S3 {
        bucket: String,
        region: Option<String>,
        /// An S3-compatible service's URL (MinIO, R2, moto).
        endpoint: Option<String>,
        access_key_id: Option<String>,
        secret_access_key: Option<String>,
        /// Plain http to the endpoint (local test services only).
        allow_http: bool,
    },
}

pub struct Blobs {
    store: Arc<dyn ObjectStore>,
    /// The folder behind `store` on the local backend, whose writes are
    /// fsynced (object_store does not sync them).
    local_root: Option<PathBuf>,
    /// The S3 client, which presigns URLs.
    s3: Option<Arc<AmazonS3>>,
}

impl Blobs {
    pub fn open(settings: &BlobSettings) -> Result<Self, StorageError> {
        match settings {
            BlobSettings::Local { root } => {
                std::fs::create_dir_all(root).map_err(|e| {
                    StorageError::Unavailable(format!("file backend {}: {e}", root.display()))
                })?;
                let store = LocalFileSystem::new_with_prefix(root)
                    .map_err(|e| StorageError::Unavailable(format!("file backend: {e}")))?;
                Ok(Blobs {
                    store: Arc::new(store),
                    local_root: Some(root.clone()),
                    s3: None,
                })
            }
            BlobSettings::S3 {
                bucket,
                region,
                endpoint,
                access_key_id,
                secret_access_key,
                allow_http,
            } => {
                // The S3 client's TLS needs a provider; a no-op when one is set.
                crate::install_crypto_provider();
                let mut builder = AmazonS3Builder::from_env().with_bucket_name(bucket);
                if let Some(region) = region {
                    builder = builder.with_region(region);
                }
                if let Some(endpoint) = endpoint {
                    // S3-compatible services address buckets by path.
                    builder = builder
                        .with_endpoint(endpoint)
                        .with_virtual_hosted_style_request(false);
                }
                if let Some(key) = access_key_id {
                    builder = builder.with_access_key_id(key);
                }
                if let Some(secret) = secret_access_key {
                    builder = builder.with_secret_access_key(secret);
                }
                if *allow_http {
                    builder = builder.with_allow_http(true);
                }
                let s3 =
                    Arc::new(builder.build().map_err(|e| {
                        StorageError::Unavailable(format!("S3 bucket {bucket}: {e}"))
                    })?);
                Ok(Blobs {
                    store: s3.clone(),
                    local_root: None,
                    s3: Some(s3),
                })
            }
        }
    }

    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    /// The folder of the local backend.
    pub fn local_root(&self) -> Option<&std::path::Path> {
        self.local_root.as_deref()
    }

    /// Where a blob of `app` lives. Blob ids are Kiln's own (`new_id`), and
    /// app names are validated, so the path needs no escaping.
    pub fn path(&self, app: &str, blob: &str) -> Path {
        Path::from_iter(["files", app, blob])
    }

    /// The S3 client's multipart API (resumable uploads); `None` locally.
    pub fn multipart(&self) -> Option<&Arc<AmazonS3>> {
        self.s3.as_ref()
    }

    /// The staging file of a resumable upload on the local backend (its
    /// folder created).
    pub fn staging(&self, app: &str, blob: &str) -> Result<PathBuf, StorageError> {
        let root = self.local_root.as_ref().ok_or_else(|| {
            StorageError::Unavailable("staging files exist on the local backend only".into())
        })?;
        let folder = root.join("uploads").join(app);
        std::fs::create_dir_all(&folder)
            .map_err(|e| StorageError::Unavailable(format!("staging an upload: {e}")))?;
        Ok(folder.join(blob))
    }

    /// Where a blob's file is on the local backend.
    pub fn local_file(&self, app: &str, blob: &str) -> Result<PathBuf, StorageError> {
        let root = self.local_root.as_ref().ok_or_else(|| {
            StorageError::Unavailable("blob files exist on the local backend only".into())
        })?;
        Ok(root.join("files").join(app).join(blob))
    }

    /// Options of a new blob: on S3 its content type, which presigned
    /// downloads are served with (the local backend keeps no attributes).
    pub fn put_options(&self, content_type: &str) -> PutMultipartOptions {
        let mut options = PutMultipartOptions::default();
        if self.s3.is_some() {
            options
                .attributes
                .insert(Attribute::ContentType, content_type.to_string().into());
        }
        options
    }

    /// An S3 URL allowing `method` on the blob until `expires_in` passes;
    /// `None` on the local backend (Kiln signs its own URLs there).
    pub async fn presign(
        &self,
        method: http::Method,
        path: &Path,
        expires_in: Duration,
    ) -> Result<Option<String>, StorageError> {
        let Some(s3) = &self.s3 else {
            return Ok(None);
        };
        let url = s3
            .signed_url(method, path, expires_in)
            .await
            .map_err(|e| StorageError::Unavailable(format!("presigning: {e}")))?;
        Ok(Some(url.to_string()))
    }

    /// Makes a blob written on the local backend survive a crash of the
    /// machine (fsyncs the file and its folder); nothing on S3.
    pub async fn make_durable(&self, app: &str, blob: &str) -> Result<(), StorageError> {
        let Some(root) = &self.local_root else {
            return Ok(());
        };
        let file = root.join("files").join(app).join(blob);
        tokio::task::spawn_blocking(move || sync_file_and_folder(&file))
            .await
            .map_err(|e| StorageError::Unavailable(format!("file backend: {e}")))?
    }
}

/// fsyncs a file and the folder holding it.
pub fn sync_file_and_folder(file: &std::path::Path) -> Result<(), StorageError> {
    let sync = |path: &std::path::Path| {
        std::fs::File::open(path)
            .and_then(|f| f.sync_all())
            .map_err(|e| {
                StorageError::Unavailable(format!("file backend: syncing {}: {e}", path.display()))
            })
    };
    sync(file)?;
    match file.parent() {
        Some(folder) => sync(folder),
        None => Ok(()),
    }
}
