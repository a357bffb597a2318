//! The document store: one trait, two backends (embedded SQLite, MongoDB).

pub mod query;
