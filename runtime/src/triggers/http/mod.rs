//! The HTTP trigger: routes a request to a function of an app and calls its
//! `wasi:http/incoming-handler` in a fresh instance.

mod body;
mod dispatch;
pub mod error;
pub mod router;

use std::sync::Arc;

use tokio::sync::Semaphore;
use wasmtime_wasi_http::p2::bindings::ProxyPre;

use crate::engine::lazy::Lazy;
use crate::engine::{InvocationState, Limits};

pub use self::body::ResponseBody;
pub use self::dispatch::handle;
pub use self::error::{error_response, json_response};
pub use self::router::{Route, RouteError, RouteMatch, Router};

/// The export every HTTP function must have (any 0.2.x version).
pub const HANDLER_EXPORT: &str = "wasi:http/incoming-handler@0.2";

/// A function of a deployment, ready to serve HTTP.
pub struct HttpFunction {
    pub name: Arc<str>,
    /// The linked component, loaded (from the compile cache) by the first request.
    pub pre: Lazy<ProxyPre<InvocationState>>,
    pub limits: Limits,
    pub variables: Arc<[(String, String)]>,
    pub allowed_outbound_hosts: Arc<[String]>,
    /// Permits for `limits.max_concurrency` instances at once.
    pub concurrency: Arc<Semaphore>,
}

/// The HTTP side of one deployment of an app.
pub struct HttpApp {
    pub app: Arc<str>,
    pub services: crate::capabilities::Services,
    pub router: Router,
    /// Indexed by [`RouteMatch::function`].
    pub functions: Vec<HttpFunction>,
}
