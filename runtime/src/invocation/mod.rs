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
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use wasmtime::Store;
use wasmtime::component::InstancePre;

pub use self::function::{App, Function};
pub use self::limits::Limits;
pub use self::quota::{AppQuota, Overloaded};
pub use self::state::InvocationState;
use crate::capabilities::Capabilities;
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

/// Runs invocations: the engine, the capabilities linked into it, and where
/// components come from. One per server.
pub struct Invoker {
    engine: Arc<Engine<InvocationState>>,
    capabilities: Arc<Capabilities>,
    components: Arc<dyn ComponentSource>,
}

impl Invoker {
    /// Builds the engine with WASI, wasi:http and every capability linked.
    pub fn new(
        settings: &EngineSettings,
        capabilities: Arc<Capabilities>,
        components: Arc<dyn ComponentSource>,
    ) -> Result<Arc<Self>, EngineError> {
        let engine = Engine::new(settings, |linker| {
            // Every WASI 0.2 interface is linked so ordinary components
            // deploy; the context grants nothing (no preopens, no sockets).
            wasmtime_wasi::p2::add_to_linker_async(linker)?;
            wasmtime_wasi_http::p2::add_only_http_to_linker_async(linker)?;
            Capabilities::link(linker)
        })?;
        Ok(Arc::new(Invoker {
            engine,
            capabilities,
            components,
        }))
    }

    pub fn capabilities(&self) -> &Capabilities {
        &self.capabilities
    }

    /// Compiles (or reads from the compile cache) and links a component.
    pub async fn load(&self, digest: &str) -> Result<Loaded, LoadError> {
        let cached = {
            let (engine, digest) = (self.engine.clone(), digest.to_string());
            tokio::task::spawn_blocking(move || engine.load_cached(&digest))
                .await
                .map_err(|e| LoadError::Internal(e.to_string()))?
        };
        let component = match cached {
            Some(component) => component,
            None => {
                let bytes = self
                    .components
                    .component_bytes(digest)
                    .await
                    .map_err(LoadError::Storage)?
                    .ok_or_else(|| LoadError::NotUploaded(digest.to_string()))?;
                let (engine, digest) = (self.engine.clone(), digest.to_string());
                tokio::task::spawn_blocking(move || engine.compile(&digest, &bytes))
                    .await
                    .map_err(|e| LoadError::Internal(e.to_string()))??
            }
        };
        Ok(Loaded {
            pre: self.engine.instantiate_pre(&component)?,
            entries: Mutex::new(Vec::new()),
        })
    }
}

type ResolvedEntry = Option<Arc<dyn Any + Send + Sync>>;

/// A component linked against the platform, with the entry points resolved
/// so far.
pub struct Loaded {
    pre: InstancePre<InvocationState>,
    entries: Mutex<Vec<(TypeId, ResolvedEntry)>>,
}

impl Loaded {
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
