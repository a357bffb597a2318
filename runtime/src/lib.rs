//! The Kiln host: runs WebAssembly components as serverless functions.
//!
//! The [`server`] composes the rest: it builds the [`engine`], links the
//! [`capabilities`] into it, and starts the [`triggers`]. Each unit knows only
//! the ones below it: the engine knows nothing of HTTP routes or backends.

pub mod capabilities;
pub mod engine;
pub mod server;
pub mod store;
pub mod triggers;
