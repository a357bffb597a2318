//! A deployed function: its component (loaded on first use), its limits and
//! configuration. HTTP routes and cron triggers of a version share it.

use std::sync::Arc;

use tokio::sync::Semaphore;
use wasmtime::component::{ComponentExportIndex, InstancePre};
use wasmtime_wasi_http::p2::bindings::ProxyPre;

use super::lazy::Lazy;
use super::outbound::OutboundEntry;
use super::quota::{Admission, AppQuota, Overloaded};
use super::{InvocationContext, InvocationState, Limits};
use crate::capabilities::Services;

/// The export of HTTP functions (any 0.2.x version).
pub const HTTP_EXPORT: &str = "wasi:http/incoming-handler@0.2";
/// The export of scheduled functions.
pub const SCHEDULED_EXPORT: &str = "kiln:platform/scheduled-handler@0.1.0";
/// The function inside [`SCHEDULED_EXPORT`].
pub const SCHEDULED_RUN: &str = "run";

pub struct Function {
    pub name: Arc<str>,
    pub component: Lazy<LoadedComponent>,
    pub limits: Limits,
    /// The function's variables; also its only environment variables.
    pub variables: Arc<[(String, String)]>,
    pub allowed_outbound_hosts: Arc<[OutboundEntry]>,
    /// Permits for `limits.max_concurrency` instances at once.
    pub concurrency: Arc<Semaphore>,
    /// The app's share of the server, shared by all its functions.
    pub app_quota: Arc<AppQuota>,
}

impl Function {
    /// Waits (until `deadline`) for a slot of this function and of its app.
    pub async fn admit(&self, deadline: tokio::time::Instant) -> Result<Admission, Overloaded> {
        self.app_quota
            .admit(&self.concurrency, self.limits.max_concurrency, deadline)
            .await
    }

    /// The context of one invocation of this function, for `app`.
    pub fn invocation_context(
        &self,
        request_id: &str,
        app: &Arc<str>,
        app_functions: &Arc<[Arc<str>]>,
        services: &Services,
    ) -> InvocationContext {
        InvocationContext {
            request_id: request_id.to_string(),
            app: app.clone(),
            function: self.name.clone(),
            limits: self.limits,
            variables: self.variables.clone(),
            allowed_outbound_hosts: self.allowed_outbound_hosts.clone(),
            app_functions: app_functions.clone(),
            services: services.clone(),
        }
    }
}

/// A component linked against the platform, with its entry points resolved.
pub struct LoadedComponent {
    pub pre: InstancePre<InvocationState>,
    /// The HTTP handler, when the component exports one.
    pub http: Option<ProxyPre<InvocationState>>,
    /// `scheduled-handler.run`, when the component exports it.
    pub scheduled: Option<ComponentExportIndex>,
}
