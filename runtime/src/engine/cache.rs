//! Compiled components cached on disk, keyed by content digest and engine
//! settings, so a restart does not recompile.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

use wasmtime::component::Component;

use super::EngineError;

pub struct CompileCache {
    dir: PathBuf,
}

impl CompileCache {
    /// Opens the cache folder for this engine's settings: artifacts compiled
    /// with other settings (or another wasmtime) live in another folder.
    pub fn open(root: &Path, engine: &wasmtime::Engine) -> Result<Self, EngineError> {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        let dir = root.join(format!("{:016x}", hasher.finish()));
        std::fs::create_dir_all(&dir).map_err(|source| EngineError::Cache {
            path: dir.clone(),
            source,
        })?;
        Ok(CompileCache { dir })
    }

    /// The cached artifact of `digest`, if there is one that loads.
    pub fn load(&self, engine: &wasmtime::Engine, digest: &str) -> Option<Component> {
        let path = self.path(digest);
        if !path.exists() {
            return None;
        }
        // SAFETY: the file was written by `precompile_component` of an
        // engine with the same compatibility hash, into a folder only this
        // server writes.
        match unsafe { Component::deserialize_file(engine, &path) } {
            Ok(component) => Some(component),
            Err(err) => {
                tracing::warn!(path = %path.display(), "recompiling a cached artifact that did not load: {err:#}");
                None
            }
        }
    }

    pub fn load_or_compile(
        &self,
        engine: &wasmtime::Engine,
        digest: &str,
        bytes: &[u8],
    ) -> Result<Component, EngineError> {
        if let Some(component) = self.load(engine, digest) {
            return Ok(component);
        }
        let path = self.path(digest);
        let compiled = engine
            .precompile_component(bytes)
            .map_err(EngineError::InvalidComponent)?;
        self.write_atomically(&path, &compiled)?;
        // SAFETY: as above; we just wrote this artifact.
        unsafe { Component::deserialize_file(engine, &path) }.map_err(EngineError::InvalidComponent)
    }

    fn path(&self, digest: &str) -> PathBuf {
        self.dir.join(format!("{digest}.cwasm"))
    }

    fn write_atomically(&self, path: &Path, bytes: &[u8]) -> Result<(), EngineError> {
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        let io = |source| EngineError::Cache {
            path: path.to_path_buf(),
            source,
        };
        std::fs::write(&tmp, bytes).map_err(io)?;
        std::fs::rename(&tmp, path).map_err(io)
    }
}
