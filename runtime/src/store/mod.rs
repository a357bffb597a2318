//! The document store: one trait, two backends (embedded SQLite, MongoDB).
//!
//! It holds app data and Kiln's own platform data. [`Documents`] is what the
//! rest of the runtime uses: it validates names, documents and queries with
//! the [`query`] subset before any backend sees them, so both backends
//! refuse the same input the same way.

pub mod counters;
mod documents;
mod keys;
pub mod mongo;
pub mod platform;
#[cfg(test)]
mod properties;
pub mod query;
pub mod sqlite;

use async_trait::async_trait;
use serde_json::Value;

pub use self::documents::{
    Documents, FindOptions, FindPage, PLATFORM_DATABASE, StoreLimits, Written, app_namespace,
};
use self::query::{Filter, QueryError, Update};

/// Why a store call failed; each case is one a caller can act on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    #[error("{0}")]
    InvalidInput(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    LimitExceeded(String),
    #[error("{0}")]
    Unavailable(String),
}

impl From<QueryError> for StoreError {
    fn from(err: QueryError) -> Self {
        match err {
            QueryError::Invalid(m) => StoreError::InvalidInput(m),
            QueryError::OverBudget(m) => StoreError::LimitExceeded(m),
        }
    }
}

/// A collection of a database: an app's, or the platform's.
#[derive(Debug, Clone, Copy)]
pub struct Namespace<'a> {
    pub database: &'a str,
    pub collection: &'a str,
}

/// A filter, as given and as parsed.
#[derive(Clone)]
pub struct Query {
    pub raw: Value,
    pub filter: Filter,
}

/// An update, as given and as parsed.
#[derive(Clone)]
pub struct Change {
    pub raw: Value,
    pub update: Update,
}

/// Sort, skip and limit of a find, already validated.
#[derive(Default)]
pub struct FindSpec {
    pub sort: Option<(Value, query::Sort)>,
    pub skip: u64,
    pub limit: Option<u64>,
}

/// What an update did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UpdateOutcome {
    pub matched: u64,
    pub modified: u64,
    pub upserted_id: Option<String>,
}

/// A backend. Inputs arrive validated; ids are set on every inserted document.
#[async_trait]
pub trait DocumentStore: Send + Sync {
    /// Inserts all documents or none; a duplicate `_id` or unique key is `Conflict`.
    async fn insert(&self, ns: Namespace<'_>, docs: Vec<Value>) -> Result<(), StoreError>;
    /// Matching documents, sorted (ties by `_id`), skipped and limited.
    async fn find(
        &self,
        ns: Namespace<'_>,
        query: &Query,
        spec: &FindSpec,
    ) -> Result<Vec<Value>, StoreError>;
    async fn update(
        &self,
        ns: Namespace<'_>,
        query: &Query,
        change: &Change,
        upsert: bool,
        multi: bool,
    ) -> Result<UpdateOutcome, StoreError>;
    /// Replaces the first match (its `_id` is kept).
    async fn replace(
        &self,
        ns: Namespace<'_>,
        query: &Query,
        replacement: Value,
        upsert: bool,
    ) -> Result<UpdateOutcome, StoreError>;
    /// Updates the first match atomically; returns it before or after.
    async fn find_one_and_update(
        &self,
        ns: Namespace<'_>,
        query: &Query,
        change: &Change,
        return_new: bool,
        upsert: bool,
    ) -> Result<Option<Value>, StoreError>;
    async fn delete(
        &self,
        ns: Namespace<'_>,
        query: &Query,
        multi: bool,
    ) -> Result<u64, StoreError>;
    async fn count(&self, ns: Namespace<'_>, query: &Query) -> Result<u64, StoreError>;
    /// Creates an index over `keys` (validated `(path, 1 | -1)` pairs); idempotent.
    async fn create_index(
        &self,
        ns: Namespace<'_>,
        keys: &[(String, i32)],
        unique: bool,
    ) -> Result<(), StoreError>;
    async fn drop_collection(&self, ns: Namespace<'_>) -> Result<(), StoreError>;
    /// Counters every node sharing this store reads without a store call,
    /// for caches of records; `None` when the backend has nothing cheaper
    /// than reading the record (MongoDB: nodes on other hosts).
    fn change_counters(&self) -> Option<&counters::ChangeCounters> {
        None
    }
}

/// The name MongoDB gives an index: `a_1_b_-1`.
pub fn index_name(keys: &[(String, i32)]) -> String {
    keys.iter()
        .map(|(path, dir)| format!("{path}_{dir}"))
        .collect::<Vec<_>>()
        .join("_")
}
