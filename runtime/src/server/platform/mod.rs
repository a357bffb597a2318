//! An app's platform endpoints: app-relative paths under `/_kiln/`, which
//! no route of the app can use (manifests are refused) and which never
//! reach a function.

mod auth;
pub(super) mod data;
pub(super) mod files;
mod uploads;

use std::net::SocketAddr;
use std::sync::Arc;

use http::{Request, Response};
use hyper::body::Incoming;

use super::apps::LiveApp;
use crate::store::Documents;
use crate::triggers::http::{ApiError, ErrorCode, PLATFORM_PREFIX, ResponseBody};

type Answer = Result<Response<ResponseBody>, ApiError>;

/// Handles `path` (app-relative, in the platform's namespace) for `live`.
pub async fn handle(
    live: &LiveApp,
    documents: &Documents,
    path: &str,
    req: Request<Incoming>,
    peer: SocketAddr,
    request_id: &Arc<str>,
) -> Answer {
    let rest = path.strip_prefix(PLATFORM_PREFIX).unwrap_or(path);
    let segments: Vec<&str> = rest.trim_matches('/').split('/').collect();
    match segments.as_slice() {
        ["auth", rest @ ..] => auth::handle(&live.http.auth, rest, req, peer).await,
        ["data", rest @ ..] => data::handle(live, documents, rest, req, request_id.clone()).await,
        ["uploads", rest @ ..] => {
            let rest: Vec<&str> = rest.iter().copied().filter(|s| !s.is_empty()).collect();
            uploads::handle(live, &rest, req, peer.ip()).await
        }
        ["files", _, ..] => {
            // The key keeps its own slashes: hand over the raw rest of the path.
            let files = rest
                .trim_start_matches('/')
                .strip_prefix("files/")
                .unwrap_or("");
            files::handle(live, files, req, peer.ip()).await
        }
        _ => Err(ApiError::new(
            ErrorCode::PlatformRouteNotFound,
            format!("no platform endpoint of app `{}` at {path}", live.app.name),
        )),
    }
}
