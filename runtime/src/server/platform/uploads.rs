//! Resumable uploads of an app's clients, under `/_kiln/uploads`.
//!
//! | method and path | does |
//! | --- | --- |
//! | `POST /` | `{bucket, key, size, content_type?}`: starts an upload (201 `{id, offset, size, part_bytes}`), under the bucket's rules and limits as a `PUT` would be |
//! | `GET /ID` (or `HEAD`) | `{id, offset, size, part_bytes}`; `HEAD` answers `Upload-Offset` and `Upload-Length` |
//! | `PATCH /ID` | `Upload-Offset: N` (the confirmed offset) and the next bytes: `{id, offset, size, part_bytes, file}`, `file` once the last byte arrived (the stored file's metadata) |
//! | `DELETE /ID` | aborts the upload and drops what it stored |
//!
//! The upload's id is 128 random bits from the operating system. An upload
//! started signed in belongs to that user: for anyone else (another user,
//! or no one signed in) it does not exist (404). One started signed out is
//! continued by whoever holds its id, as a signed URL would be.

use std::net::IpAddr;

use http::header::HeaderValue;
use http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use serde::Deserialize;
use serde_json::{Value, json};

use super::Answer;
use super::files::{allowed_to_store, storage_error};
use crate::capabilities::storage::StorageError;
use crate::capabilities::storage::uploads::{PART_BYTES, Progress};
use crate::server::apps::LiveApp;
use crate::server::json_body::read_json;
use crate::triggers::http::{ApiError, ErrorCode, empty_body, identify, json_value_response};

const MAX_START_BODY: usize = 4 * 1024;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Start {
    bucket: String,
    key: String,
    size: u64,
    #[serde(default)]
    content_type: Option<String>,
}

fn progress_json(progress: &Progress) -> Value {
    let file = progress.file.as_ref().map(|f| {
        let (bucket, key) = f.key.split_once('/').unwrap_or((&f.key, ""));
        json!({
            "bucket": bucket, "key": key, "size": f.size, "content_type": f.content_type,
            "etag": f.etag, "modified_ms": f.modified_ms,
        })
    });
    json!({
        "id": progress.id, "offset": progress.offset, "size": progress.size,
        "part_bytes": PART_BYTES, "file": file,
    })
}

pub async fn handle(
    live: &LiveApp,
    rest: &[&str],
    req: Request<Incoming>,
    client: IpAddr,
) -> Answer {
    let app = &*live.capabilities.storage.app;
    let files = &live.capabilities.storage.files;
    let identity = identify(&live.http.auth, req.headers()).await?;
    let caller = identity.as_ref().map(|i| &*i.user);
    match (req.method().clone(), rest) {
        (Method::POST, []) => {
            let headers = req.headers().clone();
            let start: Start = read_json(req, MAX_START_BODY).await?;
            let content_type = start
                .content_type
                .unwrap_or_else(|| "application/octet-stream".to_string());
            let (key, overwrite) = allowed_to_store(
                live,
                &start.bucket,
                &start.key,
                &content_type,
                Some(start.size),
                &headers,
            )
            .await?;
            let progress = files
                .start_upload(app, caller, &key, start.size, &content_type, overwrite)
                .await
                .map_err(storage_error)?;
            Ok(json_value_response(
                StatusCode::CREATED,
                progress_json(&progress),
            ))
        }
        (method @ (Method::GET | Method::HEAD), [id]) => {
            let progress = files
                .upload_progress(app, id, caller)
                .await
                .map_err(upload_error)?;
            let mut answer = json_value_response(StatusCode::OK, progress_json(&progress));
            let headers = answer.headers_mut();
            headers.insert("upload-offset", HeaderValue::from(progress.offset));
            headers.insert("upload-length", HeaderValue::from(progress.size));
            if method == Method::HEAD {
                *answer.body_mut() = empty_body();
            }
            Ok(answer)
        }
        (Method::PATCH, [id]) => {
            let offset = req
                .headers()
                .get("upload-offset")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok())
                .ok_or_else(|| {
                    ApiError::new(
                        ErrorCode::InvalidUploadOffset,
                        "send `Upload-Offset: N`, the offset the upload is at",
                    )
                })?;
            let _slot = files
                .write_slots()
                .take(app, Some(client))
                .map_err(storage_error)?;
            let body = req.into_body().into_data_stream();
            let progress = files
                .append_upload(app, id, caller, offset, body)
                .await
                .map_err(upload_error)?;
            let mut answer = json_value_response(StatusCode::OK, progress_json(&progress));
            answer
                .headers_mut()
                .insert("upload-offset", HeaderValue::from(progress.offset));
            Ok(answer)
        }
        (Method::DELETE, [id]) => {
            files
                .abort_upload(app, id, caller)
                .await
                .map_err(upload_error)?;
            Ok(json_value_response(StatusCode::OK, json!({"aborted": id})))
        }
        _ => Err(ApiError::new(
            ErrorCode::PlatformRouteNotFound,
            "uploads: POST /_kiln/uploads, then GET, PATCH or DELETE /_kiln/uploads/ID",
        )),
    }
}

/// An upload that is gone (or another caller's) is `upload_not_found`; a
/// wrong offset is `upload_offset_mismatch`; the rest as for files.
fn upload_error(err: StorageError) -> ApiError {
    match err {
        StorageError::NotFound(m) => ApiError::new(ErrorCode::UploadNotFound, m),
        StorageError::Conflict(m) => ApiError::new(ErrorCode::InvalidUploadOffset, m),
        other => storage_error(other),
    }
}
