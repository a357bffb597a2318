//! The wasmtime engine: configuration, the compile cache, pre-instantiated
//! components, and a fresh [`Store`] per invocation.
//!
//! Guests are compiled once per content digest and cached on disk; each
//! invocation instantiates from an [`InstancePre`] into a new store with its
//! own limits, deadline, captured stdio and capability state, so nothing
//! survives from one invocation to the next.

mod cache;
pub mod function;
pub mod lazy;
pub mod limits;
pub mod logs;
pub mod outbound;
pub mod quota;
mod state;

use std::path::PathBuf;
use std::sync::{Arc, Weak};
use std::time::Duration;

use wasmtime::component::{Component, InstancePre, Linker};
use wasmtime::{Config, InstanceAllocationStrategy, PoolingAllocationConfig, Store};

pub use self::cache::CompileCache;
pub use self::limits::Limits;
pub use self::state::{InvocationContext, InvocationState};

/// How often the epoch advances; a running guest yields to other tasks at
/// this interval, so a guest stuck in a loop never holds a server thread.
const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Bytes of a memory or table a reused slot keeps resident.
const KEEP_RESIDENT: usize = 2 * 1024 * 1024;

/// Errors of the engine.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("invalid component: {0:#}")]
    InvalidComponent(wasmtime::Error),
    #[error("cannot link component: {0:#}")]
    Link(wasmtime::Error),
    #[error("engine configuration: {0:#}")]
    Config(wasmtime::Error),
    #[error("compile cache at {path}: {source}")]
    Cache {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Settings of the engine, from the server's configuration.
#[derive(Debug, Clone)]
pub struct EngineSettings {
    /// Where compiled components are cached.
    pub cache_dir: PathBuf,
    /// Instances that may exist at once across all functions (pooling slots).
    pub max_instances: u32,
    /// The key cached artifacts are authenticated with.
    pub cache_key: Vec<u8>,
}

/// The engine shared by every app on the server.
pub struct Engine {
    wasmtime: wasmtime::Engine,
    linker: Linker<InvocationState>,
    cache: CompileCache,
}

impl Engine {
    /// Builds the engine and its linker. `link` adds the platform
    /// capabilities; WASI and wasi:http are always linked.
    pub fn new(
        settings: &EngineSettings,
        link: impl FnOnce(&mut Linker<InvocationState>) -> wasmtime::Result<()>,
    ) -> Result<Arc<Self>, EngineError> {
        let wasmtime =
            wasmtime::Engine::new(&engine_config(settings)).map_err(EngineError::Config)?;
        let mut linker = Linker::new(&wasmtime);
        // Every WASI 0.2 interface is linked so ordinary components deploy;
        // the context grants nothing (no preopens, no sockets).
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(EngineError::Config)?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)
            .map_err(EngineError::Config)?;
        link(&mut linker).map_err(EngineError::Config)?;
        let cache = CompileCache::open(&settings.cache_dir, &wasmtime, &settings.cache_key)?;
        let engine = Arc::new(Engine {
            wasmtime,
            linker,
            cache,
        });
        spawn_epoch_ticker(Arc::downgrade(&engine));
        Ok(engine)
    }

    /// The compiled component for these bytes, from the on-disk cache when
    /// it holds this digest. Blocking.
    pub fn compile(&self, digest: &str, bytes: &[u8]) -> Result<Component, EngineError> {
        self.cache.load_or_compile(&self.wasmtime, digest, bytes)
    }

    /// The compiled component for `digest` if the on-disk cache holds it.
    /// Blocking (reads the file).
    pub fn load_cached(&self, digest: &str) -> Option<Component> {
        self.cache.load(&self.wasmtime, digest)
    }

    /// Resolves every import of the component against the linker.
    pub fn instantiate_pre(
        &self,
        component: &Component,
    ) -> Result<InstancePre<InvocationState>, EngineError> {
        self.linker
            .instantiate_pre(component)
            .map_err(EngineError::Link)
    }

    /// A fresh store for one invocation.
    pub fn new_store(&self, context: InvocationContext) -> Store<InvocationState> {
        let mut store = Store::new(&self.wasmtime, InvocationState::new(context));
        store.limiter(|state| &mut state.limits);
        store.set_epoch_deadline(1);
        store.epoch_deadline_async_yield_and_update(1);
        store
    }

    pub fn wasmtime(&self) -> &wasmtime::Engine {
        &self.wasmtime
    }
}

/// Whether instantiation failed because every pooling slot was taken: the
/// server is overloaded, the guest did nothing wrong.
pub fn is_pool_exhausted(err: &wasmtime::Error) -> bool {
    err.is::<wasmtime::PoolConcurrencyLimitError>()
}

fn engine_config(settings: &EngineSettings) -> Config {
    let mut config = Config::new();
    config.wasm_component_model(true);
    config.epoch_interruption(true);
    config.memory_init_cow(true);
    // No component-model async (p3) is linked; without its per-store state a
    // fresh instance costs about a quarter less (shared/facts.md).
    config.concurrency_support(false);
    let mut pool = PoolingAllocationConfig::default();
    let slots = settings.max_instances.max(1);
    pool.total_component_instances(slots);
    // A component may hold several core instances (componentize-js has a few).
    pool.total_core_instances(slots.saturating_mul(4));
    pool.total_memories(slots.saturating_mul(2));
    pool.total_tables(slots.saturating_mul(4));
    pool.max_memory_size(Limits::MAX_MEMORY_MB as usize * 1024 * 1024);
    // Reset a used memory by copying back only the pages the guest dirtied
    // (PAGEMAP_SCAN, Linux 6.7+): no madvise, so no TLB shootdown across
    // cores and no page faults when the slot is next used.
    pool.pagemap_scan(wasmtime::Enabled::Auto);
    pool.linear_memory_keep_resident(KEEP_RESIDENT);
    pool.table_keep_resident(KEEP_RESIDENT);
    pool.max_component_instance_size(4 * 1024 * 1024);
    pool.max_core_instance_size(4 * 1024 * 1024);
    config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    config
}

/// One thread per engine advances the epoch; it ends when the engine is dropped.
fn spawn_epoch_ticker(engine: Weak<Engine>) {
    std::thread::Builder::new()
        .name("kiln-epoch".into())
        .spawn(move || {
            while let Some(engine) = engine.upgrade() {
                engine.wasmtime.increment_epoch();
                drop(engine);
                std::thread::sleep(EPOCH_TICK);
            }
        })
        .expect("spawning the epoch thread");
}
