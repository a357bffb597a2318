//! The client data API of an app, under `/_kiln/data`: each request is the
//! caller's (from its bearer token, as for routes and files), decided by
//! the collection's rules in [`crate::capabilities::collections`].
//!
//! | method and path | does |
//! | --- | --- |
//! | `GET /COLLECTION?filter=&sort=&fields=&limit=&cursor=` | one page: `{documents, cursor}` |
//! | `GET /COLLECTION?count=true&filter=` | `{count}` |
//! | `POST /COLLECTION` | creates: 201 `{document}` |
//! | `GET /COLLECTION/ID` | the document |
//! | `PUT /COLLECTION/ID` | replaces: `{document}` |
//! | `PATCH /COLLECTION/ID` | applies update operators: `{document}` |
//! | `DELETE /COLLECTION/ID` | `{deleted: true}` |

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use http::{Method, Request, StatusCode};
use hyper::body::Incoming;
use serde_json::{Value, json};

use super::Answer;
use crate::access::Identity;
use crate::capabilities::collections::{
    AppAsker, AppCollections, Asker, Caller, Change, DataError, ListRequest,
};
use crate::invocation::App;
use crate::server::apps::Apps;
use crate::server::apps::LiveApp;
use crate::server::json_body::read_json;
use crate::store::{Documents, StoreError};
use crate::triggers::http::ask::ask;
use crate::triggers::http::{ApiError, ErrorCode, identify, json_value_response, refusal_error};

/// Largest body a client may send to the data API.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;
/// Longest query string value (a filter, a sort, a projection).
const MAX_PARAM_BYTES: usize = 16 * 1024;
/// How long a call waits for one of its app's data slots.
const SLOT_WAIT: Duration = Duration::from_secs(2);

/// Asks the app's functions through their HTTP handler.
pub struct FunctionAsker<'a> {
    pub app: &'a App,
    pub request_id: Arc<str>,
}

#[async_trait]
impl Asker for FunctionAsker<'_> {
    async fn ask(
        &self,
        function: &str,
        purpose: &'static str,
        question: Value,
        identity: Option<&Identity>,
    ) -> Result<Value, String> {
        ask(
            self.app,
            function,
            purpose,
            &question,
            identity.cloned(),
            &self.request_id,
        )
        .await
        .map_err(|e| e.to_string())
    }
}

/// The server's asker for capabilities: finds the app's live version.
pub struct LiveAsker(pub std::sync::Weak<Apps>);

#[async_trait]
impl AppAsker for LiveAsker {
    async fn ask(
        &self,
        app: &str,
        function: &str,
        purpose: &'static str,
        question: Value,
        identity: Option<&Identity>,
        request_id: &Arc<str>,
    ) -> Result<Value, String> {
        let live = self
            .0
            .upgrade()
            .and_then(|apps| apps.get(app))
            .ok_or_else(|| format!("app `{app}` is not live"))?;
        ask(
            &live.app,
            function,
            purpose,
            &question,
            identity.cloned(),
            request_id,
        )
        .await
        .map_err(|e| e.to_string())
    }
}

pub async fn handle(
    live: &LiveApp,
    documents: &Documents,
    segments: &[&str],
    req: Request<Incoming>,
    request_id: Arc<str>,
) -> Answer {
    let collections = &live.capabilities.collections;
    // One app's data calls share a bounded number of slots, so a flood of
    // them waits in its own queue.
    let _slot = tokio::time::timeout(SLOT_WAIT, collections.slots.acquire())
        .await
        .ok()
        .and_then(Result::ok)
        .ok_or_else(|| {
            ApiError::new(
                ErrorCode::Overloaded,
                format!(
                    "app `{}` has too many data calls in flight; try again",
                    live.app.name
                ),
            )
        })?;
    let identity = identify(&live.http.auth, req.headers()).await?;
    let asker = FunctionAsker {
        app: &live.app,
        request_id,
    };
    let caller = Caller::Client {
        identity: identity.as_ref(),
        asker: &asker,
    };
    serve(collections, documents, &caller, segments, req)
        .await
        .map_err(|e| data_error(&live.app.name, e))
}

/// One data call as `caller` (a client, or the admin through the admin API).
pub async fn serve(
    collections: &AppCollections,
    documents: &Documents,
    caller: &Caller<'_>,
    segments: &[&str],
    req: Request<Incoming>,
) -> Result<http::Response<crate::triggers::http::ResponseBody>, Failure> {
    let method = req.method().clone();
    match (segments, method) {
        ([name], Method::GET) => {
            let params = Params::parse(req.uri().query())?;
            let filter = params.json("filter")?.unwrap_or_else(|| json!({}));
            if params.flag("count")? {
                let count = collections.count(documents, caller, name, filter).await?;
                return Ok(json_value_response(StatusCode::OK, json!({"count": count})));
            }
            let request = ListRequest {
                filter,
                sort: params.json("sort")?,
                projection: params.json("fields")?,
                limit: params.number("limit")?,
                cursor: params.text("cursor"),
            };
            let page = collections.list(documents, caller, name, request).await?;
            Ok(json_value_response(
                StatusCode::OK,
                json!({"documents": page.documents, "cursor": page.cursor}),
            ))
        }
        ([name], Method::POST) => {
            let doc: Value = read_json(req, MAX_BODY_BYTES).await?;
            let written = collections.create(documents, caller, name, doc).await?;
            Ok(json_value_response(
                StatusCode::CREATED,
                json!({"document": written.after}),
            ))
        }
        ([name, id], Method::GET) => {
            let doc = collections.get(documents, caller, name, id).await?;
            Ok(json_value_response(StatusCode::OK, doc))
        }
        ([name, id], method @ (Method::PUT | Method::PATCH)) => {
            let body: Value = read_json(req, MAX_BODY_BYTES).await?;
            let change = match method {
                Method::PUT => Change::Replace(body),
                _ => Change::Operators(body),
            };
            let written = collections
                .update(documents, caller, name, id, &change)
                .await?;
            Ok(json_value_response(
                StatusCode::OK,
                json!({"document": written.after}),
            ))
        }
        ([name, id], Method::DELETE) => {
            let written = collections.delete(documents, caller, name, id).await?;
            Ok(json_value_response(
                StatusCode::OK,
                json!({"deleted": true, "id": written.id}),
            ))
        }
        ([_], _) => Err(method_not_allowed("GET, POST").into()),
        ([_, _], _) => Err(method_not_allowed("GET, PUT, PATCH, DELETE").into()),
        _ => Err(ApiError::new(
            ErrorCode::PlatformRouteNotFound,
            "the data API is /_kiln/data/COLLECTION[/ID]",
        )
        .into()),
    }
}

fn method_not_allowed(allow: &'static str) -> ApiError {
    ApiError::new(ErrorCode::MethodNotAllowed, format!("allowed: {allow}"))
        .with_header(http::header::ALLOW, http::HeaderValue::from_static(allow))
}

/// A data call's failure: the API's own error, or the data layer's.
pub enum Failure {
    Api(ApiError),
    Data(DataError),
}

impl From<ApiError> for Failure {
    fn from(err: ApiError) -> Self {
        Failure::Api(err)
    }
}

impl From<DataError> for Failure {
    fn from(err: DataError) -> Self {
        Failure::Data(err)
    }
}

/// The answer to a failed data call of `app`.
pub fn data_error(app: &str, failure: Failure) -> ApiError {
    let err = match failure {
        Failure::Api(err) => return err,
        Failure::Data(err) => err,
    };
    let message = err.to_string();
    let code = match err {
        DataError::Refused(refusal) => return refusal_error(app, refusal, "this collection"),
        DataError::NoCollection { .. } => ErrorCode::CollectionNotFound,
        DataError::NotFound(_) => ErrorCode::DocumentNotFound,
        DataError::NoRule { .. } | DataError::Denied(_) => {
            return ApiError::new(ErrorCode::DataAccessDenied, message);
        }
        DataError::OutOfReach => ErrorCode::WriteOutOfReach,
        DataError::HiddenField(_) => ErrorCode::HiddenField,
        DataError::NotSettable(_) => ErrorCode::FieldNotSettable,
        DataError::Required(_) => ErrorCode::RequiredField,
        DataError::InvalidId(_) => ErrorCode::InvalidDocumentId,
        DataError::HookRefused {
            status,
            code,
            message,
        } => {
            let kind = match status {
                400 => ErrorCode::WriteInvalid,
                _ => ErrorCode::WriteRefused,
            };
            return ApiError::new(kind, message).with_reason(code);
        }
        DataError::HookFailed(detail) => {
            tracing::warn!(app, "a before_write hook failed: {detail}");
            return ApiError::new(
                ErrorCode::WriteHookFailed,
                "the write hook failed, so nothing was written; the app's log has the details",
            );
        }
        DataError::Contended => ErrorCode::WriteConflict,
        DataError::Store(StoreError::InvalidInput(_)) => ErrorCode::InvalidQuery,
        DataError::Store(StoreError::LimitExceeded(_)) => ErrorCode::QueryLimitExceeded,
        DataError::Store(StoreError::Conflict(_)) => ErrorCode::DocumentExists,
        DataError::Store(StoreError::NotFound(_)) => ErrorCode::DocumentNotFound,
        DataError::Store(StoreError::Unavailable(detail)) => {
            tracing::error!(app, "the data API's store call failed: {detail}");
            return ApiError::new(
                ErrorCode::PlatformDataUnavailable,
                "the database is unavailable; try again",
            );
        }
    };
    ApiError::new(code, message)
}

/// The query parameters of a data call; a repeated or unknown one is refused.
struct Params(Vec<(String, String)>);

const KNOWN: [&str; 6] = ["filter", "sort", "fields", "limit", "cursor", "count"];

impl Params {
    fn parse(query: Option<&str>) -> Result<Params, ApiError> {
        let mut params: Vec<(String, String)> = Vec::new();
        for (name, value) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
            let bad = |m: String| ApiError::new(ErrorCode::InvalidQuery, m);
            if !KNOWN.contains(&&*name) {
                return Err(bad(format!(
                    "unknown parameter `{}` (known: {})",
                    name.escape_debug(),
                    KNOWN.join(", ")
                )));
            }
            if params.iter().any(|(n, _)| *n == name) {
                return Err(bad(format!("`{name}` is given twice")));
            }
            if value.len() > MAX_PARAM_BYTES {
                return Err(bad(format!("`{name}` is over {MAX_PARAM_BYTES} bytes")));
            }
            params.push((name.into_owned(), value.into_owned()));
        }
        Ok(Params(params))
    }

    fn text(&self, name: &str) -> Option<String> {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    }

    fn json(&self, name: &str) -> Result<Option<Value>, ApiError> {
        self.text(name)
            .map(|text| {
                let value: Value = serde_json::from_str(&text).map_err(|e| {
                    ApiError::new(
                        ErrorCode::InvalidQuery,
                        format!("`{name}` is not JSON: {e}"),
                    )
                })?;
                match value {
                    Value::Object(_) => Ok(value),
                    _ => Err(ApiError::new(
                        ErrorCode::InvalidQuery,
                        format!("`{name}` must be a JSON object"),
                    )),
                }
            })
            .transpose()
    }

    fn number(&self, name: &str) -> Result<Option<u64>, ApiError> {
        self.text(name)
            .map(|text| {
                text.parse().map_err(|_| {
                    ApiError::new(
                        ErrorCode::InvalidQuery,
                        format!("`{name}` is a whole number"),
                    )
                })
            })
            .transpose()
    }

    fn flag(&self, name: &str) -> Result<bool, ApiError> {
        match self.text(name).as_deref() {
            None | Some("false") => Ok(false),
            Some("true") => Ok(true),
            Some(_) => Err(ApiError::new(
                ErrorCode::InvalidQuery,
                format!("`{name}` is true or false"),
            )),
        }
    }
}
