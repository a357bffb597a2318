//! The HTTP trigger: routes a request to a function of an app and calls its
//! `wasi:http/incoming-handler` in a fresh instance.

mod body;
mod dispatch;
pub mod error;
pub mod router;

use std::sync::Arc;

use crate::engine::function::Function;

pub use self::body::ResponseBody;
pub use self::dispatch::handle;
pub use self::error::{error_response, json_response};
pub use self::router::{Route, RouteError, RouteMatch, Router};

/// The HTTP side of one deployment of an app.
pub struct HttpApp {
    pub app: Arc<str>,
    pub services: crate::capabilities::Services,
    pub router: Router,
    /// Indexed by [`RouteMatch::function`].
    pub functions: Vec<Arc<Function>>,
    /// The names of `functions`.
    pub function_names: Arc<[Arc<str>]>,
}
