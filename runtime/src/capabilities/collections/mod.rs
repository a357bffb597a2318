//! Collections clients reach directly (`[collections.NAME]` in
//! `kiln.toml`), under rules, with write hooks.
//!
//! Functions reach every collection through `kiln:platform/database`, whose
//! writes call no hooks; this capability's interface,
//! `kiln:platform/collections`, is how a function asks for them ([`host`]).
//! Its app side is the rules, hidden and server-set fields and hooks of
//! each collection ([`manifest`]), and the data API's decisions and store
//! calls ([`data`]), which the server's platform endpoints and admin API call.
//!
//! | file | job |
//! | --- | --- |
//! | `manifest.rs` | parses and checks the declarations |
//! | `fields.rs` | hidden and server-set fields: checks and stripping |
//! | `data.rs` | list, count, get, create, update, delete under the rules |
//! | `warnings.rs` | collections open to anonymous callers, for `kiln check` |
//! | `host.rs` | `write-with-hooks` for functions |

pub mod data;
mod fields;
pub mod host;
pub mod manifest;
pub mod warnings;

use std::collections::BTreeMap;
use std::sync::Arc;

use wasmtime::component::{HasSelf, Linker};
use wasmtime_wasi::WasiCtxBuilder;

pub use self::data::{Asker, Caller, Change, DataError, ListRequest};
pub use self::host::{AppAsker, Askers, CollectionsHost};
pub use self::manifest::{Action, Collection};
use super::bindings::kiln::platform::collections as wit;
use super::{
    AppManifest, Asked, Backends, Capability, CapabilityView, ConfigureError, FunctionManifest,
    Instances, Invocation, Pick, instance,
};
use crate::store::Documents;

/// One app's collections as its clients reach them.
pub struct AppCollections {
    pub app: Arc<str>,
    pub collections: BTreeMap<String, Collection>,
    /// Data calls of the app in flight at once; the rest wait.
    pub slots: tokio::sync::Semaphore,
}

/// Data API calls one app runs at once.
pub const DATA_SLOTS: usize = 16;

pub struct Collections {
    documents: Documents,
    askers: Arc<Askers>,
}

/// The `kiln-trigger`s of invocations that are hooks or rules themselves.
const HOOK_TRIGGERS: [&str; 3] = ["before-write", "after-write", "collection-rule"];

impl Capability for Collections {
    const APP_KEYS: &'static [&'static str] = &["collections"];
    type App = Arc<AppCollections>;
    type Configured = Arc<AppCollections>;
    type Instance = CollectionsHost;

    fn init(backends: &Backends) -> Self {
        Collections {
            documents: backends.documents.clone(),
            askers: backends.askers.clone(),
        }
    }

    fn link<T: CapabilityView>(linker: &mut Linker<T>) -> wasmtime::Result<()>
    where
        Instances: Pick<Self>,
    {
        wit::add_to_linker::<T, HasSelf<CollectionsHost>>(linker, |t| instance::<Collections, T>(t))
    }

    fn configure_app(&self, app: &AppManifest<'_>) -> Result<Arc<AppCollections>, ConfigureError> {
        Ok(Arc::new(AppCollections {
            app: app.app.into(),
            collections: manifest::parse(app)?,
            slots: tokio::sync::Semaphore::new(DATA_SLOTS),
        }))
    }

    fn configure(
        &self,
        collections: &Arc<AppCollections>,
        _: &FunctionManifest<'_>,
    ) -> Result<Arc<AppCollections>, ConfigureError> {
        Ok(collections.clone())
    }

    fn asks(app: &Arc<AppCollections>) -> Vec<Asked> {
        let mut asks = Vec::new();
        for (name, collection) in &app.collections {
            for action in Action::ALL {
                if let Some(function) = collection.rule(action).and_then(|r| r.function()) {
                    asks.push(Asked {
                        asker: "a collection's rule",
                        field: format!("collections.{name}.{}", action.name()),
                        function: function.to_string(),
                    });
                }
            }
            for (key, hook) in [
                ("before_write", &collection.before_write),
                ("after_write", &collection.after_write),
            ] {
                if let Some(function) = hook {
                    asks.push(Asked {
                        asker: "a collection's hook",
                        field: format!("collections.{name}.{key}"),
                        function: function.clone(),
                    });
                }
            }
        }
        asks
    }

    fn prepare(
        &self,
        collections: &Arc<AppCollections>,
        invocation: &Invocation<'_>,
        _: &mut WasiCtxBuilder,
    ) -> CollectionsHost {
        let in_hook = invocation.trigger_headers.iter().any(|(name, value)| {
            name == "kiln-trigger"
                && HOOK_TRIGGERS
                    .iter()
                    .any(|t| value.as_bytes() == t.as_bytes())
        });
        CollectionsHost::new(
            collections.clone(),
            self.documents.clone(),
            self.askers.clone(),
            invocation.request_id.clone(),
            in_hook,
            invocation.turn.clone(),
        )
    }
}
