//! Write Kiln functions in Rust.
//!
//! ```ignore
//! use kiln_sdk::http::{Request, Response};
//!
//! fn handle(req: Request) -> Response {
//!     let greeting = kiln_sdk::config::get("greeting").unwrap_or_else(|| "Hello".into());
//!     let name = req.param("name").unwrap_or("world");
//!     Response::json(&serde_json::json!({ "message": format!("{greeting}, {name}!") }))
//! }
//!
//! kiln_sdk::http_function!(handle);
//! ```
//!
//! Build with `cargo build --release --target wasm32-wasip2` (or `kiln build`).

pub mod auth;
pub mod config;
pub mod db;
pub mod hooks;
pub mod http;
pub mod scheduled;
pub mod scheduler;
pub mod storage;

/// Bindings generated from the `kiln:platform` WIT package, for what the
/// ergonomic API does not cover (streaming bodies, for one).
pub mod bindings {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "kiln:platform/http-function",
        generate_all,
        pub_export_macro: true,
        export_macro_name: "__export_http_function",
        default_bindings_module: "kiln_sdk::bindings",
    });
}

/// Bindings of the `scheduled-handler` export; the platform imports are the
/// ones in [`bindings`].
#[doc(hidden)]
pub mod scheduled_bindings {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "kiln:platform/scheduled-function",
        with: {
            "kiln:platform/config@0.1.0": crate::bindings::kiln::platform::config,
            "kiln:platform/database@0.1.0": crate::bindings::kiln::platform::database,
            "kiln:platform/auth@0.1.0": crate::bindings::kiln::platform::auth,
            "kiln:platform/storage@0.1.0": crate::bindings::kiln::platform::storage,
            "kiln:platform/push@0.1.0": crate::bindings::kiln::platform::push,
            "kiln:platform/scheduler@0.1.0": crate::bindings::kiln::platform::scheduler,
            "wasi:io/error@0.2.10": crate::bindings::wasi::io::error,
            "wasi:io/poll@0.2.10": crate::bindings::wasi::io::poll,
            "wasi:io/streams@0.2.10": crate::bindings::wasi::io::streams,
        },
        pub_export_macro: true,
        export_macro_name: "__export_scheduled_function",
        default_bindings_module: "kiln_sdk::scheduled_bindings",
    });
}
