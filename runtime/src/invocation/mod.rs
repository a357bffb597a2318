//! The one invocation core every trigger goes through.
//!
//! A trigger (HTTP, cron, jobs, and later data hooks or realtime) only
//! translates: it turns its input into an [`EntryPoint`] and the typed
//! [`Outcome`] back into its own answer. Everything in between is here:
//! loading the component (on first use), admission under the function's and
//! the app's instance limits, a fresh store with the capabilities prepared,
//! the deadline, and the guest's captured output.

mod function;
mod limits;
mod logs;
mod quota;
mod state;

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::Semaphore;
use wasmtime::Store;
use wasmtime::component::InstancePre;

pub use self::function::{App, Function};
pub use self::limits::Limits;
pub use self::quota::{AppQuota, Overloaded};
pub use self::state::InvocationState;
use crate::capabilities::Capabilities;
use crate::engine::compiler::Tier;
use crate::engine::{Engine, EngineError, EngineSettings};

/// Where the bytes of a component come from (the server's artifact store).
#[async_trait]
pub trait ComponentSource: Send + Sync {
    /// The component with this digest; `None` when it was never uploaded.
    async fn component_bytes(&self, digest: &str) -> Result<Option<Bytes>, String>;
}

/// Why a component could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("component {0} was not uploaded")]
    NotUploaded(String),
    #[error("reading the component: {0}")]
    Storage(String),
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error("internal error: {0}")]
    Internal(String),
}

/// A way in to a component, defined by the trigger that calls it.
pub trait EntryPoint: Send + 'static {
    /// The export called, for messages (`wasi:http/incoming-handler@0.2`).
    const EXPORT: &'static str;
    /// What is resolved once per loaded component (export indices).
    type Resolved: Send + Sync + 'static;
    /// What the guest's export returned.
    type Output: Send + 'static;
    /// `None` when the component does not export this entry point.
    fn resolve(pre: &InstancePre<InvocationState>) -> Option<Self::Resolved>;
    /// Instantiates the component in `store` and calls the export.
    fn call(
        self,
        resolved: &Self::Resolved,
        store: &mut Store<InvocationState>,
    ) -> impl Future<Output = wasmtime::Result<Self::Output>> + Send;
}

/// How an invocation ended.
#[derive(Debug)]
pub enum Outcome<T> {
    /// The export returned this.
    Returned(T),
    /// The component could not be loaded, or lacks the entry point.
    Unavailable(String),
    /// No instance slot freed up before the deadline.
    Overloaded(Overloaded),
    /// The guest trapped (a panic, memory past its limit, a host fault).
    Trapped(wasmtime::Error),
    /// The deadline passed first.
    TimedOut(Duration),
}

/// An outcome with what the guest wrote to stdout and stderr.
pub struct Invoked<T> {
    pub outcome: Outcome<T>,
    pub stdout: String,
    pub stderr: String,
}

impl<T> Invoked<T> {
    /// An invocation that ended before an instance ran.
    fn before_the_guest(outcome: Outcome<T>) -> Self {
        Invoked {
            outcome,
            stdout: String::new(),
            stderr: String::new(),
        }
    }
}

/// Components at least this large are first compiled by the quick tier
/// and served from it while Cranelift compiles them in the background.
const TIERED_FROM_BYTES: usize = 1024 * 1024;

/// Runs invocations: the engines, the capabilities linked into them, and
/// where components come from. One per server.
pub struct Invoker {
    /// Cranelift, with the compile cache: what serves in the steady state.
    engine: Arc<Engine<InvocationState>>,
    /// Winch: serves a large uncached component within seconds of its
    /// deploy, until the optimized code replaces it.
    quick: Arc<Engine<InvocationState>>,
    /// Components served by quick code whose optimized compile is pending,
    /// so every load of one shares its quick code and its upgrade.
    upgrading: Mutex<HashMap<String, Weak<Tiered>>>,
    /// One optimized compile in the background at a time: a burst of
    /// deploys queues here instead of taking every core.
    upgrades: Arc<Semaphore>,
    capabilities: Arc<Capabilities>,
    components: Arc<dyn ComponentSource>,
}

impl Invoker {
    /// Builds the engines with WASI, wasi:http and every capability linked.
    pub fn new(
        settings: &EngineSettings,
        capabilities: Arc<Capabilities>,
        components: Arc<dyn ComponentSource>,
    ) -> Result<Arc<Self>, EngineError> {
        let engine = |tier, max_instances| {
            let settings = EngineSettings {
                tier,
                max_instances,
                ..settings.clone()
            };
            Engine::new(&settings, |linker| {
                // Every WASI 0.2 interface is linked so ordinary components
                // deploy; the context grants nothing (no preopens, no sockets).
                wasmtime_wasi::p2::add_to_linker_async(linker)?;
                wasmtime_wasi_http::p2::add_only_http_to_linker_async(linker)?;
                Capabilities::link(linker)
            })
        };
        Ok(Arc::new(Invoker {
            engine: engine(Tier::Optimized, settings.max_instances)?,
            // Quick code serves only just-deployed components, for seconds:
            // a quarter of the slots.
            quick: engine(Tier::Quick, (settings.max_instances / 4).max(1))?,
            upgrading: Mutex::new(HashMap::new()),
            upgrades: Arc::new(Semaphore::new(1)),
            capabilities,
            components,
        }))
    }

    pub fn capabilities(&self) -> &Capabilities {
        &self.capabilities
    }

    /// Loads a component: the optimized code from the compile cache, or
    /// compiled now; a large uncached one is compiled by the quick tier
    /// and upgraded in the background.
    pub async fn load(self: &Arc<Self>, digest: &str) -> Result<Arc<Tiered>, LoadError> {
        if let Some(tiered) = self.upgrading_of(digest) {
            return Ok(tiered);
        }
        let cached = {
            let (engine, digest) = (self.engine.clone(), digest.to_string());
            blocking(move || engine.load_cached(&digest)).await?
        };
        if let Some(component) = cached {
            return Ok(Tiered::new(Loaded::new(&self.engine, &component)?));
        }
        let bytes = self
            .components
            .component_bytes(digest)
            .await
            .map_err(LoadError::Storage)?
            .ok_or_else(|| LoadError::NotUploaded(digest.to_string()))?;
        if bytes.len() < TIERED_FROM_BYTES {
            let (engine, digest) = (self.engine.clone(), digest.to_string());
            let component = blocking(move || engine.compile(&digest, &bytes)).await??;
            return Ok(Tiered::new(Loaded::new(&self.engine, &component)?));
        }
        let quick = {
            let (engine, bytes) = (self.quick.clone(), bytes.clone());
            blocking(move || engine.compile_uncached(&bytes)).await??
        };
        let tiered = Tiered::new(Loaded::new(&self.quick, &quick)?);
        {
            let mut upgrading = self.upgrading.lock().unwrap_or_else(|e| e.into_inner());
            // A concurrent load of the same component got here first: share its code.
            if let Some(theirs) = upgrading.get(digest).and_then(Weak::upgrade) {
                return Ok(theirs);
            }
            upgrading.insert(digest.to_string(), Arc::downgrade(&tiered));
        }
        self.spawn_upgrade(digest.to_string(), bytes, tiered.clone());
        Ok(tiered)
    }

    fn upgrading_of(&self, digest: &str) -> Option<Arc<Tiered>> {
        let upgrading = self.upgrading.lock().unwrap_or_else(|e| e.into_inner());
        upgrading.get(digest).and_then(Weak::upgrade)
    }

    /// Compiles the optimized code (into the compile cache) and swaps it in.
    fn spawn_upgrade(self: &Arc<Self>, digest: String, bytes: Bytes, tiered: Arc<Tiered>) {
        let invoker = self.clone();
        tokio::spawn(async move {
            let _turn = invoker.upgrades.clone().acquire_owned().await;
            let compiled = {
                let (engine, digest) = (invoker.engine.clone(), digest.clone());
                blocking(move || engine.compile(&digest, &bytes)).await
            };
            match compiled
                .and_then(|c| c.map_err(LoadError::from))
                .and_then(|c| Loaded::new(&invoker.engine, &c))
            {
                Ok(loaded) => {
                    tiered.upgrade(loaded);
                    tracing::info!(%digest, "optimized code replaced the quick code");
                }
                Err(err) => {
                    tracing::error!(%digest, "the optimized compile failed; the quick code keeps serving: {err}");
                }
            }
            let mut upgrading = invoker.upgrading.lock().unwrap_or_else(|e| e.into_inner());
            upgrading.remove(&digest);
        });
    }
}

async fn blocking<R: Send + 'static>(
    work: impl FnOnce() -> R + Send + 'static,
) -> Result<R, LoadError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| LoadError::Internal(e.to_string()))
}

/// A component's code as it serves now: the quick tier's until the
/// optimized code is swapped in. Each invocation takes the current one.
pub struct Tiered {
    current: RwLock<Arc<Loaded>>,
}

impl Tiered {
    fn new(loaded: Loaded) -> Arc<Self> {
        Arc::new(Tiered {
            current: RwLock::new(Arc::new(loaded)),
        })
    }

    pub fn current(&self) -> Arc<Loaded> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn upgrade(&self, loaded: Loaded) {
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(loaded);
    }
}

type ResolvedEntry = Option<Arc<dyn Any + Send + Sync>>;

/// A component linked against the platform in one engine, with the entry
/// points resolved so far.
pub struct Loaded {
    engine: Arc<Engine<InvocationState>>,
    pre: InstancePre<InvocationState>,
    entries: Mutex<Vec<(TypeId, ResolvedEntry)>>,
}

impl Loaded {
    fn new(
        engine: &Arc<Engine<InvocationState>>,
        component: &wasmtime::component::Component,
    ) -> Result<Self, LoadError> {
        Ok(Loaded {
            engine: engine.clone(),
            pre: engine.instantiate_pre(component)?,
            entries: Mutex::new(Vec::new()),
        })
    }

    /// Whether the component exports `E`.
    pub fn exports<E: EntryPoint>(&self) -> bool {
        self.entry::<E>().is_some()
    }

    /// `E` resolved against this component (once; then from memory).
    fn entry<E: EntryPoint>(&self) -> Option<Arc<E::Resolved>> {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let key = TypeId::of::<E>();
        let found = match entries.iter().find(|(k, _)| *k == key) {
            Some((_, resolved)) => resolved.clone(),
            None => {
                let resolved =
                    E::resolve(&self.pre).map(|r| Arc::new(r) as Arc<dyn Any + Send + Sync>);
                entries.push((key, resolved.clone()));
                resolved
            }
        };
        found.and_then(|r| r.downcast().ok())
    }
}
