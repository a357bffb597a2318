//! The client data API's decisions and store calls, free of HTTP: every
//! read has the caller's rule merged into its filter (so the store, with
//! its indexes, does the filtering), every write is checked against the
//! rule on the document before and after, and committed only if the
//! document is still what was checked.

use std::borrow::Cow;

use async_trait::async_trait;
use serde_json::{Value, json};

use super::AppCollections;
use super::fields;
use super::manifest::{Action, Collection};
use crate::access::{Decision, Identity, Refusal};
use crate::store::platform::jobs::{self, HOOK_INTENT_MS, HookJob, Job, JobStatus};
use crate::store::platform::now_ms;
use crate::store::query::{Budget, Filter, Update, new_id};
use crate::store::{
    Documents, FindOptions, FindPage, Namespace, StoreError, Written, app_namespace,
};

/// Most documents one page of a list returns.
pub const MAX_PAGE: u64 = 1000;
/// A page's size when the client gives none.
pub const DEFAULT_PAGE: u64 = 100;
/// Times a write is tried again when another write changed its document
/// between the check and the commit.
const SWAP_TRIES: usize = 3;
/// How long a client's list or count may run; past it the store's work is
/// cancelled (the store's own budget is longer, for functions).
pub const QUERY_DEADLINE: std::time::Duration = std::time::Duration::from_secs(5);
/// How long an in-memory rule check of one document may run.
const CHECK_BUDGET: std::time::Duration = std::time::Duration::from_millis(100);

/// Asks one of the app's functions (a `function:` rule, a `before_write`
/// hook) through its HTTP handler; given by the server, which owns triggers.
#[async_trait]
pub trait Asker: Send + Sync {
    async fn ask(
        &self,
        function: &str,
        purpose: &'static str,
        question: Value,
        identity: Option<&Identity>,
    ) -> Result<Value, String>;
}

/// Who calls: a client under the rules; a function writing through the
/// hooks (rules and fields pass); or the admin (rules, fields and hooks pass).
pub enum Caller<'a> {
    Client {
        identity: Option<&'a Identity>,
        asker: &'a dyn Asker,
    },
    Function {
        asker: &'a dyn Asker,
    },
    Admin,
}

impl Caller<'_> {
    /// Who asks the app's functions (hooks), if hooks run for this caller.
    fn hooks(&self) -> Option<(&dyn Asker, Option<&Identity>)> {
        match self {
            Caller::Client { identity, asker } => Some((*asker, *identity)),
            Caller::Function { asker } => Some((*asker, None)),
            Caller::Admin => None,
        }
    }
}

/// Why a data call failed.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("app `{app}` has no collection `{name}` open to clients")]
    NoCollection { app: String, name: String },
    #[error("no document `{0}`")]
    NotFound(String),
    #[error("{0:?}")]
    Refused(Refusal),
    #[error("collection `{collection}` lets no client {action}")]
    NoRule {
        collection: String,
        action: &'static str,
    },
    #[error("{0}")]
    Denied(String),
    #[error("the write would leave the document outside what you may update")]
    OutOfReach,
    #[error("field `{0}` is hidden from clients")]
    HiddenField(String),
    #[error("field `{0}` is set by the server, not by clients")]
    NotSettable(String),
    #[error("field `{0}` is required")]
    Required(String),
    #[error("{0}")]
    InvalidId(String),
    #[error("the write hook refused: {message}")]
    HookRefused {
        status: u16,
        code: String,
        message: String,
    },
    #[error("the write hook failed, so nothing was written: {0}")]
    HookFailed(String),
    #[error("the document kept changing while it was written; try again")]
    Contended,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A list's options, as a client gives them.
#[derive(Debug, Default)]
pub struct ListRequest {
    pub filter: Value,
    pub sort: Option<Value>,
    pub projection: Option<Value>,
    pub limit: Option<u64>,
    pub cursor: Option<String>,
}

/// A write a client asks for on one document.
pub enum Change {
    /// Update operators (`$set`, `$inc`, ...).
    Operators(Value),
    /// A whole new document (server-set fields carried over).
    Replace(Value),
}

fn check_id(id: &str) -> Result<(), DataError> {
    let valid = !id.is_empty()
        && id.len() <= 64
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    match valid {
        true => Ok(()),
        false => Err(DataError::InvalidId(format!(
            "`{}` is not a document id: 1 to 64 of A-Z, a-z, 0-9, `_`, `-`",
            id.escape_debug()
        ))),
    }
}

fn matches(filter: &Value, doc: &Value) -> Result<bool, DataError> {
    let parsed = Filter::parse(filter).map_err(StoreError::from)?;
    Ok(parsed
        .matches(doc, &Budget::of(CHECK_BUDGET))
        .map_err(StoreError::from)?)
}

fn user_json(identity: Option<&Identity>) -> Value {
    identity.map_or(
        Value::Null,
        |i| json!({"id": i.user, "roles": i.roles, "mfa": i.mfa}),
    )
}

impl AppCollections {
    /// The declared collection; the admin also reaches undeclared ones.
    fn collection<'n>(
        &'n self,
        caller: &Caller<'_>,
        name: &'n str,
    ) -> Result<(Cow<'n, Collection>, Namespace<'n>), DataError> {
        let missing = || DataError::NoCollection {
            app: self.app.to_string(),
            name: name.escape_debug().to_string(),
        };
        let collection = match (self.collections.get(name), caller) {
            (Some(collection), _) => Cow::Borrowed(collection),
            (None, Caller::Admin) => Cow::Owned(Collection::undeclared(name)),
            (None, _) => return Err(missing()),
        };
        let ns = app_namespace(&self.app, name).map_err(|e| match caller {
            Caller::Admin => DataError::Store(e),
            _ => missing(),
        })?;
        Ok((collection, ns))
    }

    /// What the caller's rule for `action` requires of documents: nothing
    /// (`None`), or a filter. `doc` and `new` are told to a `function:` rule.
    async fn requirement(
        &self,
        caller: &Caller<'_>,
        collection: &Collection,
        action: Action,
        question: Value,
        new: Option<&Value>,
    ) -> Result<Option<Value>, DataError> {
        let Caller::Client { identity, asker } = caller else {
            return Ok(None);
        };
        let rule = collection.rule(action).ok_or_else(|| DataError::NoRule {
            collection: collection.name.clone(),
            action: action.name(),
        })?;
        match rule.decide(*identity, new).map_err(DataError::Refused)? {
            Decision::Allowed => Ok(None),
            Decision::IfMatches(filter) => Ok(Some(filter)),
            Decision::IfFunctionAgrees(function) => {
                let mut question = question;
                question["action"] = json!(action.name());
                question["collection"] = json!(collection.name);
                question["user"] = user_json(*identity);
                let answer = asker
                    .ask(function, "collection-rule", question, *identity)
                    .await
                    .map_err(DataError::Denied)?;
                match answer.get("allow") == Some(&Value::Bool(true)) {
                    true => Ok(None),
                    false => Err(DataError::Denied(format!(
                        "function `{function}` did not allow it"
                    ))),
                }
            }
            // Collections parse no `owner` rules; fail closed.
            Decision::IfOwner => Err(DataError::Denied("no owner rule on collections".into())),
        }
    }

    fn hidden<'c>(caller: &Caller<'_>, collection: &'c Collection) -> &'c [String] {
        match caller {
            Caller::Client { .. } => &collection.hidden,
            _ => &[],
        }
    }

    /// One page of the documents the caller may list.
    pub async fn list(
        &self,
        documents: &Documents,
        caller: &Caller<'_>,
        name: &str,
        request: ListRequest,
    ) -> Result<FindPage, DataError> {
        let (collection, ns) = self.collection(caller, name)?;
        let collection = &*collection;
        let hidden = Self::hidden(caller, collection);
        if let Some(field) = fields::named_hidden(
            &request.filter,
            request.sort.as_ref(),
            request.projection.as_ref(),
            hidden,
        ) {
            return Err(DataError::HiddenField(field.to_string()));
        }
        let question = json!({"filter": request.filter});
        let rule = self
            .requirement(caller, collection, Action::List, question, None)
            .await?;
        let scope = format!("{}|{}", request.filter, identity_of(caller));
        let filter = merged(request.filter, rule);
        let limit = request.limit.unwrap_or(DEFAULT_PAGE);
        if limit == 0 || limit > MAX_PAGE {
            return Err(
                StoreError::InvalidInput(format!("limit is between 1 and {MAX_PAGE}")).into(),
            );
        }
        let mut page = bounded(documents.find(
            ns,
            &filter,
            FindOptions {
                sort: request.sort,
                projection: request.projection,
                batch_size: Some(limit),
                cursor: request.cursor,
                cursor_scope: Some(scope),
                ..FindOptions::default()
            },
        ))
        .await?;
        page.documents
            .iter_mut()
            .for_each(|doc| fields::strip(doc, hidden));
        Ok(page)
    }

    /// How many documents the caller may list match `filter`.
    pub async fn count(
        &self,
        documents: &Documents,
        caller: &Caller<'_>,
        name: &str,
        filter: Value,
    ) -> Result<u64, DataError> {
        let (collection, ns) = self.collection(caller, name)?;
        let collection = &*collection;
        if let Some(field) =
            fields::named_hidden(&filter, None, None, Self::hidden(caller, collection))
        {
            return Err(DataError::HiddenField(field.to_string()));
        }
        let question = json!({"filter": filter});
        let rule = self
            .requirement(caller, collection, Action::List, question, None)
            .await?;
        bounded(documents.count(ns, &merged(filter, rule))).await
    }

    /// The document, if the caller may get it; a refused one is as missing.
    pub async fn get(
        &self,
        documents: &Documents,
        caller: &Caller<'_>,
        name: &str,
        id: &str,
    ) -> Result<Value, DataError> {
        let (collection, ns) = self.collection(caller, name)?;
        let collection = &*collection;
        check_id(id)?;
        let mut doc = self
            .visible(documents, caller, collection, ns, Action::Get, id)
            .await?;
        fields::strip(&mut doc, Self::hidden(caller, collection));
        Ok(doc)
    }

    /// The stored document if the caller's rule for `action` reaches it.
    async fn visible(
        &self,
        documents: &Documents,
        caller: &Caller<'_>,
        collection: &Collection,
        ns: Namespace<'_>,
        action: Action,
        id: &str,
    ) -> Result<Value, DataError> {
        let not_found = || DataError::NotFound(id.to_string());
        let needs_document = matches!(caller, Caller::Client { .. })
            && collection
                .rule(action)
                .is_some_and(|r| r.function().is_some());
        let rule = match needs_document {
            // A function rule is told the document, so read it first.
            true => {
                let doc = documents.get(ns, id).await?.ok_or_else(not_found)?;
                let question = json!({"id": id, "document": doc});
                self.requirement(caller, collection, action, question, None)
                    .await
                    .map_err(|e| hide_refusal(e, id))?;
                return Ok(doc);
            }
            false => {
                self.requirement(caller, collection, action, json!({}), None)
                    .await?
            }
        };
        let filter = merged(json!({"_id": id}), rule);
        let page = documents
            .find(
                ns,
                &filter,
                FindOptions {
                    limit: Some(1),
                    ..FindOptions::default()
                },
            )
            .await?;
        page.documents.into_iter().next().ok_or_else(not_found)
    }

    /// Creates a document; `Written` tells what the write did.
    pub async fn create(
        &self,
        documents: &Documents,
        caller: &Caller<'_>,
        name: &str,
        mut doc: Value,
    ) -> Result<Written, DataError> {
        let (collection, ns) = self.collection(caller, name)?;
        let collection = &*collection;
        if !doc.is_object() {
            return Err(StoreError::InvalidInput("a document must be a JSON object".into()).into());
        }
        let id = match doc.get("_id") {
            Some(Value::String(id)) => id.clone(),
            Some(_) => return Err(DataError::InvalidId("_id is a string".into())),
            None => new_id(),
        };
        check_id(&id)?;
        doc.as_object_mut()
            .expect("checked: an object")
            .shift_insert(0, "_id".into(), Value::from(id.clone()));
        let identity = self.protect(caller, collection, &doc)?;
        if let Caller::Client { .. } = caller {
            fields::fill(&mut doc, &collection.on_create, identity, now_millis());
        }
        let doc = self
            .before_write(caller, collection, Action::Create, &id, None, doc)
            .await?;
        self.check_required(caller, collection, &doc)?;
        let question = json!({"id": id, "new": doc});
        if let Some(filter) = self
            .requirement(caller, collection, Action::Create, question, Some(&doc))
            .await?
            && !matches(&filter, &doc)?
        {
            return Err(DataError::Denied(format!(
                "the document is not one you may create in `{name}`"
            )));
        }
        let written = self
            .commit(documents, caller, collection, ns, &id, None, Some(doc))
            .await?
            .ok_or(DataError::Contended)?;
        Ok(self.answer(caller, collection, written))
    }

    /// Updates or replaces a document the caller may update.
    pub async fn update(
        &self,
        documents: &Documents,
        caller: &Caller<'_>,
        name: &str,
        id: &str,
        change: &Change,
    ) -> Result<Written, DataError> {
        let (collection, ns) = self.collection(caller, name)?;
        let collection = &*collection;
        check_id(id)?;
        enum Parsed<'v> {
            Operators(Update),
            Replace(&'v Value),
        }
        let parsed = match change {
            Change::Operators(ops) => {
                Parsed::Operators(Update::parse(ops).map_err(StoreError::from)?)
            }
            Change::Replace(doc) => {
                if !doc.is_object() {
                    return Err(StoreError::InvalidInput(
                        "a document must be a JSON object".into(),
                    )
                    .into());
                }
                self.protect(caller, collection, doc)?;
                Parsed::Replace(doc)
            }
        };
        for _ in 0..SWAP_TRIES {
            let before = documents
                .get(ns, id)
                .await?
                .ok_or_else(|| DataError::NotFound(id.to_string()))?;
            let mut after = match &parsed {
                Parsed::Operators(update) => {
                    let mut after = before.clone();
                    update
                        .apply(&mut after, false, now_millis(), &Budget::of(CHECK_BUDGET))
                        .map_err(StoreError::from)?;
                    after
                }
                Parsed::Replace(doc) => {
                    let mut after = (*doc).clone();
                    if let Value::Object(map) = &mut after {
                        map.shift_insert(0, "_id".into(), Value::from(id));
                    }
                    fields::carry(&before, &mut after, &self.protected(caller, collection));
                    after
                }
            };
            if let Caller::Client { identity, .. } = caller {
                if let Some(field) =
                    fields::changed_protected(&before, &after, &self.protected(caller, collection))
                {
                    return Err(DataError::NotSettable(field.to_string()));
                }
                fields::fill(&mut after, &collection.on_update, *identity, now_millis());
            }
            if after.get("_id") != Some(&Value::from(id)) {
                return Err(StoreError::InvalidInput("_id cannot change".into()).into());
            }
            self.reach(
                caller,
                collection,
                Action::Update,
                id,
                &before,
                Some(&after),
            )
            .await?;
            let hooked = self
                .before_write(
                    caller,
                    collection,
                    Action::Update,
                    id,
                    Some(&before),
                    after.clone(),
                )
                .await?;
            self.check_required(caller, collection, &hooked)?;
            if hooked != after {
                // The rule again on the document as the hook left it.
                self.reach(
                    caller,
                    collection,
                    Action::Update,
                    id,
                    &before,
                    Some(&hooked),
                )
                .await?;
            }
            let after = hooked;
            if let Some(written) = self
                .commit(
                    documents,
                    caller,
                    collection,
                    ns,
                    id,
                    Some(before),
                    Some(after),
                )
                .await?
            {
                return Ok(self.answer(caller, collection, written));
            }
        }
        Err(DataError::Contended)
    }

    /// Deletes a document the caller may delete.
    pub async fn delete(
        &self,
        documents: &Documents,
        caller: &Caller<'_>,
        name: &str,
        id: &str,
    ) -> Result<Written, DataError> {
        let (collection, ns) = self.collection(caller, name)?;
        let collection = &*collection;
        check_id(id)?;
        for _ in 0..SWAP_TRIES {
            let before = documents
                .get(ns, id)
                .await?
                .ok_or_else(|| DataError::NotFound(id.to_string()))?;
            self.reach(caller, collection, Action::Delete, id, &before, None)
                .await?;
            // A before hook may refuse a delete; what it proposes is ignored.
            self.before_write(
                caller,
                collection,
                Action::Delete,
                id,
                Some(&before),
                Value::Null,
            )
            .await?;
            if let Some(written) = self
                .commit(documents, caller, collection, ns, id, Some(before), None)
                .await?
            {
                return Ok(self.answer(caller, collection, written));
            }
        }
        Err(DataError::Contended)
    }

    /// Checks the caller's rule for `action` on the stored document, and on
    /// the document as the write leaves it. Not reaching the stored one is
    /// as if it did not exist.
    async fn reach(
        &self,
        caller: &Caller<'_>,
        collection: &Collection,
        action: Action,
        id: &str,
        before: &Value,
        after: Option<&Value>,
    ) -> Result<(), DataError> {
        let question = json!({"id": id, "document": before, "new": after});
        let Some(filter) = self
            .requirement(caller, collection, action, question, after)
            .await
            .map_err(|e| hide_refusal(e, id))?
        else {
            return Ok(());
        };
        if !matches(&filter, before)? {
            return Err(DataError::NotFound(id.to_string()));
        }
        match after {
            Some(after) if !matches(&filter, after)? => Err(DataError::OutOfReach),
            _ => Ok(()),
        }
    }

    /// The paths a client cannot set.
    fn protected(&self, caller: &Caller<'_>, collection: &Collection) -> Vec<String> {
        match caller {
            Caller::Admin | Caller::Function { .. } => Vec::new(),
            Caller::Client { .. } => collection
                .hidden
                .iter()
                .chain(&collection.server_set)
                .cloned()
                .collect(),
        }
    }

    /// Refuses a client's document that sets a protected path; returns the
    /// client's identity.
    fn protect<'c>(
        &self,
        caller: &Caller<'c>,
        collection: &Collection,
        doc: &Value,
    ) -> Result<Option<&'c Identity>, DataError> {
        match caller {
            Caller::Admin | Caller::Function { .. } => Ok(None),
            Caller::Client { identity, .. } => {
                if let Some(field) = fields::set_protected(doc, &self.protected(caller, collection))
                {
                    return Err(DataError::NotSettable(field.to_string()));
                }
                Ok(*identity)
            }
        }
    }

    fn check_required(
        &self,
        caller: &Caller<'_>,
        collection: &Collection,
        doc: &Value,
    ) -> Result<(), DataError> {
        match (caller, fields::missing_required(doc, &collection.required)) {
            (Caller::Client { .. }, Some(field)) => Err(DataError::Required(field.to_string())),
            _ => Ok(()),
        }
    }

    /// Runs the collection's `before_write` hook (clients' writes only): it
    /// may change the proposed document or refuse the write.
    async fn before_write(
        &self,
        caller: &Caller<'_>,
        collection: &Collection,
        action: Action,
        id: &str,
        before: Option<&Value>,
        proposed: Value,
    ) -> Result<Value, DataError> {
        let (Some((asker, identity)), Some(function)) = (caller.hooks(), &collection.before_write)
        else {
            return Ok(proposed);
        };
        let question = json!({
            "collection": collection.name, "action": action.name(), "id": id,
            "before": before, "document": proposed, "user": user_json(identity),
        });
        let answer = asker
            .ask(function, "before-write", question, identity)
            .await
            .map_err(DataError::HookFailed)?;
        if let Some(refusal) = answer.get("refuse") {
            let status = match refusal.get("status").and_then(Value::as_u64) {
                Some(400) => 400,
                _ => 403,
            };
            let text = |key: &str, default: &str| {
                refusal
                    .get(key)
                    .and_then(Value::as_str)
                    .unwrap_or(default)
                    .chars()
                    .take(500)
                    .collect::<String>()
            };
            return Err(DataError::HookRefused {
                status,
                code: text("code", "refused"),
                message: text("message", "the write was refused"),
            });
        }
        if action == Action::Delete {
            return Ok(proposed);
        }
        match answer.get("document") {
            None | Some(Value::Null) => Ok(proposed),
            Some(changed @ Value::Object(_)) => {
                let mut changed = changed.clone();
                if let Value::Object(map) = &mut changed {
                    map.shift_insert(0, "_id".into(), Value::from(id));
                }
                Ok(changed)
            }
            Some(_) => Err(DataError::HookFailed(format!(
                "function `{function}` answered a `document` that is not an object"
            ))),
        }
    }

    /// Commits the write if the document is still `before`, with the
    /// `after_write` hook's job written first (clients' writes only).
    #[allow(clippy::too_many_arguments)]
    async fn commit(
        &self,
        documents: &Documents,
        caller: &Caller<'_>,
        collection: &Collection,
        ns: Namespace<'_>,
        id: &str,
        before: Option<Value>,
        after: Option<Value>,
    ) -> Result<Option<Written>, DataError> {
        let hook = match (caller.hooks(), &collection.after_write) {
            (Some((_, identity)), Some(function)) => {
                let now = now_ms();
                let event = json!({
                    "collection": collection.name, "id": id,
                    "action": match (&before, &after) {
                        (None, _) => "create", (_, None) => "delete", _ => "update",
                    },
                    "before": before, "after": after, "user": user_json(identity),
                });
                let job = Job {
                    id: new_id(),
                    app: self.app.to_string(),
                    function: function.clone(),
                    due_ms: now + HOOK_INTENT_MS,
                    payload: event.to_string(),
                    status: JobStatus::Pending,
                    created_ms: now,
                    created_by: format!("after_write:{}", collection.name),
                    node: None,
                    started_ms: None,
                    ended_ms: None,
                    error: None,
                    hook: Some(HookJob {
                        collection: collection.name.clone(),
                        document: id.to_string(),
                        attempt: 1,
                        retries: collection.retries,
                        backoff_ms: collection.retry_backoff.as_millis() as u64,
                    }),
                };
                jobs::insert(documents, &job).await?;
                Some(job.id)
            }
            _ => None,
        };
        let written = documents.swap(ns, id, before, after).await;
        if let Some(job) = hook {
            let settled = match &written {
                Ok(Some(_)) => jobs::release(documents, &job).await,
                _ => jobs::withdraw(documents, &job).await,
            };
            if let Err(err) = settled {
                // The job still runs, late, after checking the write.
                tracing::warn!(app = %self.app, job, "cannot settle an after_write job: {err}");
            }
        }
        Ok(written?)
    }

    /// What the caller is answered: hidden fields stripped.
    fn answer(
        &self,
        caller: &Caller<'_>,
        collection: &Collection,
        mut written: Written,
    ) -> Written {
        let hidden = Self::hidden(caller, collection);
        for doc in [&mut written.before, &mut written.after]
            .into_iter()
            .flatten()
        {
            fields::strip(doc, hidden);
        }
        written
    }
}

/// A refusal of a document as if the document were missing, so rules
/// reveal nothing of what exists.
fn hide_refusal(err: DataError, id: &str) -> DataError {
    match err {
        DataError::Denied(_) => DataError::NotFound(id.to_string()),
        other => other,
    }
}

/// A store call cut at [`QUERY_DEADLINE`]; dropping it cancels its work.
async fn bounded<T>(call: impl Future<Output = Result<T, StoreError>>) -> Result<T, DataError> {
    match tokio::time::timeout(QUERY_DEADLINE, call).await {
        Ok(result) => Ok(result?),
        Err(_) => Err(DataError::Store(StoreError::LimitExceeded(format!(
            "the query ran past {QUERY_DEADLINE:?}; narrow the filter or use an index"
        )))),
    }
}

/// The client's filter and the rule's, both required.
fn merged(filter: Value, rule: Option<Value>) -> Value {
    match rule {
        None => filter,
        Some(rule) => json!({"$and": [filter, rule]}),
    }
}

fn identity_of(caller: &Caller<'_>) -> String {
    match caller {
        Caller::Admin | Caller::Function { .. } => "trusted".into(),
        Caller::Client { identity, .. } => identity.map_or(String::new(), |i| i.user.clone()),
    }
}

fn now_millis() -> i64 {
    chrono::Utc::now().timestamp_millis()
}
