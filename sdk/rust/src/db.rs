//! The app's document database: typed collections over serde types, with
//! MongoDB's query language written with `serde_json::json!`.
//!
//! ```ignore
//! use kiln_sdk::db::Collection;
//! use serde_json::json;
//!
//! #[derive(serde::Serialize, serde::Deserialize)]
//! struct Todo {
//!     #[serde(rename = "_id", skip_serializing_if = "Option::is_none")]
//!     id: Option<String>,
//!     title: String,
//!     done: bool,
//! }
//!
//! let todos = Collection::<Todo>::new("todos");
//! let id = todos.insert(&Todo { id: None, title: "write docs".into(), done: false })?;
//! let open = todos.find(json!({"done": false})).sort(json!({"title": 1})).limit(20).all()?;
//! todos.update_one(json!({"_id": id}), json!({"$set": {"done": true}}))?;
//! ```

use std::marker::PhantomData;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::bindings::kiln::platform::database as wit;

/// Why a database call failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// No document or collection matched where one was required.
    NotFound(String),
    /// A unique index (or `_id`) would be violated; nothing was written.
    Conflict(String),
    /// Malformed JSON, an operator outside the supported subset, a bad name.
    InvalidInput(String),
    PermissionDenied(String),
    /// A document over 16 MiB, more results than one call returns, a query over its time budget.
    LimitExceeded(String),
    /// The database is unreachable; the call may be retried.
    Unavailable(String),
    /// A document did not (de)serialize as the collection's type.
    Serde(String),
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (kind, message) = match self {
            Error::NotFound(m) => ("not found", m),
            Error::Conflict(m) => ("conflict", m),
            Error::InvalidInput(m) => ("invalid input", m),
            Error::PermissionDenied(m) => ("permission denied", m),
            Error::LimitExceeded(m) => ("limit exceeded", m),
            Error::Unavailable(m) => ("unavailable", m),
            Error::Serde(m) => ("serialization", m),
        };
        write!(f, "database {kind}: {message}")
    }
}

impl std::error::Error for Error {}

impl From<wit::Error> for Error {
    fn from(err: wit::Error) -> Self {
        match err {
            wit::Error::NotFound(m) => Error::NotFound(m),
            wit::Error::Conflict(m) => Error::Conflict(m),
            wit::Error::InvalidInput(m) => Error::InvalidInput(m),
            wit::Error::PermissionDenied(m) => Error::PermissionDenied(m),
            wit::Error::LimitExceeded(m) => Error::LimitExceeded(m),
            wit::Error::Unavailable(m) => Error::Unavailable(m),
        }
    }
}

impl From<serde_json::Error> for Error {
    fn from(err: serde_json::Error) -> Self {
        Error::Serde(err.to_string())
    }
}

pub type Result<T> = std::result::Result<T, Error>;

/// What an update did.
pub type UpdateResult = wit::UpdateResult;

/// Now, as a database date: `{"$date": "<RFC 3339>"}`.
pub fn now() -> Value {
    let millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    date(millis)
}

/// A database date for milliseconds since the Unix epoch.
pub fn date(millis: i64) -> Value {
    let secs = millis.div_euclid(1000);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    serde_json::json!({
        "$date": format!(
            "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
            rem / 3600,
            rem % 3600 / 60,
            rem % 60,
            millis.rem_euclid(1000)
        )
    })
}

/// Days since 1970-01-01 to a (year, month, day) of the proleptic Gregorian calendar.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// A collection of documents of type `T`.
pub struct Collection<T> {
    name: String,
    _type: PhantomData<fn() -> T>,
}

impl<T: Serialize + DeserializeOwned> Collection<T> {
    pub fn new(name: impl Into<String>) -> Self {
        Collection {
            name: name.into(),
            _type: PhantomData,
        }
    }

    /// Inserts a document; returns its `_id` (generated when the document has none).
    pub fn insert(&self, doc: &T) -> Result<String> {
        Ok(wit::insert(&self.name, &serde_json::to_string(doc)?)?)
    }

    /// Inserts documents, all or none.
    pub fn insert_many(&self, docs: &[T]) -> Result<Vec<String>> {
        let texts = docs
            .iter()
            .map(serde_json::to_string)
            .collect::<std::result::Result<Vec<_>, _>>()?;
        Ok(wit::insert_many(&self.name, &texts)?)
    }

    /// The document with this `_id`.
    pub fn get(&self, id: &str) -> Result<Option<T>> {
        wit::get(&self.name, id)?
            .map(|text| serde_json::from_str(&text).map_err(Error::from))
            .transpose()
    }

    /// A find, configured with chained calls and run by [`Find::all`],
    /// [`Find::first`] or [`Find::page`].
    pub fn find(&self, filter: Value) -> Find<'_, T> {
        Find {
            collection: self,
            filter,
            options: wit::FindOptions {
                sort: None,
                projection: None,
                skip: None,
                limit: None,
                batch_size: None,
                cursor: None,
            },
        }
    }

    pub fn find_one(&self, filter: Value) -> Result<Option<T>> {
        self.find(filter).first()
    }

    pub fn update_one(&self, filter: Value, update: Value) -> Result<UpdateResult> {
        self.update(filter, update, false, false)
    }

    pub fn update_many(&self, filter: Value, update: Value) -> Result<UpdateResult> {
        self.update(filter, update, false, true)
    }

    /// Updates the first match, or inserts a document built from the filter's
    /// equalities and the update.
    pub fn upsert(&self, filter: Value, update: Value) -> Result<UpdateResult> {
        self.update(filter, update, true, false)
    }

    fn update(
        &self,
        filter: Value,
        update: Value,
        upsert: bool,
        multi: bool,
    ) -> Result<UpdateResult> {
        let options = wit::UpdateOptions { upsert, multi };
        Ok(wit::update(
            &self.name,
            &filter.to_string(),
            &update.to_string(),
            options,
        )?)
    }

    /// Replaces the first match (keeping its `_id`).
    pub fn replace(&self, filter: Value, doc: &T, upsert: bool) -> Result<UpdateResult> {
        Ok(wit::replace(
            &self.name,
            &filter.to_string(),
            &serde_json::to_string(doc)?,
            upsert,
        )?)
    }

    /// Atomically updates the first match and returns it as it is after the update.
    pub fn find_one_and_update(
        &self,
        filter: Value,
        update: Value,
        upsert: bool,
    ) -> Result<Option<T>> {
        wit::find_one_and_update(
            &self.name,
            &filter.to_string(),
            &update.to_string(),
            true,
            upsert,
        )?
        .map(|text| serde_json::from_str(&text).map_err(Error::from))
        .transpose()
    }

    pub fn delete_one(&self, filter: Value) -> Result<u64> {
        Ok(wit::delete(&self.name, &filter.to_string(), false)?)
    }

    pub fn delete_many(&self, filter: Value) -> Result<u64> {
        Ok(wit::delete(&self.name, &filter.to_string(), true)?)
    }

    pub fn count(&self, filter: Value) -> Result<u64> {
        Ok(wit::count(&self.name, &filter.to_string())?)
    }

    /// Creates an index, e.g. `json!({"email": 1})`; creating it again is a no-op.
    pub fn create_index(&self, keys: Value, unique: bool) -> Result<()> {
        Ok(wit::create_index(&self.name, &keys.to_string(), unique)?)
    }

    /// Drops the collection and its indexes.
    pub fn drop(&self) -> Result<()> {
        Ok(wit::drop_collection(&self.name)?)
    }

    /// Writes one document through the collection's hooks (`before_write`,
    /// `after_write` in `kiln.toml`), as a client's write would; the other
    /// writes call none. `id` names the document (none for a create: the
    /// document's own `_id` or a new one). Returns the document as written
    /// (none after a delete). A hook's own calls are `PermissionDenied`.
    pub fn write_with_hooks(
        &self,
        id: Option<&str>,
        change: HookedChange<&T>,
    ) -> Result<Option<T>> {
        use crate::bindings::kiln::platform::collections::{self as hooked, DocumentChange};
        let change = match change {
            HookedChange::Create(doc) => DocumentChange::Create(serde_json::to_string(doc)?),
            HookedChange::Update(update) => DocumentChange::Update(update.to_string()),
            HookedChange::Replace(doc) => DocumentChange::Replace(serde_json::to_string(doc)?),
            HookedChange::Delete => DocumentChange::Delete,
        };
        match hooked::write_with_hooks(&self.name, id, &change)? {
            Some(text) => Ok(Some(serde_json::from_str(&text)?)),
            None => Ok(None),
        }
    }
}

/// A write through a collection's hooks ([`Collection::write_with_hooks`]).
pub enum HookedChange<D> {
    Create(D),
    /// Update operators (`{"$set": ...}`).
    Update(Value),
    Replace(D),
    Delete,
}

/// A find being configured.
pub struct Find<'a, T> {
    collection: &'a Collection<T>,
    filter: Value,
    options: wit::FindOptions,
}

/// One page of a find, and the cursor for the next.
pub struct Page<T> {
    pub documents: Vec<T>,
    pub cursor: Option<String>,
}

impl<T: Serialize + DeserializeOwned> Find<'_, T> {
    pub fn sort(mut self, sort: Value) -> Self {
        self.options.sort = Some(sort.to_string());
        self
    }

    pub fn skip(mut self, n: u64) -> Self {
        self.options.skip = Some(n);
        self
    }

    pub fn limit(mut self, n: u64) -> Self {
        self.options.limit = Some(n);
        self
    }

    /// Reads at most `n` documents per call (see [`Find::page`]).
    pub fn batch_size(mut self, n: u32) -> Self {
        self.options.batch_size = Some(n);
        self
    }

    /// Continues from the cursor of a previous page of this find.
    pub fn cursor(mut self, cursor: impl Into<String>) -> Self {
        self.options.cursor = Some(cursor.into());
        self
    }

    /// One page: pass its cursor to [`Find::cursor`] for the next.
    pub fn page(&self) -> Result<Page<T>> {
        let page = wit::find(
            &self.collection.name,
            &self.filter.to_string(),
            &self.options,
        )?;
        let documents = page
            .documents
            .iter()
            .map(|text| serde_json::from_str(text))
            .collect::<std::result::Result<Vec<T>, _>>()?;
        Ok(Page {
            documents,
            cursor: page.cursor,
        })
    }

    /// Every match (one call; more than 1000 needs a limit or [`Find::batch_size`]).
    /// With a batch size, reads page after page.
    pub fn all(mut self) -> Result<Vec<T>> {
        let mut all = Vec::new();
        loop {
            let page = self.page()?;
            all.extend(page.documents);
            match page.cursor {
                Some(cursor) => self.options.cursor = Some(cursor),
                None => return Ok(all),
            }
        }
    }

    pub fn first(self) -> Result<Option<T>> {
        Ok(self.limit(1).page()?.documents.into_iter().next())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_dates() {
        assert_eq!(
            date(0),
            serde_json::json!({"$date": "1970-01-01T00:00:00.000Z"})
        );
        assert_eq!(
            date(1_709_210_096_789),
            serde_json::json!({"$date": "2024-02-29T12:34:56.789Z"})
        );
        assert_eq!(
            date(-1),
            serde_json::json!({"$date": "1969-12-31T23:59:59.999Z"})
        );
    }
}
