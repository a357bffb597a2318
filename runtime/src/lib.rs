//! The Kiln host: runs WebAssembly components as serverless functions.
//!
//! Dependencies point one way. The [`server`] composes the rest: it builds
//! the [`invocation`] core (the [`engine`] with every [`capabilities`]
//! capability linked) and starts the [`triggers`], which turn HTTP requests,
//! cron occurrences and jobs into invocations. Capabilities reach the
//! [`store`]; the engine and the store know nothing above them.

pub mod access;
pub mod capabilities;
pub mod engine;
pub mod invocation;
pub mod server;
pub mod sizes;
pub mod store;
pub mod triggers;

/// Makes ring the process's TLS crypto provider. Every HTTP client of the
/// process (the CLI's, identity providers') needs one installed before it
/// is built; calling this again does nothing.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
