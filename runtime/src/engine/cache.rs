//! Compiled components cached on disk, keyed by content digest and engine
//! settings, so a restart does not recompile.
//!
//! A cached artifact is native code, loaded with `unsafe`; the folder may be
//! configured or shared, so nothing in it is trusted: each file carries an
//! HMAC-SHA256 of its contents under a key only the server knows, and a
//! file that does not verify is compiled again and replaced.

use std::collections::VecDeque;
use std::hash::{Hash, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use ring::hmac;
use wasmtime::component::Component;

use super::EngineError;
use super::compiler::{CompileSettings, Compiler};

/// Bytes of the MAC at the start of each cached file.
const MAC_LEN: usize = 32;

/// Components loaded in the last [`RECENT_FOR`] are kept in memory (at most
/// [`RECENT_MAX`]), so a deploy's check and the first request after it, or a
/// second deploy of one component, read and verify the file once.
const RECENT_FOR: Duration = Duration::from_secs(30);
const RECENT_MAX: usize = 4;

pub struct CompileCache {
    dir: PathBuf,
    key: hmac::Key,
    recent: Mutex<VecDeque<(String, Component, Instant)>>,
    compiler: (Compiler, CompileSettings),
}

impl CompileCache {
    /// Opens the cache folder for this engine's settings: artifacts compiled
    /// with other settings (or another wasmtime) live in another folder.
    /// `key` authenticates the artifacts (servers sharing the folder share it).
    pub fn open(
        root: &Path,
        engine: &wasmtime::Engine,
        key: &[u8],
        compiler: (Compiler, CompileSettings),
    ) -> Result<Self, EngineError> {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        let dir = root.join(format!("{:016x}", hasher.finish()));
        std::fs::create_dir_all(&dir).map_err(|source| EngineError::Cache {
            path: dir.clone(),
            source,
        })?;
        Ok(CompileCache {
            dir,
            key: hmac::Key::new(hmac::HMAC_SHA256, key),
            recent: Mutex::new(VecDeque::new()),
            compiler,
        })
    }

    /// The cached artifact of `digest`, if there is one that verifies and
    /// loads. Reads the file: call it off the async threads.
    pub fn load(&self, engine: &wasmtime::Engine, digest: &str) -> Option<Component> {
        if let Some(component) = self.recent(digest) {
            return Some(component);
        }
        let component = self.load_file(engine, digest)?;
        self.remember(digest, &component);
        Some(component)
    }

    fn recent(&self, digest: &str) -> Option<Component> {
        let mut recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        recent.retain(|(_, _, at)| at.elapsed() < RECENT_FOR);
        recent
            .iter()
            .find(|(d, _, _)| d == digest)
            .map(|(_, component, _)| component.clone())
    }

    fn remember(&self, digest: &str, component: &Component) {
        let mut recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        recent.retain(|(d, _, _)| d != digest);
        if recent.len() >= RECENT_MAX {
            recent.pop_front();
        }
        recent.push_back((digest.to_string(), component.clone(), Instant::now()));
    }

    fn load_file(&self, engine: &wasmtime::Engine, digest: &str) -> Option<Component> {
        let path = self.path(digest)?;
        let bytes = std::fs::read(&path).ok()?;
        let Some(code) = self.verified(&bytes) else {
            tracing::warn!(path = %path.display(), "recompiling a cached artifact that does not verify");
            return None;
        };
        // SAFETY: `code` carries a valid MAC under this server's key, so it
        // is what `precompile_component` of an engine with the same
        // compatibility hash wrote; it is deserialized from memory, so the
        // file cannot change between the check and the load.
        match unsafe { Component::deserialize(engine, code) } {
            Ok(component) => Some(component),
            Err(err) => {
                tracing::warn!(path = %path.display(), "recompiling a cached artifact that did not load: {err:#}");
                None
            }
        }
    }

    /// Loads the cached artifact, or compiles `bytes` and caches the result.
    /// Blocking: call it off the async threads.
    pub fn load_or_compile(
        &self,
        engine: &wasmtime::Engine,
        digest: &str,
        bytes: &[u8],
    ) -> Result<Component, EngineError> {
        if let Some(component) = self.load(engine, digest) {
            return Ok(component);
        }
        let component = self.compile_with(engine, bytes, |compiled| {
            if let Some(path) = self.path(digest)
                && let Err(err) = self.write(&path, compiled)
            {
                tracing::warn!(path = %path.display(), "cannot cache a compiled component: {err}");
            }
        })?;
        self.remember(digest, &component);
        Ok(component)
    }

    /// Compiles `bytes` without caching the result. Blocking.
    pub fn compile(
        &self,
        engine: &wasmtime::Engine,
        bytes: &[u8],
    ) -> Result<Component, EngineError> {
        self.compile_with(engine, bytes, |_| {})
    }

    /// Compiles `bytes`, hands the artifact to `keep`, then loads it.
    fn compile_with(
        &self,
        engine: &wasmtime::Engine,
        bytes: &[u8],
        keep: impl FnOnce(&[u8]),
    ) -> Result<Component, EngineError> {
        let (compiler, settings) = &self.compiler;
        let compiled = compiler.precompile(engine, *settings, bytes)?;
        keep(&compiled);
        // SAFETY: these bytes were compiled just now, by this engine or by
        // a child of this executable configured the same way (deserialize
        // checks the configuration matches).
        let component = unsafe { Component::deserialize(engine, &compiled) }
            .map_err(EngineError::InvalidComponent);
        drop(compiled);
        release_freed_memory();
        component
    }

    /// The file of `digest`; none for anything but `sha256:<64 hex>`, so a
    /// tampered record cannot name a path outside the folder.
    fn path(&self, digest: &str) -> Option<PathBuf> {
        let hex = digest.strip_prefix("sha256:")?;
        let valid = hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        valid.then(|| self.dir.join(format!("sha256-{hex}.kcwasm")))
    }

    fn verified<'a>(&self, file: &'a [u8]) -> Option<&'a [u8]> {
        let (mac, code) = file.split_at_checked(MAC_LEN)?;
        hmac::verify(&self.key, code, mac).ok()?;
        Some(code)
    }

    /// Writes MAC and code to a new file of a random name, then renames it
    /// into place, so readers see a whole file or none.
    fn write(&self, path: &Path, code: &[u8]) -> std::io::Result<()> {
        let tmp = path.with_extension(format!("tmp-{}", hex::encode(rand::random::<[u8; 8]>())));
        let mac = hmac::sign(&self.key, code);
        let written = (|| {
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&tmp)?;
            file.write_all(mac.as_ref())?;
            file.write_all(code)?;
            std::fs::rename(&tmp, path)
        })();
        if written.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        written
    }
}

/// Hands the heap pages the compiler freed back to the OS. Cranelift
/// allocates on every compile thread, and glibc keeps what they free in
/// per-thread arenas: without this, a server that compiled one JS component
/// (13 MB of wasm) stays hundreds of MiB above its idle size.
fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free memory; no live allocation moves.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tampered_or_foreign_artifact_is_compiled_again() {
        let engine = wasmtime::Engine::default();
        let dir = tempfile::tempdir().unwrap();
        let wat = wat_component();
        let digest = format!("sha256:{}", "ab".repeat(32));
        let cache = CompileCache::open(dir.path(), &engine, b"key one", in_process()).unwrap();
        cache.load_or_compile(&engine, &digest, &wat).unwrap();
        assert!(cache.load_file(&engine, &digest).is_some());
        let path = cache.path(&digest).unwrap();
        // Another key (another server) does not trust it.
        let other = CompileCache::open(dir.path(), &engine, b"key two", in_process()).unwrap();
        assert!(other.load(&engine, &digest).is_none());
        // One flipped byte of code: refused, then replaced by a recompile.
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        // After a restart (nothing recent in memory) it is not loaded.
        let cache = CompileCache::open(dir.path(), &engine, b"key one", in_process()).unwrap();
        assert!(cache.load(&engine, &digest).is_none());
        cache.load_or_compile(&engine, &digest, &wat).unwrap();
        assert!(cache.load_file(&engine, &digest).is_some());
        // A load just after a compile is served from memory.
        assert!(cache.recent(&digest).is_some());
        assert!(cache.path("sha256:../../etc/passwd").is_none());
        assert!(cache.path("../x").is_none());
    }

    fn in_process() -> (Compiler, CompileSettings) {
        let settings = CompileSettings {
            max_instances: 1,
            max_memory_bytes: 1 << 20,
            tier: crate::engine::compiler::Tier::Optimized,
        };
        (Compiler::InProcess, settings)
    }

    /// The smallest component: no imports, no exports.
    fn wat_component() -> Vec<u8> {
        // (component) in the binary format: magic, component version/layer.
        vec![0x00, 0x61, 0x73, 0x6d, 0x0d, 0x00, 0x01, 0x00]
    }
}
