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

use std::collections::BTreeMap;

use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use serde::Deserialize;
use serde_json::{Value, json};

use std::sync::Arc;

use super::apps::{Apps, DeployError, DeploymentRecord};
use super::artifacts::{ArtifactError, digest_of, is_valid_digest};
use crate::triggers::cron::Scheduler;
use crate::triggers::cron::runs::{self, RunFilter};
use crate::triggers::http::{ResponseBody, error_response, json_response};

/// Largest component upload.
const MAX_COMPONENT_BYTES: usize = 512 * 1024 * 1024;
/// Largest JSON body of the other calls.
const MAX_JSON_BYTES: usize = 4 * 1024 * 1024;

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
    scheduler: &Arc<Scheduler>,
    admin_key: &str,
    req: Request<Incoming>,
) -> Response<ResponseBody> {
    if !authorized(&req, admin_key) {
        return error_response(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "the admin API needs `Authorization: Bearer <admin key>`",
        );
    }
    let path = req.uri().path().to_string();
    let segments: Vec<&str> = path.trim_end_matches('/').split('/').skip(1).collect();
    let method = req.method().clone();
    match (&method, segments.as_slice()) {
        (&Method::HEAD, ["admin", "v1", "components", digest]) => {
            match apps.artifacts().has_component(digest).await {
                Ok(true) => json_response(StatusCode::OK, json!({})),
                Ok(false) => not_found("component_not_found", &format!("no component {digest}")),
                Err(err) => storage_error(err),
            }
        }
        (&Method::PUT, ["admin", "v1", "components", digest]) => upload(apps, digest, req).await,
        (&Method::POST, ["admin", "v1", "apps", app, "deployments"]) => {
            let body: DeployRequest = match read_json(req).await {
                Ok(b) => b,
                Err(resp) => return resp,
            };
            match apps.deploy(app, body.manifest, body.components).await {
                Ok(record) => json_response(StatusCode::CREATED, summary(&record)),
                Err(err) => deploy_error(err),
            }
        }
        (&Method::GET, ["admin", "v1", "apps"]) => {
            let apps: Vec<Value> = apps
                .list()
                .into_iter()
                .map(|(app, version)| json!({ "app": app, "version": version }))
                .collect();
            json_response(StatusCode::OK, json!({ "apps": apps }))
        }
        (&Method::GET, ["admin", "v1", "apps", app, "deployments"]) => {
            list_versions(apps, app).await
        }
        (&Method::POST, ["admin", "v1", "apps", app, "rollback"]) => {
            let body: RollbackRequest = match read_json(req).await {
                Ok(b) => b,
                Err(resp) => return resp,
            };
            match apps.rollback(app, body.version).await {
                Ok(record) => json_response(StatusCode::OK, summary(&record)),
                Err(err) => deploy_error(err),
            }
        }
        (&Method::GET, ["admin", "v1", "apps", app, "crons"]) => list_crons(apps, app),
        (&Method::POST, ["admin", "v1", "apps", app, "crons", trigger, "run"]) => {
            match scheduler.run_now(app, trigger) {
                Ok(scheduled_ms) => json_response(
                    StatusCode::ACCEPTED,
                    json!({ "app": app, "trigger": trigger, "scheduled_ms": scheduled_ms }),
                ),
                Err(err) => not_found("trigger_not_found", &err.to_string()),
            }
        }
        (&Method::GET, ["admin", "v1", "apps", app, "runs"]) => {
            list_runs(scheduler, app, req.uri().query().unwrap_or("")).await
        }
        _ => not_found(
            "admin_route_not_found",
            &format!("no admin call {method} {path}"),
        ),
    }
}

fn list_crons(apps: &Apps, app: &str) -> Response<ResponseBody> {
    let Some(live) = apps.get(app) else {
        return not_found("app_not_found", &format!("no app `{app}`"));
    };
    let now = chrono::Utc::now();
    let triggers: Vec<Value> = live
        .cron
        .triggers
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
    json_response(
        StatusCode::OK,
        json!({ "app": app, "version": live.version, "crons": triggers }),
    )
}

async fn list_runs(scheduler: &Scheduler, app: &str, query: &str) -> Response<ResponseBody> {
    let mut filter = RunFilter::default();
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
                Err(_) => return bad_request("invalid_query", "limit is a number"),
            },
            other => {
                return bad_request(
                    "invalid_query",
                    &format!("unknown parameter `{other}` (trigger, status, limit)"),
                );
            }
        }
    }
    match runs::list(scheduler.documents(), app, &filter).await {
        Ok(runs) => json_response(StatusCode::OK, json!({ "app": app, "runs": runs })),
        Err(err) => error_response(
            StatusCode::SERVICE_UNAVAILABLE,
            "platform_data_unavailable",
            &format!("cannot read the run history: {err}"),
        ),
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

async fn upload(apps: &Apps, digest: &str, req: Request<Incoming>) -> Response<ResponseBody> {
    if !is_valid_digest(digest) {
        return bad_request(
            "invalid_digest",
            &format!("`{digest}` is not sha256:<64 lowercase hex>"),
        );
    }
    let Ok(_upload) = UPLOADS.try_acquire() else {
        return error_response(
            StatusCode::SERVICE_UNAVAILABLE,
            "busy",
            &format!("{MAX_CONCURRENT_UPLOADS} uploads are in progress; try again when one ends"),
        );
    };
    let bytes = match Limited::new(req.into_body(), MAX_COMPONENT_BYTES)
        .collect()
        .await
    {
        Ok(body) => body.to_bytes(),
        Err(_) => {
            return error_response(
                StatusCode::PAYLOAD_TOO_LARGE,
                "component_too_large",
                &format!("a component may be at most {MAX_COMPONENT_BYTES} bytes"),
            );
        }
    };
    let actual = digest_of(&bytes);
    if actual != digest {
        return bad_request(
            "digest_mismatch",
            &format!("the body's digest is {actual}, not {digest}"),
        );
    }
    match apps.artifacts().put_component(bytes).await {
        Ok(digest) => json_response(StatusCode::OK, json!({ "digest": digest })),
        Err(err) => storage_error(err),
    }
}

async fn list_versions(apps: &Apps, app: &str) -> Response<ResponseBody> {
    let list: Vec<Value> = match apps.records(app).await {
        Ok(records) if records.is_empty() => {
            return deploy_error(DeployError::UnknownApp(app.to_string()));
        }
        Ok(records) => records.iter().map(summary).collect(),
        Err(err) => return deploy_error(err),
    };
    let live = apps.get(app).map(|a| a.version);
    json_response(
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

async fn read_json<T: serde::de::DeserializeOwned>(
    req: Request<Incoming>,
) -> Result<T, Response<ResponseBody>> {
    let bytes = Limited::new(req.into_body(), MAX_JSON_BYTES)
        .collect()
        .await
        .map_err(|_| bad_request("invalid_body", "the body is too large or was cut off"))?
        .to_bytes();
    serde_json::from_slice(&bytes).map_err(|e| bad_request("invalid_json", &format!("body: {e}")))
}

fn deploy_error(err: DeployError) -> Response<ResponseBody> {
    let (status, code) = match &err {
        DeployError::InvalidAppName(_) => (StatusCode::BAD_REQUEST, "invalid_app_name"),
        DeployError::Manifest(_) => (StatusCode::BAD_REQUEST, "invalid_manifest"),
        DeployError::Components(_) => (StatusCode::BAD_REQUEST, "invalid_components"),
        DeployError::Component { error, .. } => match error {
            crate::engine::EngineError::Link(_) => (StatusCode::BAD_REQUEST, "unsatisfied_import"),
            crate::engine::EngineError::InvalidComponent(_) => {
                (StatusCode::BAD_REQUEST, "invalid_component")
            }
            _ => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        },
        DeployError::MissingExport { .. } => (StatusCode::BAD_REQUEST, "missing_export"),
        DeployError::Routes(_) => (StatusCode::BAD_REQUEST, "invalid_routes"),
        DeployError::UnknownApp(_) => (StatusCode::NOT_FOUND, "app_not_found"),
        DeployError::UnknownVersion { .. } => (StatusCode::NOT_FOUND, "version_not_found"),
        // Another node deployed the same version number first.
        DeployError::Platform(crate::store::StoreError::Conflict(_)) => {
            (StatusCode::CONFLICT, "concurrent_deploy")
        }
        DeployError::Storage(_) | DeployError::Platform(_) | DeployError::Internal(_) => {
            (StatusCode::INTERNAL_SERVER_ERROR, "internal")
        }
    };
    if status.is_server_error() {
        tracing::error!("admin call failed: {err}");
    }
    error_response(status, code, &err.to_string())
}

fn storage_error(err: ArtifactError) -> Response<ResponseBody> {
    tracing::error!("artifact storage failed: {err}");
    error_response(
        StatusCode::INTERNAL_SERVER_ERROR,
        "storage",
        &err.to_string(),
    )
}

fn bad_request(code: &str, message: &str) -> Response<ResponseBody> {
    error_response(StatusCode::BAD_REQUEST, code, message)
}

fn not_found(code: &str, message: &str) -> Response<ResponseBody> {
    error_response(StatusCode::NOT_FOUND, code, message)
}
