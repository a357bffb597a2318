//! The store as the runtime uses it: validation, per-call limits and
//! cursors in front of whichever backend is configured.

use std::hash::{Hash, Hasher};
use std::sync::Arc;

use base64::Engine as _;
use serde_json::Value;

use super::counters::ChangeCounters;
use super::query::value::canonicalize_dates;
use super::query::{Filter, Projection, QueryError, Sort, Update, check_document, new_id};
use super::{Change, DocumentStore, FindSpec, Namespace, Query, StoreError, UpdateOutcome};

/// The database holding Kiln's own data; app databases are app names, which
/// cannot start with `_`.
pub const PLATFORM_DATABASE: &str = "_kiln";

/// Per-call limits.
#[derive(Debug, Clone, Copy)]
pub struct StoreLimits {
    /// Most documents one find returns without a cursor, and most per batch.
    pub max_results: u64,
}

impl Default for StoreLimits {
    fn default() -> Self {
        StoreLimits { max_results: 1000 }
    }
}

/// Options of a find, as a caller gives them.
#[derive(Debug, Clone, Default)]
pub struct FindOptions {
    pub sort: Option<Value>,
    pub projection: Option<Value>,
    pub skip: Option<u64>,
    pub limit: Option<u64>,
    /// Return at most this many and a cursor for the rest.
    pub batch_size: Option<u64>,
    /// A cursor from a previous page of the same find.
    pub cursor: Option<String>,
    /// What ties a cursor to its find, instead of the filter (a caller
    /// whose filter holds per-call values, such as a rule's `@now`).
    pub cursor_scope: Option<String>,
}

/// One page of a find.
#[derive(Debug, Clone, PartialEq)]
pub struct FindPage {
    pub documents: Vec<Value>,
    /// Pass back (with the same find) for the next page; none on the last.
    pub cursor: Option<String>,
}

/// What one write changed: the document before and after (none where
/// there was or is no document).
#[derive(Debug, Clone, PartialEq)]
pub struct Written {
    pub id: String,
    pub before: Option<Value>,
    pub after: Option<Value>,
}

/// The document store, validated and limited.
#[derive(Clone)]
pub struct Documents {
    backend: Arc<dyn DocumentStore>,
    limits: StoreLimits,
}

/// The namespace of an app's collection, refusing names outside
/// `[A-Za-z0-9_-]{1,64}` or starting with `_` (reserved), so no name reaches
/// another app's or the platform's data.
pub fn app_namespace<'a>(app: &'a str, collection: &'a str) -> Result<Namespace<'a>, StoreError> {
    let valid = !collection.is_empty()
        && collection.len() <= 64
        && !collection.starts_with('_')
        && collection
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if !valid {
        return Err(invalid(format!(
            "`{}` is not a collection name: 1 to 64 of A-Z, a-z, 0-9, `_`, `-`, not starting with `_`",
            collection.escape_debug()
        )));
    }
    Ok(Namespace {
        database: app,
        collection,
    })
}

fn query(filter: &Value) -> Result<Query, StoreError> {
    Ok(Query {
        filter: Filter::parse(filter)?,
        raw: filter.clone(),
    })
}

fn change(update: &Value) -> Result<Change, StoreError> {
    let mut raw = update.clone();
    canonicalize_dates(&mut raw);
    Ok(Change {
        update: Update::parse(&raw)?,
        raw,
    })
}

fn invalid(message: impl Into<String>) -> StoreError {
    StoreError::InvalidInput(message.into())
}

impl Documents {
    pub fn new(backend: Arc<dyn DocumentStore>, limits: StoreLimits) -> Self {
        Documents { backend, limits }
    }

    /// See [`DocumentStore::change_counters`].
    pub fn change_counters(&self) -> Option<&ChangeCounters> {
        self.backend.change_counters()
    }

    /// Inserts documents (all or none); returns their `_id`s, generated where absent.
    pub async fn insert(
        &self,
        ns: Namespace<'_>,
        docs: Vec<Value>,
    ) -> Result<Vec<String>, StoreError> {
        let mut ids = Vec::with_capacity(docs.len());
        let mut unique = std::collections::HashSet::with_capacity(docs.len());
        let mut prepared = Vec::with_capacity(docs.len());
        for (i, mut doc) in docs.into_iter().enumerate() {
            check_document(&doc).map_err(|e| match e {
                QueryError::Invalid(m) => invalid(format!("document {i}: {m}")),
                QueryError::OverBudget(m) => {
                    StoreError::LimitExceeded(format!("document {i}: {m}"))
                }
            })?;
            canonicalize_dates(&mut doc);
            let map = doc.as_object_mut().expect("checked: an object");
            let id = match map.get("_id") {
                Some(Value::String(id)) => id.clone(),
                _ => {
                    let id = new_id();
                    map.shift_insert(0, "_id".into(), Value::from(id.clone()));
                    id
                }
            };
            if !unique.insert(id.clone()) {
                return Err(StoreError::Conflict(format!(
                    "_id `{id}` appears twice in one insert"
                )));
            }
            ids.push(id);
            prepared.push(doc);
        }
        self.backend.insert(ns, prepared).await?;
        Ok(ids)
    }

    pub async fn get(&self, ns: Namespace<'_>, id: &str) -> Result<Option<Value>, StoreError> {
        let page = self
            .find(
                ns,
                &serde_json::json!({ "_id": id }),
                FindOptions {
                    limit: Some(1),
                    ..Default::default()
                },
            )
            .await?;
        Ok(page.documents.into_iter().next())
    }

    pub async fn find(
        &self,
        ns: Namespace<'_>,
        filter: &Value,
        options: FindOptions,
    ) -> Result<FindPage, StoreError> {
        let query = query(filter)?;
        let sort = options
            .sort
            .as_ref()
            .map(|s| Ok::<_, StoreError>((s.clone(), Sort::parse(s)?)))
            .transpose()?;
        let projection = options
            .projection
            .as_ref()
            .map(Projection::parse)
            .transpose()?;
        let fingerprint = fingerprint(filter, &options);
        let offset = match &options.cursor {
            Some(cursor) => decode_cursor(cursor, fingerprint)?,
            None => 0,
        };
        let max = self.limits.max_results;
        if options.batch_size.is_some_and(|b| b == 0 || b > max) {
            return Err(invalid(format!("batch_size is between 1 and {max}")));
        }
        let skip = options.skip.unwrap_or(0).saturating_add(offset);
        // Documents still wanted after `offset`, by the caller's limit.
        let remaining = options.limit.map(|l| l.saturating_sub(offset));
        let page = options.batch_size.unwrap_or(max);
        let wanted = remaining.map_or(page, |r| r.min(page));
        let spec = FindSpec {
            sort,
            skip,
            limit: Some(wanted + 1),
        };
        let mut docs = self.backend.find(ns, &query, &spec).await?;
        let reached_limit = remaining.is_some_and(|r| r <= wanted);
        let more = docs.len() as u64 > wanted && !reached_limit;
        docs.truncate(wanted as usize);
        if more && options.batch_size.is_none() && options.cursor.is_none() {
            return Err(StoreError::LimitExceeded(format!(
                "more than {max} documents match: pass a limit, or a batch size to read them in pages"
            )));
        }
        let cursor = more.then(|| encode_cursor(offset + wanted, fingerprint));
        if let Some(projection) = projection {
            docs = docs.iter().map(|d| projection.apply(d)).collect();
        }
        Ok(FindPage {
            documents: docs,
            cursor,
        })
    }

    pub async fn update(
        &self,
        ns: Namespace<'_>,
        filter: &Value,
        update: &Value,
        upsert: bool,
        multi: bool,
    ) -> Result<UpdateOutcome, StoreError> {
        self.backend
            .update(ns, &query(filter)?, &change(update)?, upsert, multi)
            .await
    }

    pub async fn replace(
        &self,
        ns: Namespace<'_>,
        filter: &Value,
        mut replacement: Value,
        upsert: bool,
    ) -> Result<UpdateOutcome, StoreError> {
        check_document(&replacement)?;
        canonicalize_dates(&mut replacement);
        self.backend
            .replace(ns, &query(filter)?, replacement, upsert)
            .await
    }

    pub async fn find_one_and_update(
        &self,
        ns: Namespace<'_>,
        filter: &Value,
        update: &Value,
        return_new: bool,
        upsert: bool,
    ) -> Result<Option<Value>, StoreError> {
        self.backend
            .find_one_and_update(ns, &query(filter)?, &change(update)?, return_new, upsert)
            .await
    }

    pub async fn delete(
        &self,
        ns: Namespace<'_>,
        filter: &Value,
        multi: bool,
    ) -> Result<u64, StoreError> {
        self.backend.delete(ns, &query(filter)?, multi).await
    }

    pub async fn count(&self, ns: Namespace<'_>, filter: &Value) -> Result<u64, StoreError> {
        self.backend.count(ns, &query(filter)?).await
    }

    /// Creates an index over `keys`, e.g. `{"email": 1}` or `{"a": 1, "b": -1}`.
    pub async fn create_index(
        &self,
        ns: Namespace<'_>,
        keys: &Value,
        unique: bool,
    ) -> Result<(), StoreError> {
        let Value::Object(map) = keys else {
            return Err(invalid("index keys are an object such as {\"field\": 1}"));
        };
        if map.is_empty() || map.len() > 16 {
            return Err(invalid("an index has 1 to 16 fields"));
        }
        let mut parsed = Vec::with_capacity(map.len());
        for (path, direction) in map {
            super::query::filter::check_path(path)?;
            match direction.as_i64() {
                Some(d @ (1 | -1)) => parsed.push((path.clone(), d as i32)),
                _ => {
                    return Err(invalid(format!(
                        "index field `{path}`: the direction is 1 or -1"
                    )));
                }
            }
        }
        self.backend.create_index(ns, &parsed, unique).await
    }

    pub async fn drop_collection(&self, ns: Namespace<'_>) -> Result<(), StoreError> {
        self.backend.drop_collection(ns).await
    }

    /// Writes document `id` only if it is still `before` (none: it does not
    /// exist), leaving `after` (none: deleted). `Ok(None)` when another
    /// write came first; a create over an existing id is `Conflict`.
    ///
    /// The check compares every field `before` has, so a concurrent write
    /// that changed any of them is seen; on MongoDB one that only added a
    /// field is not.
    pub async fn swap(
        &self,
        ns: Namespace<'_>,
        id: &str,
        before: Option<Value>,
        after: Option<Value>,
    ) -> Result<Option<Written>, StoreError> {
        let unchanged = |doc: &Value| {
            let conditions: serde_json::Map<String, Value> = doc
                .as_object()
                .into_iter()
                .flatten()
                .map(|(k, v)| match k.as_str() {
                    // Plain: the id is a string, and MongoDB reads an
                    // upsert's or replacement's id from a plain equality.
                    "_id" => (k.clone(), v.clone()),
                    _ => (k.clone(), serde_json::json!({ "$eq": v })),
                })
                .collect();
            Value::Object(conditions)
        };
        let done = match (&before, &after) {
            (None, None) => true,
            (None, Some(doc)) => {
                self.insert(ns, vec![doc.clone()]).await?;
                true
            }
            (Some(old), Some(new)) => {
                let outcome = self
                    .replace(ns, &unchanged(old), new.clone(), false)
                    .await?;
                outcome.matched == 1
            }
            (Some(old), None) => self.delete(ns, &unchanged(old), false).await? == 1,
        };
        Ok(done.then(|| Written {
            id: id.to_string(),
            before,
            after,
        }))
    }
}

/// Ties a cursor to its find, so it cannot be replayed against another.
fn fingerprint(filter: &Value, options: &FindOptions) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    match &options.cursor_scope {
        Some(scope) => scope.hash(&mut hasher),
        None => filter.to_string().hash(&mut hasher),
    }
    options
        .sort
        .as_ref()
        .map(Value::to_string)
        .hash(&mut hasher);
    options.skip.hash(&mut hasher);
    options.limit.hash(&mut hasher);
    hasher.finish()
}

fn encode_cursor(offset: u64, fingerprint: u64) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("{offset}:{fingerprint:x}"))
}

fn decode_cursor(cursor: &str, fingerprint: u64) -> Result<u64, StoreError> {
    let bad = || invalid("the cursor is not one this find returned");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(cursor)
        .map_err(|_| bad())?;
    let text = String::from_utf8(bytes).map_err(|_| bad())?;
    let (offset, print) = text.split_once(':').ok_or_else(bad)?;
    if u64::from_str_radix(print, 16).ok() != Some(fingerprint) {
        return Err(bad());
    }
    offset.parse().map_err(|_| bad())
}
