//! The wasmtime engine: configuration, the compile cache, pre-instantiated
//! components, and a fresh [`Store`] per invocation.
//!
//! Guests are compiled once per content digest and cached on disk; each
//! invocation instantiates from an [`InstancePre`] into a new store, so
//! nothing survives from one invocation to the next. The engine is generic
//! over the store's data: it knows nothing of what is linked into it or of
//! what calls a component.

mod cache;
pub mod compiler;
pub mod lazy;
pub mod logs;
mod memory;
mod turns;

use std::path::PathBuf;
use std::sync::{Arc, Weak};
use std::time::Duration;

use wasmtime::component::{Component, InstancePre, Linker};
use wasmtime::{
    CallHook, Config, InstanceAllocationStrategy, PoolingAllocationConfig, ResourceLimiter, Store,
    UpdateDeadline,
};

pub use self::cache::CompileCache;
use self::compiler::{CompileSettings, Compiler, Tier};
pub use self::memory::MemoryLimits;
use self::turns::AfterHostCall;
pub use self::turns::{StoreTurn, Turns};

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
    #[error("compiling: {0}")]
    Compiler(String),
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
    /// The most linear memory one instance may have (pooling slots are this size).
    pub max_memory_bytes: usize,
    /// Where compiles run.
    pub compiler: Compiler,
    /// Which compiler this engine uses.
    pub tier: Tier,
}

impl EngineSettings {
    fn compile_settings(&self) -> CompileSettings {
        CompileSettings {
            max_instances: self.max_instances,
            max_memory_bytes: self.max_memory_bytes,
            tier: self.tier,
        }
    }
}

/// What the engine needs of a store's data: the limits it enforces.
pub trait StoreData: Send + 'static {
    fn limiter(&mut self) -> &mut dyn ResourceLimiter;
}

/// The engine shared by every app on the server, for stores holding `T`.
pub struct Engine<T: 'static> {
    wasmtime: wasmtime::Engine,
    linker: Linker<T>,
    cache: CompileCache,
}

impl<T: StoreData> Engine<T> {
    /// Builds the engine and its linker; `link` adds every import a
    /// component may have.
    pub fn new(
        settings: &EngineSettings,
        link: impl FnOnce(&mut Linker<T>) -> wasmtime::Result<()>,
    ) -> Result<Arc<Self>, EngineError> {
        let wasmtime = wasmtime::Engine::new(&engine_config(settings.compile_settings()))
            .map_err(EngineError::Config)?;
        let mut linker = Linker::new(&wasmtime);
        link(&mut linker).map_err(EngineError::Config)?;
        let cache = CompileCache::open(
            &settings.cache_dir,
            &wasmtime,
            &settings.cache_key,
            (settings.compiler.clone(), settings.compile_settings()),
        )?;
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

    /// The compiled component for these bytes, not cached. Blocking.
    pub fn compile_uncached(&self, bytes: &[u8]) -> Result<Component, EngineError> {
        self.cache.compile(&self.wasmtime, bytes)
    }

    /// The compiled component for `digest` if the on-disk cache holds it.
    /// Blocking (reads the file).
    pub fn load_cached(&self, digest: &str) -> Option<Component> {
        self.cache.load(&self.wasmtime, digest)
    }

    /// Resolves every import of the component against the linker.
    pub fn instantiate_pre(&self, component: &Component) -> Result<InstancePre<T>, EngineError> {
        self.linker
            .instantiate_pre(component)
            .map_err(EngineError::Link)
    }

    /// A fresh store for one invocation, running guest code in `turns`:
    /// at every epoch tick a running guest yields to other tasks and waits
    /// for a turn before it goes on; while every turn is taken, a new
    /// guest waits for one before it starts. Host code that waits gives
    /// the turn back meanwhile (through a clone of `turn` it was given).
    /// Dropping the store gives its turn back. The caller bounds it with
    /// its deadline.
    pub fn new_store(&self, data: T, mut turn: StoreTurn) -> Store<T> {
        let mut store = Store::new(&self.wasmtime, data);
        store.limiter(|data| data.limiter());
        store.set_epoch_deadline(if turn.all_taken() { 0 } else { 1 });
        let hook = turn.clone();
        store.call_hook(move |mut store, call| {
            match call {
                CallHook::ReturningFromHost => match hook.returning_from_host() {
                    // At its next check the guest queues for a turn.
                    Some(AfterHostCall::Queue) => store.set_epoch_deadline(0),
                    Some(AfterHostCall::RunOn) => store.set_epoch_deadline(1),
                    None => {}
                },
                CallHook::CallingHost | CallHook::CallingWasm | CallHook::ReturningFromWasm => {}
            }
            Ok(())
        });
        store.epoch_deadline_callback(move |_| {
            Ok(UpdateDeadline::YieldCustom(1, Box::pin(turn.next())))
        });
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

/// The engine's configuration; a compiling child builds the same one.
fn engine_config(settings: CompileSettings) -> Config {
    let mut config = Config::new();
    if settings.tier == Tier::Quick {
        config.strategy(wasmtime::Strategy::Winch);
    }
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
    pool.max_memory_size(settings.max_memory_bytes);
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
fn spawn_epoch_ticker<T: 'static>(engine: Weak<Engine<T>>) {
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
