//! The admin API under `/admin/v1`, behind the admin key (bearer token).
//!
//! | method and path | does |
//! | --- | --- |
//! | `HEAD /admin/v1/components/{digest}` | 200 when stored, 404 when not |
//! | `PUT /admin/v1/components/{digest}` | stores a component (body: the `.wasm`) |
//! | `POST /admin/v1/apps/{app}/deployments` | deploys `{"manifest": toml, "components": {function: digest}}` |
//! | `GET /admin/v1/apps` | every app and its live version |
//! | `GET /admin/v1/apps/{app}/deployments` | every stored version of the app |
//! | `POST /admin/v1/apps/{app}/rollback` | switches to `{"version": n}` |
//! | `GET /admin/v1/apps/{app}/crons` | the live cron triggers and their next occurrences |
//! | `POST /admin/v1/apps/{app}/crons/{trigger}/run` | runs a trigger now (202) |
//! | `GET /admin/v1/apps/{app}/runs?trigger=&status=&limit=` | the run history, newest first |
//! | `GET /admin/v1/apps/{app}/users?search=&after=&limit=` | users by id; `search`: an email prefix |
//! | `GET /admin/v1/apps/{app}/users/{id}` | one user |
//! | `DELETE /admin/v1/apps/{app}/users/{id}` | deletes the user and their sessions |
//! | `POST /admin/v1/apps/{app}/users/{id}/disable` | disables the user; every session ends |
//! | `POST /admin/v1/apps/{app}/users/{id}/enable` | enables the user again |
//! | `PUT /admin/v1/apps/{app}/users/{id}/roles` | replaces the roles: `{"roles": [...]}` |
//! | `GET /admin/v1/apps/{app}/users/{id}/sessions` | the user's sessions |
//! | `DELETE /admin/v1/apps/{app}/users/{id}/sessions` | revokes them all |
//! | `DELETE /admin/v1/apps/{app}/users/{id}/sessions/{session}` | revokes one |
//! | `POST /admin/v1/apps/{app}/auth/keys/rotate` | a new signing key; the old ones verify until their tokens expire |
//! | `GET /admin/v1/apps/{app}/files?prefix=&cursor=&limit=` | the app's files in key order (a bucket: `prefix=BUCKET/`) |
//! | `DELETE /admin/v1/apps/{app}/files/{key}` | deletes a file (the key percent-encoded as in the client endpoints) |
//! | `GET /admin/v1/apps/{app}/storage` | files and bytes the app stores |
//! | `GET, POST /admin/v1/apps/{app}/data/{collection}` | lists (as the data API) or creates a document, rules passed |
//! | `GET, PUT, PATCH, DELETE /admin/v1/apps/{app}/data/{collection}/{id}` | one document, rules passed |

use std::collections::BTreeMap;
use std::sync::Arc;

use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use serde::Deserialize;
use serde_json::{Value, json};

use super::apps::{Apps, DeployError};
use super::artifacts::{ArtifactError, digest_of, is_valid_digest};
use super::platform::data;
use super::platform::files::storage_error;
use crate::capabilities::auth::AuthError;
use crate::capabilities::auth::accounts::{session_json, user_json};
use crate::capabilities::collections::Caller;
use crate::capabilities::storage::MAX_PAGE;
use crate::engine::EngineError;
use crate::invocation::LoadError;
use crate::store::StoreError;
use crate::store::platform::deployments::DeploymentRecord;
use crate::store::platform::runs::{self, RunFilter};
use crate::store::platform::users::UserRecord;
use crate::triggers::cron::CronRunner;
use crate::triggers::http::{ApiError, ErrorCode, ResponseBody, json_value_response};

/// Largest component upload.
const MAX_COMPONENT_BYTES: usize = 512 * 1024 * 1024;
/// Largest JSON body of the other calls.
const MAX_JSON_BYTES: usize = 4 * 1024 * 1024;

type Answer = Result<Response<ResponseBody>, ApiError>;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DeployRequest {
    manifest: String,
    components: BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RollbackRequest {
    version: u64,
}

/// Handles a request whose path starts with `/admin/`.
pub async fn handle(
    apps: &Apps,
    cron: &Arc<CronRunner>,
    admin_key: &str,
    req: Request<Incoming>,
) -> Answer {
    if !authorized(&req, admin_key) {
        return Err(ApiError::new(
            ErrorCode::Unauthorized,
            "the admin API needs `Authorization: Bearer <admin key>`",
        ));
    }
    let path = req.uri().path().to_string();
    let segments: Vec<&str> = path.trim_end_matches('/').split('/').skip(1).collect();
    let method = req.method().clone();
    match (&method, segments.as_slice()) {
        (&Method::HEAD, ["admin", "v1", "components", digest]) => {
            match apps.artifacts().has_component(digest).await {
                Ok(true) => ok(StatusCode::OK, json!({})),
                Ok(false) => Err(ApiError::new(
                    ErrorCode::ComponentNotFound,
                    format!("no component {digest}"),
                )),
                Err(err) => Err(err.into()),
            }
        }
        (&Method::PUT, ["admin", "v1", "components", digest]) => upload(apps, digest, req).await,
        (&Method::POST, ["admin", "v1", "apps", app, "deployments"]) => {
            let body: DeployRequest = read_json(req).await?;
            let record = apps.deploy(app, body.manifest, body.components).await?;
            ok(StatusCode::CREATED, summary(&record))
        }
        (&Method::GET, ["admin", "v1", "apps"]) => {
            let apps: Vec<Value> = apps
                .list()
                .into_iter()
                .map(|(app, version)| json!({ "app": app, "version": version }))
                .collect();
            ok(StatusCode::OK, json!({ "apps": apps }))
        }
        (&Method::GET, ["admin", "v1", "apps", app, "deployments"]) => {
            list_versions(apps, app).await
        }
        (&Method::POST, ["admin", "v1", "apps", app, "rollback"]) => {
            let body: RollbackRequest = read_json(req).await?;
            let record = apps.rollback(app, body.version).await?;
            ok(StatusCode::OK, summary(&record))
        }
        (&Method::GET, ["admin", "v1", "apps", app, "crons"]) => list_crons(apps, app),
        (&Method::POST, ["admin", "v1", "apps", app, "crons", trigger, "run"]) => {
            match cron.run_now(app, trigger) {
                Ok(scheduled_ms) => ok(
                    StatusCode::ACCEPTED,
                    json!({ "app": app, "trigger": trigger, "scheduled_ms": scheduled_ms }),
                ),
                Err(err) => Err(ApiError::new(ErrorCode::TriggerNotFound, err.to_string())),
            }
        }
        (&Method::GET, ["admin", "v1", "apps", app, "runs"]) => {
            list_runs(cron, app, req.uri().query().unwrap_or("")).await
        }
        (&Method::GET, ["admin", "v1", "apps", app, "files"]) => {
            live(apps, app)?;
            list_files(apps, app, req.uri().query().unwrap_or("")).await
        }
        (&Method::DELETE, ["admin", "v1", "apps", app, "files", _, ..]) => {
            live(apps, app)?;
            let prefix = format!("/admin/v1/apps/{app}/files/");
            let encoded = req.uri().path().strip_prefix(&prefix).unwrap_or("");
            let key = percent_encoding::percent_decode_str(encoded)
                .decode_utf8()
                .map_err(|_| ApiError::new(ErrorCode::InvalidFileKey, "the key is not UTF-8"))?;
            match apps
                .files()
                .delete(app, &key)
                .await
                .map_err(storage_error)?
            {
                true => ok(
                    StatusCode::OK,
                    json!({ "app": app, "key": key, "deleted": true }),
                ),
                false => Err(ApiError::new(
                    ErrorCode::FileNotFound,
                    format!("no file `{}`", key.escape_debug()),
                )),
            }
        }
        (&Method::GET, ["admin", "v1", "apps", app, "storage"]) => {
            live(apps, app)?;
            let (files, bytes) = apps.files().usage(app).await.map_err(storage_error)?;
            ok(
                StatusCode::OK,
                json!({ "app": app, "files": files, "bytes": bytes }),
            )
        }
        (_, ["admin", "v1", "apps", app, "data", rest @ ..]) => {
            let live = live(apps, app)?;
            let rest: Vec<String> = rest.iter().map(|s| s.to_string()).collect();
            let rest: Vec<&str> = rest.iter().map(String::as_str).collect();
            data::serve(
                &live.capabilities.collections,
                apps.documents(),
                &Caller::Admin,
                &rest,
                req,
            )
            .await
            .map_err(|e| data::data_error(&live.app.name, e))
        }
        (_, ["admin", "v1", "apps", app, "users", rest @ ..]) => {
            let app = app.to_string();
            let rest: Vec<String> = rest.iter().map(|s| s.to_string()).collect();
            users(apps, &app, &rest, req).await
        }
        (&Method::POST, ["admin", "v1", "apps", app, "auth", "keys", "rotate"]) => {
            live(apps, app)?;
            let kid = apps
                .accounts()
                .keys
                .rotate(app)
                .await
                .map_err(AuthError::from)?;
            tracing::info!(app, kid, "signing key rotated");
            ok(StatusCode::OK, json!({ "app": app, "kid": kid }))
        }
        _ => Err(ApiError::new(
            ErrorCode::AdminRouteNotFound,
            format!("no admin call {method} {path}"),
        )),
    }
}

fn ok(status: StatusCode, body: Value) -> Answer {
    Ok(json_value_response(status, body))
}

fn list_crons(apps: &Apps, app: &str) -> Answer {
    let Some(live) = apps.get(app) else {
        return Err(ApiError::new(
            ErrorCode::AppNotFound,
            format!("no app `{app}`"),
        ));
    };
    let now = chrono::Utc::now();
    let triggers: Vec<Value> = live
        .crons
        .iter()
        .map(|t| {
            let next: Vec<String> = t
                .schedule
                .upcoming(now, 5)
                .iter()
                .map(|at| at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
                .collect();
            json!({
                "name": t.name,
                "schedule": t.expression,
                "timezone": t.timezone.as_deref().unwrap_or("UTC"),
                "function": &*t.function.name,
                "overlap": t.overlap,
                "missed": t.missed,
                "retries": t.retries,
                "next": next,
            })
        })
        .collect();
    ok(
        StatusCode::OK,
        json!({ "app": app, "version": live.app.version, "crons": triggers }),
    )
}

async fn list_runs(cron: &CronRunner, app: &str, query: &str) -> Answer {
    let mut filter = RunFilter::default();
    let invalid = |message: String| Err(ApiError::new(ErrorCode::InvalidQuery, message));
    // Trigger names and statuses need no percent-decoding.
    let pairs = query
        .split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| kv.split_once('=').unwrap_or((kv, "")));
    for (key, value) in pairs {
        match key {
            "trigger" => filter.trigger = Some(value.to_string()),
            "status" => filter.status = Some(value.to_string()),
            "limit" => match value.parse() {
                Ok(limit) => filter.limit = Some(limit),
                Err(_) => return invalid("limit is a number".into()),
            },
            other => {
                return invalid(format!(
                    "unknown parameter `{other}` (trigger, status, limit)"
                ));
            }
        }
    }
    match runs::list(cron.documents(), app, &filter).await {
        Ok(runs) => ok(StatusCode::OK, json!({ "app": app, "runs": runs })),
        Err(err) => Err(ApiError::new(
            ErrorCode::PlatformDataUnavailable,
            format!("cannot read the run history: {err}"),
        )),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RolesRequest {
    roles: Vec<String>,
}

/// An app that is deployed, or 404 (so a typo does not act on nobody).
async fn list_files(apps: &Apps, app: &str, query: &str) -> Answer {
    let (mut prefix, mut cursor, mut limit) = (String::new(), None, 100);
    for (key, value) in form_urlencoded::parse(query.as_bytes()) {
        match &*key {
            "prefix" => prefix = value.into_owned(),
            "cursor" => cursor = Some(value.into_owned()),
            "limit" => {
                limit = value.parse().map_err(|_| {
                    ApiError::new(ErrorCode::InvalidQuery, format!("limit is 1 to {MAX_PAGE}"))
                })?
            }
            other => {
                return Err(ApiError::new(
                    ErrorCode::InvalidQuery,
                    format!("unknown parameter `{other}` (prefix, cursor, limit)"),
                ));
            }
        }
    }
    let listing = apps
        .files()
        .list(app, &prefix, cursor.as_deref(), limit)
        .await
        .map_err(storage_error)?;
    let files: Vec<Value> = listing
        .files
        .iter()
        .map(|f| {
            json!({
                "key": f.key, "size": f.size, "content_type": f.content_type,
                "etag": f.etag, "modified_ms": f.modified_ms,
            })
        })
        .collect();
    ok(
        StatusCode::OK,
        json!({ "app": app, "files": files, "cursor": listing.cursor }),
    )
}

fn live(apps: &Apps, app: &str) -> Result<Arc<super::apps::LiveApp>, ApiError> {
    match apps.get(app) {
        Some(live) => Ok(live),
        None => Err(ApiError::new(
            ErrorCode::AppNotFound,
            format!("no app `{app}`"),
        )),
    }
}

/// `/admin/v1/apps/{app}/users/...`.
async fn users(apps: &Apps, app: &str, rest: &[String], req: Request<Incoming>) -> Answer {
    live(apps, app)?;
    let accounts = apps.accounts();
    let method = req.method().clone();
    let rest: Vec<&str> = rest.iter().map(String::as_str).collect();
    let one = |user: UserRecord| ok(StatusCode::OK, json!({ "user": user_json(&user) }));
    match (&method, rest.as_slice()) {
        (&Method::GET, []) => {
            let (mut search, mut after, mut limit) = (None, None, 50);
            for (key, value) in form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes()) {
                match &*key {
                    "search" => search = Some(value.into_owned()),
                    "after" => after = Some(value.into_owned()),
                    "limit" => {
                        limit = value.parse().map_err(|_| {
                            ApiError::new(ErrorCode::InvalidQuery, "limit is a number (1 to 100)")
                        })?
                    }
                    other => {
                        return Err(ApiError::new(
                            ErrorCode::InvalidQuery,
                            format!("unknown parameter `{other}` (search, after, limit)"),
                        ));
                    }
                }
            }
            let users = accounts
                .list_users(app, after.as_deref(), search.as_deref(), limit)
                .await?;
            let next = (users.len() as u64 == limit.clamp(1, 100))
                .then(|| users.last().map(|u| u.id.clone()))
                .flatten();
            let users: Vec<Value> = users.iter().map(user_json).collect();
            ok(
                StatusCode::OK,
                json!({ "app": app, "users": users, "next": next }),
            )
        }
        (&Method::GET, [id]) => match accounts.user(app, id).await? {
            Some(user) => one(user),
            None => Err(AuthError::NotFound(format!("no user `{id}`")).into()),
        },
        (&Method::DELETE, [id]) => {
            accounts.delete_user(app, id).await?;
            ok(StatusCode::OK, json!({ "deleted": id }))
        }
        (&Method::POST, [id, "disable"]) => one(accounts.set_disabled(app, id, true).await?),
        (&Method::POST, [id, "enable"]) => one(accounts.set_disabled(app, id, false).await?),
        (&Method::PUT, [id, "roles"]) => {
            let body: RolesRequest = read_json(req).await?;
            one(accounts.set_roles(app, id, body.roles).await?)
        }
        (&Method::GET, [id, "sessions"]) => {
            let sessions: Vec<Value> = accounts
                .sessions(app, id)
                .await?
                .iter()
                .map(|s| session_json(s, None))
                .collect();
            ok(StatusCode::OK, json!({ "user": id, "sessions": sessions }))
        }
        (&Method::DELETE, [id, "sessions"]) => {
            let revoked = accounts.revoke_sessions(app, id).await?;
            ok(StatusCode::OK, json!({ "user": id, "revoked": revoked }))
        }
        (&Method::DELETE, [id, "sessions", session]) => {
            accounts.revoke_session(app, id, session).await?;
            ok(StatusCode::OK, json!({ "user": id, "revoked": 1 }))
        }
        _ => Err(ApiError::new(
            ErrorCode::AdminRouteNotFound,
            format!("no admin call {method} {}", req.uri().path()),
        )),
    }
}

fn authorized<B>(req: &Request<B>, admin_key: &str) -> bool {
    let given = req
        .headers()
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    constant_time_eq(given.as_bytes(), admin_key.as_bytes())
}

/// Compares HMACs of both keys (under a random key) in constant time, so
/// neither the contents nor the length of the admin key leak through timing.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    use ring::hmac;
    static KEY: std::sync::OnceLock<hmac::Key> = std::sync::OnceLock::new();
    let key = KEY.get_or_init(|| hmac::Key::new(hmac::HMAC_SHA256, &rand::random::<[u8; 32]>()));
    hmac::verify(key, b, hmac::sign(key, a).as_ref()).is_ok()
}

/// Component uploads buffered at once (each up to [`MAX_COMPONENT_BYTES`]).
const MAX_CONCURRENT_UPLOADS: usize = 2;
static UPLOADS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(MAX_CONCURRENT_UPLOADS);

async fn upload(apps: &Apps, digest: &str, req: Request<Incoming>) -> Answer {
    if !is_valid_digest(digest) {
        return Err(ApiError::new(
            ErrorCode::InvalidDigest,
            format!("`{digest}` is not sha256:<64 lowercase hex>"),
        ));
    }
    let Ok(_upload) = UPLOADS.try_acquire() else {
        return Err(ApiError::new(
            ErrorCode::Busy,
            format!("{MAX_CONCURRENT_UPLOADS} uploads are in progress; try again when one ends"),
        ));
    };
    let bytes = Limited::new(req.into_body(), MAX_COMPONENT_BYTES)
        .collect()
        .await
        .map_err(|_| {
            ApiError::new(
                ErrorCode::ComponentTooLarge,
                format!("a component may be at most {MAX_COMPONENT_BYTES} bytes"),
            )
        })?
        .to_bytes();
    let actual = digest_of(&bytes);
    if actual != digest {
        return Err(ApiError::new(
            ErrorCode::DigestMismatch,
            format!("the body's digest is {actual}, not {digest}"),
        ));
    }
    let digest = apps.artifacts().put_component(bytes).await?;
    ok(StatusCode::OK, json!({ "digest": digest }))
}

async fn list_versions(apps: &Apps, app: &str) -> Answer {
    let records = apps.records(app).await?;
    if records.is_empty() {
        return Err(DeployError::UnknownApp(app.to_string()).into());
    }
    let list: Vec<Value> = records.iter().map(summary).collect();
    let live = apps.get(app).map(|a| a.app.version);
    ok(
        StatusCode::OK,
        json!({ "app": app, "live": live, "versions": list }),
    )
}

fn summary(record: &DeploymentRecord) -> Value {
    json!({
        "app": record.app,
        "version": record.version,
        "created_at": record.created_at,
        "components": record.components,
    })
}

async fn read_json<T: serde::de::DeserializeOwned>(req: Request<Incoming>) -> Result<T, ApiError> {
    super::json_body::read_json(req, MAX_JSON_BYTES).await
}

impl From<DeployError> for ApiError {
    fn from(err: DeployError) -> Self {
        let code = match &err {
            DeployError::InvalidAppName(_) => ErrorCode::InvalidAppName,
            DeployError::Manifest(_) => ErrorCode::InvalidManifest,
            DeployError::Components(_) => ErrorCode::InvalidComponents,
            DeployError::Component { error, .. } => match error {
                LoadError::Engine(EngineError::Link(_)) => ErrorCode::UnsatisfiedImport,
                LoadError::Engine(EngineError::InvalidComponent(_)) => ErrorCode::InvalidComponent,
                LoadError::NotUploaded(_) => ErrorCode::InvalidComponents,
                _ => ErrorCode::Internal,
            },
            DeployError::MissingExport { .. } => ErrorCode::MissingExport,
            DeployError::Routes(_) => ErrorCode::InvalidRoutes,
            DeployError::UnknownApp(_) => ErrorCode::AppNotFound,
            DeployError::UnknownVersion { .. } => ErrorCode::VersionNotFound,
            // Another node deployed the same version number first.
            DeployError::Platform(StoreError::Conflict(_)) => ErrorCode::ConcurrentDeploy,
            DeployError::Storage(_) | DeployError::Platform(_) => ErrorCode::Internal,
        };
        if code.status().is_server_error() {
            tracing::error!("admin call failed: {err}");
        }
        ApiError::new(code, err.to_string())
    }
}

impl From<ArtifactError> for ApiError {
    fn from(err: ArtifactError) -> Self {
        tracing::error!("artifact storage failed: {err}");
        ApiError::new(ErrorCode::Storage, err.to_string())
    }
}
