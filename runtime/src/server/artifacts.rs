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
}

#[derive(Clone)]
pub struct Artifacts {
    store: Arc<dyn ObjectStore>,
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
    pub fn new(store: Arc<dyn ObjectStore>) -> Self {
        Artifacts { store }
    }

    /// Stores a component under its digest (a no-op when already there).
    pub async fn put_component(&self, bytes: Bytes) -> Result<String, ArtifactError> {
        let digest = digest_of(&bytes);
        if !self.has_component(&digest).await? {
            self.store
                .put(&component_path(&digest), PutPayload::from_bytes(bytes))
                .await?;
        }
        Ok(digest)
    }

    pub async fn has_component(&self, digest: &str) -> Result<bool, ArtifactError> {
        match self.store.head(&component_path(digest)).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(err) => Err(err.into()),
        }
    }

    pub async fn get_component(&self, digest: &str) -> Result<Option<Bytes>, ArtifactError> {
        self.get_bytes(&component_path(digest)).await
    }

    async fn get_bytes(&self, path: &Path) -> Result<Option<Bytes>, ArtifactError> {
        match self.store.get(path).await {
            Ok(result) => Ok(Some(result.bytes().await?)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(err) => Err(err.into()),
        }
    }
}
