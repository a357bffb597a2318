//! The MongoDB backend, through the official driver. Each app is one
//! database (`kiln_app_<app>`); Kiln's own data is in `kiln`.
//!
//! Filters, sorts and updates are validated by [`super::query`] before they
//! are sent as they are. A multi-document insert runs in a transaction, so
//! MongoDB must be a replica set (as Atlas and any production deployment are).

use std::future::IntoFuture;
use std::time::Duration;

use async_trait::async_trait;
use futures::TryStreamExt;
use mongodb::bson::{self, Bson, Document};
use mongodb::error::{ErrorKind, WriteFailure};
use mongodb::options::ReturnDocument;
use mongodb::{Client, Collection, IndexModel};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::query::new_id;
use super::query::value::date_value;
use super::{
    Change, DocumentStore, FindSpec, Namespace, PLATFORM_DATABASE, Query, StoreError,
    UpdateOutcome, index_name,
};

/// MongoDB's codes for a duplicate key and an expired time limit.
const DUPLICATE_KEY: i32 = 11000;
const MAX_TIME_EXPIRED: i32 = 50;
/// Codes MongoDB gives input it refuses (BadValue, FailedToParse,
/// TypeMismatch, PathNotViable, ConflictingUpdateOperators,
/// DollarPrefixedFieldName, ImmutableField, ...).
const BAD_INPUT: &[i32] = &[2, 9, 14, 16, 28, 40, 52, 55, 56, 66, 67, 17419];

pub struct MongoStore {
    client: Client,
    budget: Duration,
}

impl MongoStore {
    /// Connects and checks the server answers.
    pub async fn connect(uri: &str, budget: Duration) -> Result<Self, StoreError> {
        let client = Client::with_uri_str(uri)
            .await
            .map_err(|e| StoreError::Unavailable(format!("MongoDB at the configured URI: {e}")))?;
        client
            .database("admin")
            .run_command(bson::doc! { "ping": 1 })
            .await
            .map_err(|e| StoreError::Unavailable(format!("MongoDB does not answer: {e}")))?;
        Ok(MongoStore { client, budget })
    }

    /// Waits for a driver call at most the call budget (writes have no
    /// `maxTimeMS` in the driver, so the bound is kept on this side).
    async fn within<T>(
        &self,
        call: impl std::future::IntoFuture<Output = mongodb::error::Result<T>>,
    ) -> Result<T, StoreError> {
        match tokio::time::timeout(self.budget, call).await {
            Ok(result) => result.map_err(store_error),
            Err(_) => Err(StoreError::LimitExceeded(format!(
                "the call ran past its time budget of {:?}",
                self.budget
            ))),
        }
    }

    fn collection(&self, ns: Namespace<'_>) -> Collection<Document> {
        self.client
            .database(&database_name(ns.database))
            .collection(ns.collection)
    }
}

/// The MongoDB database of a Kiln database (names are at most 63 bytes).
/// A name too long to use whole keeps 20 bytes and 128 bits of its
/// SHA-256: two apps never share a database by a hash collision.
pub fn database_name(database: &str) -> String {
    if database == PLATFORM_DATABASE {
        return "kiln".into();
    }
    let name = format!("kiln_app_{database}");
    if name.len() <= 63 {
        return name;
    }
    let hash = hex::encode(&Sha256::digest(database.as_bytes())[..16]);
    let prefix: String = database.chars().take(20).collect();
    format!("kiln_app_{prefix}_{hash}")
}

fn to_bson(value: &Value) -> Result<Bson, StoreError> {
    Bson::try_from(value.clone())
        .map_err(|e| StoreError::InvalidInput(format!("cannot convert to BSON: {e}")))
}

fn to_document(value: &Value) -> Result<Document, StoreError> {
    match to_bson(value)? {
        Bson::Document(d) => Ok(d),
        _ => Err(StoreError::InvalidInput("expected a JSON object".into())),
    }
}

/// BSON back to Kiln's JSON: dates as `{"$date": ...}` in Kiln's format.
fn to_json(value: Bson) -> Value {
    match value {
        Bson::Document(d) => Value::Object(
            d.into_iter()
                .map(|(k, v)| (k, to_json(v)))
                .collect::<Map<_, _>>(),
        ),
        Bson::Array(items) => Value::Array(items.into_iter().map(to_json).collect()),
        Bson::DateTime(t) => date_value(t.timestamp_millis()),
        Bson::Int32(i) => Value::from(i),
        Bson::Int64(i) => Value::from(i),
        Bson::Double(f) => serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number),
        Bson::String(s) => Value::String(s),
        Bson::Boolean(b) => Value::Bool(b),
        Bson::Null => Value::Null,
        Bson::ObjectId(id) => Value::String(id.to_hex()),
        other => other.into_relaxed_extjson(),
    }
}

fn store_error(err: mongodb::error::Error) -> StoreError {
    if let Some(code) = known_error(&err) {
        return code;
    }
    StoreError::Unavailable(format!("MongoDB: {err}"))
}

fn known_error(err: &mongodb::error::Error) -> Option<StoreError> {
    let code = match err.kind.as_ref() {
        ErrorKind::Write(WriteFailure::WriteError(e)) => e.code,
        ErrorKind::Command(e) => e.code,
        ErrorKind::InsertMany(e) => e.write_errors.as_ref()?.first()?.code,
        _ => return None,
    };
    match code {
        DUPLICATE_KEY => Some(StoreError::Conflict(format!(
            "a unique key or _id is taken: {err}"
        ))),
        MAX_TIME_EXPIRED => Some(StoreError::LimitExceeded(
            "the query ran past its time budget".into(),
        )),
        code if BAD_INPUT.contains(&code) => Some(StoreError::InvalidInput(format!(
            "MongoDB refused it: {err}"
        ))),
        _ => None,
    }
}

/// An update that gives an upserted document a string `_id` (MongoDB would
/// make an ObjectId) unless the filter names one.
fn with_string_id(query: &Query, change: &Change, upsert: bool) -> Result<Document, StoreError> {
    let mut update = to_document(&change.raw)?;
    let filter_has_id = query
        .filter
        .equalities()
        .iter()
        .any(|(path, _)| *path == "_id");
    if upsert && !filter_has_id {
        let on_insert = update
            .entry("$setOnInsert".to_string())
            .or_insert_with(|| Bson::Document(Document::new()));
        if let Bson::Document(d) = on_insert {
            d.entry("_id".to_string())
                .or_insert_with(|| Bson::String(new_id()));
        }
    }
    Ok(update)
}

fn sort_document(spec: &FindSpec) -> Result<Document, StoreError> {
    let mut sort = match &spec.sort {
        Some((raw, _)) => to_document(raw)?,
        None => Document::new(),
    };
    sort.entry("_id".to_string()).or_insert(Bson::Int32(1));
    Ok(sort)
}

#[async_trait]
impl DocumentStore for MongoStore {
    async fn insert(&self, ns: Namespace<'_>, docs: Vec<Value>) -> Result<(), StoreError> {
        let docs = docs
            .iter()
            .map(to_document)
            .collect::<Result<Vec<_>, _>>()?;
        let coll = self.collection(ns);
        if docs.len() == 1 {
            self.within(coll.insert_one(&docs[0])).await?;
            return Ok(());
        }
        let mut session = self.client.start_session().await.map_err(store_error)?;
        session.start_transaction().await.map_err(store_error)?;
        let inserted = tokio::time::timeout(
            self.budget,
            coll.insert_many(&docs).session(&mut session).into_future(),
        )
        .await;
        match inserted {
            Ok(Ok(_)) => {}
            Ok(Err(err)) => {
                let _ = session.abort_transaction().await;
                return Err(store_error(err));
            }
            Err(_) => {
                let _ = session.abort_transaction().await;
                return Err(StoreError::LimitExceeded(format!(
                    "the call ran past its time budget of {:?}",
                    self.budget
                )));
            }
        }
        session.commit_transaction().await.map_err(store_error)
    }

    async fn find(
        &self,
        ns: Namespace<'_>,
        query: &Query,
        spec: &FindSpec,
    ) -> Result<Vec<Value>, StoreError> {
        let coll = self.collection(ns);
        let mut find = coll
            .find(to_document(&query.raw)?)
            .sort(sort_document(spec)?)
            .skip(spec.skip)
            .max_time(self.budget);
        if let Some(limit) = spec.limit {
            find = find.limit(i64::try_from(limit).unwrap_or(i64::MAX));
        }
        let cursor = find.await.map_err(store_error)?;
        let docs: Vec<Document> = cursor.try_collect().await.map_err(store_error)?;
        Ok(docs
            .into_iter()
            .map(|d| to_json(Bson::Document(d)))
            .collect())
    }

    async fn update(
        &self,
        ns: Namespace<'_>,
        query: &Query,
        change: &Change,
        upsert: bool,
        multi: bool,
    ) -> Result<UpdateOutcome, StoreError> {
        let coll = self.collection(ns);
        let filter = to_document(&query.raw)?;
        let update = with_string_id(query, change, upsert)?;
        let result = if multi {
            self.within(coll.update_many(filter, update).upsert(upsert))
                .await
        } else {
            self.within(coll.update_one(filter, update).upsert(upsert))
                .await
        }?;
        Ok(UpdateOutcome {
            matched: result.matched_count,
            modified: result.modified_count,
            upserted_id: result.upserted_id.map(|id| match to_json(id) {
                Value::String(s) => s,
                other => other.to_string(),
            }),
        })
    }

    async fn replace(
        &self,
        ns: Namespace<'_>,
        query: &Query,
        replacement: Value,
        upsert: bool,
    ) -> Result<UpdateOutcome, StoreError> {
        let coll = self.collection(ns);
        let filter = to_document(&query.raw)?;
        let mut doc = to_document(&replacement)?;
        let result = self.within(coll.replace_one(filter, &doc)).await?;
        if result.matched_count > 0 || !upsert {
            return Ok(UpdateOutcome {
                matched: result.matched_count,
                modified: result.modified_count,
                upserted_id: None,
            });
        }
        // The document's own `_id`, else the filter's, else a new one; first,
        // as MongoDB keeps it.
        let from_filter = query
            .filter
            .equalities()
            .into_iter()
            .find_map(|(path, value)| (path == "_id").then(|| value.as_str()).flatten())
            .map(str::to_string);
        let id = match (doc.remove("_id"), from_filter) {
            (Some(Bson::String(own)), Some(wanted)) if own != wanted => {
                return Err(StoreError::InvalidInput(
                    "the replacement's _id differs from the filter's".into(),
                ));
            }
            (Some(Bson::String(own)), _) => own,
            (_, Some(wanted)) => wanted,
            _ => new_id(),
        };
        let mut inserted = bson::doc! { "_id": id.clone() };
        inserted.extend(doc);
        self.within(coll.insert_one(&inserted)).await?;
        Ok(UpdateOutcome {
            matched: 0,
            modified: 0,
            upserted_id: Some(id),
        })
    }

    async fn find_one_and_update(
        &self,
        ns: Namespace<'_>,
        query: &Query,
        change: &Change,
        return_new: bool,
        upsert: bool,
    ) -> Result<Option<Value>, StoreError> {
        let found = self
            .collection(ns)
            .find_one_and_update(
                to_document(&query.raw)?,
                with_string_id(query, change, upsert)?,
            )
            .upsert(upsert)
            .sort(bson::doc! { "_id": 1 })
            .return_document(if return_new {
                ReturnDocument::After
            } else {
                ReturnDocument::Before
            })
            .max_time(self.budget)
            .await
            .map_err(store_error)?;
        Ok(found.map(|d| to_json(Bson::Document(d))))
    }

    async fn delete(
        &self,
        ns: Namespace<'_>,
        query: &Query,
        multi: bool,
    ) -> Result<u64, StoreError> {
        let coll = self.collection(ns);
        let filter = to_document(&query.raw)?;
        let result = if multi {
            self.within(coll.delete_many(filter)).await
        } else {
            self.within(coll.delete_one(filter)).await
        };
        Ok(result?.deleted_count)
    }

    async fn count(&self, ns: Namespace<'_>, query: &Query) -> Result<u64, StoreError> {
        self.collection(ns)
            .count_documents(to_document(&query.raw)?)
            .max_time(self.budget)
            .await
            .map_err(store_error)
    }

    async fn create_index(
        &self,
        ns: Namespace<'_>,
        keys: &[(String, i32)],
        unique: bool,
    ) -> Result<(), StoreError> {
        let mut spec = Document::new();
        for (path, direction) in keys {
            spec.insert(path.clone(), *direction);
        }
        let options = mongodb::options::IndexOptions::builder()
            .unique(unique)
            .name(index_name(keys))
            .build();
        let model = IndexModel::builder().keys(spec).options(options).build();
        self.within(self.collection(ns).create_index(model)).await?;
        Ok(())
    }

    async fn drop_collection(&self, ns: Namespace<'_>) -> Result<(), StoreError> {
        self.collection(ns).drop().await.map_err(store_error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_app_names_keep_enough_of_their_hash_to_stay_apart() {
        let long = "a".repeat(60);
        let name = database_name(&long);
        assert!(name.len() <= 63, "{name}");
        // Same first 40 characters, different tails: different databases.
        let other = format!("{}b", "a".repeat(59));
        assert_ne!(database_name(&other), name);
        // 128 bits of SHA-256 in hex.
        assert_eq!(name.rsplit('_').next().unwrap().len(), 32);
        assert_eq!(database_name("shop"), "kiln_app_shop");
        assert_eq!(database_name(PLATFORM_DATABASE), "kiln");
    }
}
