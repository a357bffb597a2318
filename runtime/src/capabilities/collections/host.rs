//! `kiln:platform/collections`: a function's write through a declared
//! collection's hooks. The hooks are asked through the server's
//! [`AppAsker`], set once the server has built its apps (capabilities are
//! built first, and know nothing of triggers).

use std::sync::{Arc, OnceLock};

use async_trait::async_trait;
use serde_json::Value;

use super::AppCollections;
use super::data::{Asker, Caller, Change, DataError};
use crate::access::Identity;
use crate::capabilities::bindings::kiln::platform::collections::{DocumentChange, Host};
use crate::capabilities::bindings::kiln::platform::database::Error;
use crate::capabilities::database;
use crate::engine::StoreTurn;
use crate::store::Documents;

/// Asks a function of an app through its HTTP handler (the server's).
#[async_trait]
pub trait AppAsker: Send + Sync {
    #[allow(clippy::too_many_arguments)]
    async fn ask(
        &self,
        app: &str,
        function: &str,
        purpose: &'static str,
        question: Value,
        identity: Option<&Identity>,
        request_id: &Arc<str>,
    ) -> Result<Value, String>;
}

/// The server's asker, set once at start.
#[derive(Default)]
pub struct Askers(OnceLock<Arc<dyn AppAsker>>);

impl Askers {
    pub fn set(&self, asker: Arc<dyn AppAsker>) {
        let _ = self.0.set(asker);
    }
}

/// One invocation's asker: its app and request id.
struct BoundAsker {
    askers: Arc<Askers>,
    app: Arc<str>,
    request_id: Arc<str>,
}

#[async_trait]
impl Asker for BoundAsker {
    async fn ask(
        &self,
        function: &str,
        purpose: &'static str,
        question: Value,
        identity: Option<&Identity>,
    ) -> Result<Value, String> {
        let asker = self.askers.0.get().ok_or("the server is starting")?;
        asker
            .ask(
                &self.app,
                function,
                purpose,
                question,
                identity,
                &self.request_id,
            )
            .await
    }
}

/// The interface as one invocation sees it.
pub struct CollectionsHost {
    collections: Arc<AppCollections>,
    documents: Documents,
    asker: BoundAsker,
    /// Set when the invocation is itself a hook or a rule: it may not call hooks.
    in_hook: bool,
    /// Given back while a write waits on the store and the hooks.
    turn: StoreTurn,
}

impl CollectionsHost {
    pub fn new(
        collections: Arc<AppCollections>,
        documents: Documents,
        askers: Arc<Askers>,
        request_id: Arc<str>,
        in_hook: bool,
        turn: StoreTurn,
    ) -> Self {
        CollectionsHost {
            asker: BoundAsker {
                askers,
                app: collections.app.clone(),
                request_id,
            },
            collections,
            documents,
            in_hook,
            turn,
        }
    }
}

/// A guest's JSON argument, as the database interface parses it.
fn json(what: &str, text: &str) -> Result<Value, Error> {
    database::json(what, text).map_err(Error::from)
}

fn error(err: DataError) -> Error {
    let message = err.to_string();
    match err {
        DataError::NotFound(_) | DataError::NoCollection { .. } => Error::NotFound(message),
        DataError::HookRefused {
            status: 400,
            code,
            message,
        } => Error::InvalidInput(format!("{code}: {message}")),
        DataError::HookRefused { code, message, .. } => {
            Error::PermissionDenied(format!("{code}: {message}"))
        }
        DataError::Contended => Error::Conflict(message),
        DataError::HookFailed(_) => Error::Unavailable(message),
        DataError::Store(store) => store.into(),
        DataError::InvalidId(_)
        | DataError::Required(_)
        | DataError::HiddenField(_)
        | DataError::NotSettable(_) => Error::InvalidInput(message),
        _ => Error::PermissionDenied(message),
    }
}

impl Host for CollectionsHost {
    async fn write_with_hooks(
        &mut self,
        collection: String,
        id: Option<String>,
        change: DocumentChange,
    ) -> Result<Option<String>, Error> {
        if self.in_hook {
            return Err(Error::PermissionDenied(
                "a hook's or rule's own writes call no hooks (write through kiln:platform/database)".into(),
            ));
        }
        let caller = Caller::Function { asker: &self.asker };
        let (collections, documents) = (&self.collections, &self.documents);
        let need_id = || {
            id.clone().ok_or_else(|| {
                Error::InvalidInput("an update, replace or delete names its document's id".into())
            })
        };
        /// The write, parsed before anything waits.
        enum Write {
            Create(Value),
            Change(String, Change),
            Delete(String),
        }
        let write = match change {
            DocumentChange::Create(text) => {
                let mut doc = json("document", &text)?;
                if let (Some(id), Value::Object(map)) = (&id, &mut doc) {
                    map.insert("_id".into(), Value::from(id.clone()));
                }
                Write::Create(doc)
            }
            DocumentChange::Update(text) => {
                Write::Change(need_id()?, Change::Operators(json("update", &text)?))
            }
            DocumentChange::Replace(text) => {
                Write::Change(need_id()?, Change::Replace(json("document", &text)?))
            }
            DocumentChange::Delete => Write::Delete(need_id()?),
        };
        let written = self
            .turn
            .waiting(async {
                match &write {
                    Write::Create(doc) => {
                        collections
                            .create(documents, &caller, &collection, doc.clone())
                            .await
                    }
                    Write::Change(id, change) => {
                        collections
                            .update(documents, &caller, &collection, id, change)
                            .await
                    }
                    Write::Delete(id) => {
                        collections
                            .delete(documents, &caller, &collection, id)
                            .await
                    }
                }
            })
            .await
            .map_err(error)?;
        Ok(written.after.map(|doc| doc.to_string()))
    }
}
