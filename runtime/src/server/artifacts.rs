//! Components in an object store (the local filesystem under the data
//! directory by default), content-addressed.

use std::sync::Arc;

use bytes::Bytes;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use sha2::{Digest, Sha256};

#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    #[error("storage: {0}")]
    Storage(#[from] object_store::Error),
    #[error("storage: making {path} durable: {source}")]
    Sync {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error(
        "the stored copy of component {0} is damaged (its bytes do not match the digest); upload the component again"
    )]
    Damaged(String),
}

/// Components by digest. Every read is checked against the digest; a copy
/// that does not match is reported as damaged, and the next upload of the
/// right bytes replaces it.
#[derive(Clone)]
pub struct Artifacts {
    store: Arc<dyn ObjectStore>,
    /// The folder behind `store` when it is the local filesystem, whose
    /// writes are fsynced (object_store does not sync them).
    local_root: Option<std::path::PathBuf>,
}

/// `sha256:<hex>` of the bytes.
pub fn digest_of(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// Whether `digest` is `sha256:` and 64 lowercase hex digits.
pub fn is_valid_digest(digest: &str) -> bool {
    digest.strip_prefix("sha256:").is_some_and(|hex| {
        hex.len() == 64
            && hex
                .chars()
                .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c))
    })
}

fn component_path(digest: &str) -> Path {
    Path::from(format!("components/{}.wasm", digest.replace(':', "-")))
}

impl Artifacts {
    pub fn new(store: Arc<dyn ObjectStore>, local_root: Option<std::path::PathBuf>) -> Self {
        Artifacts { store, local_root }
    }

    /// Stores a component under its digest. A stored copy that matches is
    /// kept; a missing or damaged one is written anew (durably, on the
    /// local filesystem).
    pub async fn put_component(&self, bytes: Bytes) -> Result<String, ArtifactError> {
        let digest = digest_of(&bytes);
        if self.has_component(&digest).await? {
            return Ok(digest);
        }
        let path = component_path(&digest);
        self.store.put(&path, PutPayload::from_bytes(bytes)).await?;
        if let Some(root) = &self.local_root {
            let file = root.join(path.as_ref());
            tokio::task::spawn_blocking(move || sync_file_and_folder(&file))
                .await
                .map_err(|e| ArtifactError::Sync {
                    path: root.clone(),
                    source: std::io::Error::other(e),
                })??;
        }
        Ok(digest)
    }

    /// Whether an intact copy of the component is stored.
    pub async fn has_component(&self, digest: &str) -> Result<bool, ArtifactError> {
        match self.get_component(digest).await {
            Ok(found) => Ok(found.is_some()),
            Err(ArtifactError::Damaged(_)) => Ok(false),
            Err(err) => Err(err),
        }
    }

    /// The component's bytes, checked against its digest.
    pub async fn get_component(&self, digest: &str) -> Result<Option<Bytes>, ArtifactError> {
        let Some(bytes) = self.get_bytes(&component_path(digest)).await? else {
            return Ok(None);
        };
        let (digest_, bytes_) = (digest.to_string(), bytes.clone());
        let intact = tokio::task::spawn_blocking(move || digest_of(&bytes_) == digest_)
            .await
            .unwrap_or(false);
        if !intact {
            tracing::warn!(digest, "a stored component does not match its digest");
            return Err(ArtifactError::Damaged(digest.to_string()));
        }
        Ok(Some(bytes))
    }

    async fn get_bytes(&self, path: &Path) -> Result<Option<Bytes>, ArtifactError> {
        match self.store.get(path).await {
            Ok(result) => Ok(Some(result.bytes().await?)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(err) => Err(err.into()),
        }
    }
}

/// fsyncs a file and the folder holding it, so a write that returned
/// survives a crash of the machine.
fn sync_file_and_folder(file: &std::path::Path) -> Result<(), ArtifactError> {
    let sync = |path: &std::path::Path| {
        std::fs::File::open(path)
            .and_then(|f| f.sync_all())
            .map_err(|source| ArtifactError::Sync {
                path: path.to_path_buf(),
                source,
            })
    };
    sync(file)?;
    match file.parent() {
        Some(folder) => sync(folder),
        None => Ok(()),
    }
}

#[async_trait::async_trait]
impl crate::invocation::ComponentSource for Artifacts {
    async fn component_bytes(&self, digest: &str) -> Result<Option<Bytes>, String> {
        self.get_component(digest).await.map_err(|e| e.to_string())
    }
}
