//! The HTTP trigger: routes a request to a function of an app and calls its
//! `wasi:http/incoming-handler` through the invocation core.

pub mod ask;
mod auth;
mod body;
mod dispatch;
mod entry;
pub mod error;
pub mod router;

pub use self::auth::{bearer_token, identify, refusal_error};
pub use self::body::{ResponseBody, empty_body, full_body};
pub use self::dispatch::{handle, is_platform_path};
pub use self::entry::{HTTP_EXPORT, HttpEntry};
pub use self::error::{ApiError, ErrorCode, json_value_response};
pub use self::router::{Route, RouteError, RouteMatch, Router};
use crate::access::Rule;
use crate::capabilities::auth::AppAuth;

/// App-relative paths under this prefix are the platform's (auth, files,
/// data, realtime): no route may use them, and a request for one never
/// reaches a function.
pub const PLATFORM_PREFIX: &str = "/_kiln";

/// Headers the trigger sets for the guest; a client cannot set them.
pub const KILN_HEADER_PREFIX: &str = "kiln-";

/// The body limits of one function (manifest: `limits`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyLimits {
    /// Largest request body accepted, in bytes.
    pub max_request_body: u64,
    /// Largest response body sent, in bytes; the rest is cut off.
    pub max_response_body: u64,
}

impl Default for BodyLimits {
    fn default() -> Self {
        BodyLimits {
            max_request_body: 10 * 1024 * 1024,
            max_response_body: 100 * 1024 * 1024,
        }
    }
}

/// Where a route leads.
#[derive(Debug, Clone)]
pub struct RouteTarget {
    /// The function's index in the app.
    pub function: usize,
    /// Who may call it, checked before an instance is created.
    pub policy: Rule,
}

/// The HTTP side of one version of an app.
pub struct HttpRoutes {
    pub router: Router,
    /// Per route of the manifest, in its order (the router's targets).
    pub targets: Vec<RouteTarget>,
    /// How the app's callers are verified.
    pub auth: AppAuth,
    /// Per function of the app, in the app's order.
    pub body_limits: Vec<BodyLimits>,
}
