//! `kiln:platform/database`: the app's collections in the document store.
//!
//! Every call is confined to the invoking app's database; collection names
//! are checked by [`app_namespace`]. Inputs are JSON text, refused past
//! 16 MiB before they are parsed.

use std::sync::Arc;

use serde_json::Value;
use wasmtime::component::{HasSelf, Linker};
use wasmtime_wasi::WasiCtxBuilder;

use super::bindings::kiln::platform::database::{
    self as wit, Error, FindOptions, FindPage, Host, UpdateOptions, UpdateResult,
};
use super::{
    AppManifest, Backends, Capability, CapabilityView, ConfigureError, FunctionManifest, Instances,
    Invocation, Pick, instance,
};
use crate::engine::StoreTurn;
use crate::store::query::{MAX_DOCUMENT_BYTES, parse_json};
use crate::store::{Documents, StoreError, app_namespace};

pub struct Database {
    documents: Documents,
}

impl Capability for Database {
    type App = ();
    type Configured = ();
    type Instance = DatabaseHost;

    fn init(backends: &Backends) -> Self {
        Database {
            documents: backends.documents.clone(),
        }
    }

    fn link<T: CapabilityView>(linker: &mut Linker<T>) -> wasmtime::Result<()>
    where
        Instances: Pick<Self>,
    {
        wit::add_to_linker::<T, HasSelf<DatabaseHost>>(linker, |t| instance::<Database, T>(t))
    }

    fn configure_app(&self, _: &AppManifest<'_>) -> Result<(), ConfigureError> {
        Ok(())
    }

    fn configure(&self, _: &(), _: &FunctionManifest<'_>) -> Result<(), ConfigureError> {
        Ok(())
    }

    fn prepare(&self, _: &(), invocation: &Invocation<'_>, _: &mut WasiCtxBuilder) -> DatabaseHost {
        DatabaseHost {
            documents: self.documents.clone(),
            app: invocation.app.clone(),
            request_id: invocation.request_id.clone(),
            turn: invocation.turn.clone(),
        }
    }
}

/// The database as one invocation sees it: its app's collections only.
pub struct DatabaseHost {
    documents: Documents,
    app: Arc<str>,
    request_id: Arc<str>,
    /// Given back while a call waits on the store.
    turn: StoreTurn,
}

impl DatabaseHost {
    /// Runs one call, logging and converting its failure; the guest's turn
    /// is given back while it waits.
    async fn call<T>(
        &self,
        operation: &str,
        work: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, Error> {
        self.turn
            .waiting(work)
            .await
            .map_err(|e| self.error(operation, e))
    }

    /// Logs a failure the function should not have caused, and converts.
    fn error(&self, operation: &str, err: StoreError) -> Error {
        match &err {
            StoreError::Unavailable(message) => {
                tracing::warn!(
                    request_id = %self.request_id,
                    app = %self.app,
                    operation,
                    "database unavailable: {message}"
                )
            }
            other => tracing::debug!(
                request_id = %self.request_id,
                app = %self.app,
                operation,
                "database refused a call: {other}"
            ),
        }
        err.into()
    }
}

/// Parses JSON text from the guest, refusing it past the document limit.
pub(super) fn json(what: &str, text: &str) -> Result<Value, StoreError> {
    if text.len() > MAX_DOCUMENT_BYTES {
        return Err(StoreError::LimitExceeded(format!(
            "the {what} is {} bytes; the limit is {MAX_DOCUMENT_BYTES}",
            text.len()
        )));
    }
    parse_json(text).map_err(|e| StoreError::InvalidInput(format!("{what}: {e}")))
}

fn optional_json(what: &str, text: Option<String>) -> Result<Option<Value>, StoreError> {
    text.map(|t| json(what, &t)).transpose()
}

impl Host for DatabaseHost {
    async fn insert(&mut self, collection: String, document: String) -> Result<String, Error> {
        self.call("insert", async {
            let ns = app_namespace(&self.app, &collection)?;
            let ids = self
                .documents
                .insert(ns, vec![json("document", &document)?])
                .await?;
            Ok(ids.into_iter().next().expect("one id per document"))
        })
        .await
    }

    async fn insert_many(
        &mut self,
        collection: String,
        documents: Vec<String>,
    ) -> Result<Vec<String>, Error> {
        self.call("insert-many", async {
            let ns = app_namespace(&self.app, &collection)?;
            let docs = documents
                .iter()
                .map(|d| json("document", d))
                .collect::<Result<Vec<_>, _>>()?;
            self.documents.insert(ns, docs).await
        })
        .await
    }

    async fn get(&mut self, collection: String, id: String) -> Result<Option<String>, Error> {
        self.call("get", async {
            let ns = app_namespace(&self.app, &collection)?;
            Ok(self.documents.get(ns, &id).await?.map(|d| d.to_string()))
        })
        .await
    }

    async fn find(
        &mut self,
        collection: String,
        filter: String,
        options: FindOptions,
    ) -> Result<FindPage, Error> {
        self.call("find", async {
            let ns = app_namespace(&self.app, &collection)?;
            let options = crate::store::FindOptions {
                sort: optional_json("sort", options.sort)?,
                projection: optional_json("projection", options.projection)?,
                skip: options.skip,
                limit: options.limit,
                batch_size: options.batch_size.map(u64::from),
                cursor: options.cursor,
                cursor_scope: None,
            };
            let page = self
                .documents
                .find(ns, &json("filter", &filter)?, options)
                .await?;
            Ok(FindPage {
                documents: page.documents.iter().map(Value::to_string).collect(),
                cursor: page.cursor,
            })
        })
        .await
    }

    async fn update(
        &mut self,
        collection: String,
        filter: String,
        update: String,
        options: UpdateOptions,
    ) -> Result<UpdateResult, Error> {
        self.call("update", async {
            let ns = app_namespace(&self.app, &collection)?;
            let outcome = self
                .documents
                .update(
                    ns,
                    &json("filter", &filter)?,
                    &json("update", &update)?,
                    options.upsert,
                    options.multi,
                )
                .await?;
            Ok(UpdateResult {
                matched: outcome.matched,
                modified: outcome.modified,
                upserted_id: outcome.upserted_id,
            })
        })
        .await
    }

    async fn replace(
        &mut self,
        collection: String,
        filter: String,
        document: String,
        upsert: bool,
    ) -> Result<UpdateResult, Error> {
        self.call("replace", async {
            let ns = app_namespace(&self.app, &collection)?;
            let outcome = self
                .documents
                .replace(
                    ns,
                    &json("filter", &filter)?,
                    json("document", &document)?,
                    upsert,
                )
                .await?;
            Ok(UpdateResult {
                matched: outcome.matched,
                modified: outcome.modified,
                upserted_id: outcome.upserted_id,
            })
        })
        .await
    }

    async fn find_one_and_update(
        &mut self,
        collection: String,
        filter: String,
        update: String,
        return_new: bool,
        upsert: bool,
    ) -> Result<Option<String>, Error> {
        self.call("find-one-and-update", async {
            let ns = app_namespace(&self.app, &collection)?;
            let found = self
                .documents
                .find_one_and_update(
                    ns,
                    &json("filter", &filter)?,
                    &json("update", &update)?,
                    return_new,
                    upsert,
                )
                .await?;
            Ok(found.map(|d| d.to_string()))
        })
        .await
    }

    async fn delete(
        &mut self,
        collection: String,
        filter: String,
        multi: bool,
    ) -> Result<u64, Error> {
        self.call("delete", async {
            let ns = app_namespace(&self.app, &collection)?;
            self.documents
                .delete(ns, &json("filter", &filter)?, multi)
                .await
        })
        .await
    }

    async fn count(&mut self, collection: String, filter: String) -> Result<u64, Error> {
        self.call("count", async {
            let ns = app_namespace(&self.app, &collection)?;
            self.documents.count(ns, &json("filter", &filter)?).await
        })
        .await
    }

    async fn create_index(
        &mut self,
        collection: String,
        keys: String,
        unique: bool,
    ) -> Result<(), Error> {
        self.call("create-index", async {
            let ns = app_namespace(&self.app, &collection)?;
            self.documents
                .create_index(ns, &json("index keys", &keys)?, unique)
                .await
        })
        .await
    }

    async fn drop_collection(&mut self, collection: String) -> Result<(), Error> {
        self.call("drop-collection", async {
            let ns = app_namespace(&self.app, &collection)?;
            self.documents.drop_collection(ns).await
        })
        .await
    }
}
