//! The `kiln:platform` host capabilities, one folder per WIT interface.
//!
//! Each capability implements [`Capability`], in three phases: once per
//! server it is built from the server's backends and adds its interface to
//! the linker; once per deployment it configures the app (its client-facing
//! side: rules, buckets, collections) and then each function from the
//! manifest (refusing the deploy with a message naming the field); once
//! per invocation it prepares the state the store holds.
//! A capability never names the store's type: it reaches its state through
//! [`CapabilityView`]. Every capability is listed once, in [`capabilities!`]
//! below; a component importing an interface no capability implements fails
//! to link at deploy, naming the import.

pub mod auth;
mod bindings;
pub mod collections;
pub mod config;
pub mod database;
mod error;
pub mod outbound;
pub mod scheduler;
pub mod storage;
mod turns;

use std::sync::Arc;

use http::{HeaderName, HeaderValue};
use serde::de::DeserializeOwned;
use wasmtime::component::{Linker, ResourceTable};
use wasmtime_wasi::WasiCtxBuilder;

use crate::engine::StoreTurn;
use crate::store::Documents;

/// The backends capabilities reach, built once per server.
#[derive(Clone)]
pub struct Backends {
    pub documents: Documents,
    pub accounts: Arc<auth::Accounts>,
    pub files: storage::Files,
    /// Asks an app's functions (hooks), once the server has its apps.
    pub askers: Arc<collections::Askers>,
}

/// One host capability.
pub trait Capability: Sized + Send + Sync + 'static {
    /// Top-level manifest keys this capability reads (`variables`).
    const APP_KEYS: &'static [&'static str] = &[];
    /// Keys of a `[functions.NAME]` table this capability reads.
    const FUNCTION_KEYS: &'static [&'static str] = &[];
    /// Built once per deployment for the whole app: what its clients reach
    /// (rules, buckets, collections) and what its functions share.
    type App: Send + Sync + 'static;
    /// Built once per deployment for each function.
    type Configured: Send + Sync + 'static;
    /// Held by one invocation's store.
    type Instance: Send + 'static;

    /// Once per server: from the server's backends.
    fn init(backends: &Backends) -> Self;
    /// Once per server: adds the capability's interface to the linker.
    fn link<T: CapabilityView>(linker: &mut Linker<T>) -> wasmtime::Result<()>
    where
        Instances: Pick<Self>;
    /// Once per deployment: validates the app's manifest sections this
    /// capability owns and builds the app's state.
    fn configure_app(&self, app: &AppManifest<'_>) -> Result<Self::App, ConfigureError>;
    /// Once per deployment and function: validates the function's manifest
    /// section and builds what its invocations share.
    fn configure(
        &self,
        app: &Self::App,
        function: &FunctionManifest<'_>,
    ) -> Result<Self::Configured, ConfigureError>;
    /// The app's functions this capability calls through their HTTP
    /// handler (rules, hooks), so a deploy refuses one that cannot answer.
    fn asks(_app: &Self::App) -> Vec<Asked> {
        Vec::new()
    }
    /// Once per invocation. `wasi` is the sandbox being built, which grants
    /// nothing unless a capability adds to it.
    fn prepare(
        &self,
        configured: &Self::Configured,
        invocation: &Invocation<'_>,
        wasi: &mut WasiCtxBuilder,
    ) -> Self::Instance;
}

/// Store data that holds the capabilities' states.
pub trait CapabilityView: Send + 'static {
    fn capabilities(&mut self) -> &mut Instances;
    /// The states, and the table of the invocation's resources (for a
    /// capability that hands the guest streams).
    fn capabilities_and_table(&mut self) -> (&mut Instances, &mut ResourceTable);
}

/// One capability's state in [`Instances`].
pub trait Pick<C: Capability> {
    fn pick(&mut self) -> &mut C::Instance;
}

/// The state of capability `C` in a store's data.
pub fn instance<C: Capability, T: CapabilityView>(data: &mut T) -> &mut C::Instance
where
    Instances: Pick<C>,
{
    data.capabilities().pick()
}

/// A function a capability asks through its HTTP handler.
pub struct Asked {
    /// What asks, in words (`a bucket's rule`).
    pub asker: &'static str,
    /// The field naming the function (`buckets.docs.read`).
    pub field: String,
    pub function: String,
}

/// What a capability sees of an app at deploy.
pub struct AppManifest<'a> {
    pub app: &'a str,
    /// Every function of the version, sorted.
    pub app_functions: &'a Arc<[Arc<str>]>,
    /// The manifest's top-level keys that capabilities own.
    pub app_section: &'a toml::Table,
}

impl AppManifest<'_> {
    /// Refuses a `function:` rule or hook naming no function of the app.
    pub fn check_function(&self, field: &str, function: &str) -> Result<(), ConfigureError> {
        match self.app_functions.iter().any(|f| **f == *function) {
            true => Ok(()),
            false => Err(ConfigureError {
                field: field.to_string(),
                message: format!("`{function}` names no function of the app"),
            }),
        }
    }
}

/// What a capability sees of a function at deploy.
pub struct FunctionManifest<'a> {
    pub app: &'a str,
    pub function: &'a str,
    /// Every function of the version, sorted.
    pub app_functions: &'a Arc<[Arc<str>]>,
    /// The manifest's top-level keys that capabilities own.
    pub app_section: &'a toml::Table,
    /// The keys of `[functions.NAME]` that capabilities own.
    pub function_section: &'a toml::Table,
}

impl FunctionManifest<'_> {
    /// The top-level value `key`, deserialized; its default when absent.
    pub fn app_value<V: DeserializeOwned + Default>(&self, key: &str) -> Result<V, ConfigureError> {
        value(self.app_section, key, key.to_string())
    }

    /// `functions.NAME.key`, deserialized; its default when absent.
    pub fn function_value<V: DeserializeOwned + Default>(
        &self,
        key: &str,
    ) -> Result<V, ConfigureError> {
        value(
            self.function_section,
            key,
            format!("functions.{}.{key}", self.function),
        )
    }

    /// The field name of `functions.NAME.key`, for messages.
    pub fn function_field(&self, key: &str) -> String {
        format!("functions.{}.{key}", self.function)
    }
}

fn value<V: DeserializeOwned + Default>(
    table: &toml::Table,
    key: &str,
    field: String,
) -> Result<V, ConfigureError> {
    match table.get(key) {
        None => Ok(V::default()),
        Some(v) => v
            .clone()
            .try_into()
            .map_err(|e: toml::de::Error| ConfigureError {
                field,
                message: e.message().to_string(),
            }),
    }
}

/// Why a function's manifest section is refused.
#[derive(Debug, thiserror::Error)]
#[error("{field}: {message}")]
pub struct ConfigureError {
    /// The field, as written in `kiln.toml` (`functions.api.variables.x`).
    pub field: String,
    pub message: String,
}

/// Who is invoked: set by the trigger, seen by every capability's `prepare`.
pub struct Invocation<'a> {
    pub app: &'a Arc<str>,
    pub function: &'a Arc<str>,
    pub request_id: &'a Arc<str>,
    /// Headers the trigger added to the guest's input (`kiln-*`); outbound
    /// requests that carry them unchanged have them removed.
    pub trigger_headers: &'a [(HeaderName, HeaderValue)],
    /// The caller the trigger verified; none when anonymous.
    pub identity: Option<&'a auth::Identity>,
    /// The store's turn at running guest code: host code gives it back
    /// while the guest waits on it ([`StoreTurn::waiting`]).
    pub turn: &'a StoreTurn,
}

/// Declares the list of capabilities: the per-server, per-function and
/// per-invocation structs with one field each, and the three phases over all.
macro_rules! capabilities {
    ($($field:ident: $capability:ty),* $(,)?) => {
        /// Every capability, built once per server.
        pub struct Capabilities {
            $($field: $capability,)*
        }

        /// Each capability's state of one app's deployment.
        pub struct AppConfigured {
            $(pub $field: <$capability as Capability>::App,)*
        }

        /// Each capability's configuration of one function of a deployment.
        pub struct Configured {
            $($field: <$capability as Capability>::Configured,)*
        }

        /// Each capability's state in one invocation's store.
        pub struct Instances {
            $($field: <$capability as Capability>::Instance,)*
        }

        $(impl Pick<$capability> for Instances {
            fn pick(&mut self) -> &mut <$capability as Capability>::Instance {
                &mut self.$field
            }
        })*

        impl AppConfigured {
            /// The functions asked through their HTTP handler.
            pub fn asks(&self) -> Vec<Asked> {
                let mut asks = Vec::new();
                $(asks.extend(<$capability>::asks(&self.$field));)*
                asks
            }
        }

        impl Capabilities {
            pub fn new(backends: &Backends) -> Self {
                Capabilities { $($field: <$capability>::init(backends),)* }
            }

            pub fn link<T: CapabilityView>(linker: &mut Linker<T>) -> wasmtime::Result<()> {
                $(<$capability>::link(linker)?;)*
                Ok(())
            }

            /// The top-level manifest keys capabilities read.
            pub fn app_keys() -> impl Iterator<Item = &'static str> {
                [$(<$capability as Capability>::APP_KEYS),*].into_iter().flatten().copied()
            }

            /// The keys of a function's table capabilities read.
            pub fn function_keys() -> impl Iterator<Item = &'static str> {
                [$(<$capability as Capability>::FUNCTION_KEYS),*].into_iter().flatten().copied()
            }

            pub fn configure_app(
                &self,
                app: &AppManifest<'_>,
            ) -> Result<AppConfigured, ConfigureError> {
                Ok(AppConfigured { $($field: self.$field.configure_app(app)?,)* })
            }

            pub fn configure(
                &self,
                app: &AppConfigured,
                function: &FunctionManifest<'_>,
            ) -> Result<Configured, ConfigureError> {
                Ok(Configured { $($field: self.$field.configure(&app.$field, function)?,)* })
            }

            pub fn prepare(
                &self,
                configured: &Configured,
                invocation: &Invocation<'_>,
                wasi: &mut WasiCtxBuilder,
            ) -> Instances {
                Instances {
                    $($field: self.$field.prepare(&configured.$field, invocation, wasi),)*
                }
            }
        }
    };
}

capabilities! {
    config: config::Config,
    database: database::Database,
    auth: auth::Auth,
    scheduler: scheduler::Scheduler,
    storage: storage::Storage,
    collections: collections::Collections,
    outbound: outbound::Outbound,
}

impl Instances {
    /// The hooks wasi:http sends outbound requests through.
    pub fn http_hooks(&mut self) -> &mut dyn wasmtime_wasi_http::WasiHttpHooks {
        &mut self.outbound
    }
}
