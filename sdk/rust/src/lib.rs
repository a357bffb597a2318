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

pub mod config;
pub mod db;
pub mod http;

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
