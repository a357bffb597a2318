//! Collections clients reach directly (`[collections.NAME]` in
//! `kiln.toml`), under rules, with write hooks.
//!
//! This capability has no WIT interface: functions reach every collection
//! through `kiln:platform/database`, and their writes call no hooks. What
//! it builds is the app's side: the rules, hidden and server-set fields
//! and hooks of each collection ([`manifest`]), and the data API's
//! decisions and store calls ([`data`]), which the server's platform
//! endpoints and admin API call.
//!
//! | file | job |
//! | --- | --- |
//! | `manifest.rs` | parses and checks the declarations |
//! | `fields.rs` | hidden and server-set fields: checks and stripping |
//! | `data.rs` | list, count, get, create, update, delete under the rules |
//! | `warnings.rs` | collections open to anonymous callers, for `kiln check` |

pub mod data;
mod fields;
pub mod manifest;
pub mod warnings;

use std::collections::BTreeMap;
use std::sync::Arc;

use wasmtime::component::Linker;
use wasmtime_wasi::WasiCtxBuilder;

pub use self::data::{Asker, Caller, Change, DataError, ListRequest};
pub use self::manifest::{Action, Collection};
use super::{
    AppManifest, Backends, Capability, CapabilityView, ConfigureError, FunctionManifest, Instances,
    Invocation, Pick,
};

/// One app's collections as its clients reach them.
pub struct AppCollections {
    pub app: Arc<str>,
    pub collections: BTreeMap<String, Collection>,
    /// Data calls of the app in flight at once; the rest wait.
    pub slots: tokio::sync::Semaphore,
}

/// Data API calls one app runs at once.
pub const DATA_SLOTS: usize = 16;

pub struct Collections;

impl Capability for Collections {
    const APP_KEYS: &'static [&'static str] = &["collections"];
    type App = Arc<AppCollections>;
    type Configured = ();
    type Instance = ();

    fn init(_: &Backends) -> Self {
        Collections
    }

    fn link<T: CapabilityView>(_: &mut Linker<T>) -> wasmtime::Result<()>
    where
        Instances: Pick<Self>,
    {
        Ok(())
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
        _: &Arc<AppCollections>,
        _: &FunctionManifest<'_>,
    ) -> Result<(), ConfigureError> {
        Ok(())
    }

    fn asks(app: &Arc<AppCollections>) -> Vec<(String, String)> {
        let mut asks = Vec::new();
        for (name, collection) in &app.collections {
            for action in Action::ALL {
                if let Some(function) = collection.rule(action).and_then(|r| r.function()) {
                    asks.push((
                        format!("collections.{name}.{}", action.name()),
                        function.to_string(),
                    ));
                }
            }
            for (key, hook) in [
                ("before_write", &collection.before_write),
                ("after_write", &collection.after_write),
            ] {
                if let Some(function) = hook {
                    asks.push((format!("collections.{name}.{key}"), function.clone()));
                }
            }
        }
        asks
    }

    fn prepare(&self, _: &(), _: &Invocation<'_>, _: &mut WasiCtxBuilder) {}
}
