//! The file endpoints of an app, under `/_kiln/files`, for its clients.
//! Every request is checked against its bucket's rules (from the caller,
//! the rule and the key alone, before any file is looked up), or carries a
//! URL signed by Kiln.
//!
//! | method and path | does |
//! | --- | --- |
//! | `GET`, `HEAD /BUCKET/KEY` | the file: `Range` (206), `If-None-Match` (304), `ETag`, `Last-Modified`, `Cache-Control`; `?thumb=SIZE` its thumbnail |
//! | `PUT /BUCKET/KEY` | stores the body (201 new, 200 replaced); `If-None-Match: *` only creates |
//! | `DELETE /BUCKET/KEY` | deletes the file |
//! | `GET /BUCKET?prefix=&cursor=&limit=` | one page of the bucket's files |
//! | `POST /BUCKET/KEY` | `{method: "GET" \| "PUT", expires_in}`: a signed URL |
//!
//! The key is the rest of the path, percent-decoded once; the rules and the
//! store see the same decoded key, so no spelling reaches another file.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use serde::Deserialize;
use serde_json::{Value, json};

use super::Answer;
use crate::capabilities::storage::buckets::{Action, Allowed, Bucket, Denied};
use crate::capabilities::storage::signing::{MAX_EXPIRY_SECS, SignatureError};
use crate::capabilities::storage::thumbnails::{ThumbSize, ThumbnailError};
use crate::capabilities::storage::{
    AppStorage, FileMeta, MAX_PAGE, Overwrite, StorageError, URL_SEGMENT,
};
use crate::server::apps::LiveApp;
use crate::server::json_body::read_json;
use crate::triggers::http::ask::ask;
use crate::triggers::http::{
    ApiError, ErrorCode, ResponseBody, empty_body, full_body, identify, json_value_response,
    refusal_error,
};

/// Largest body of a signing call.
const MAX_SIGN_BODY: usize = 4 * 1024;
/// How long a public file may be cached by browsers and CDNs.
const PUBLIC_MAX_AGE_SECS: u64 = 3600;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SignRequest {
    method: String,
    expires_in: u64,
}

/// A request's target: the bucket and the key inside it.
struct Target<'a> {
    name: &'a str,
    bucket: &'a Bucket,
    /// The key inside the bucket, decoded; empty for the bucket itself.
    path: String,
}

impl Target<'_> {
    fn key(&self) -> String {
        format!("{}/{}", self.name, self.path)
    }
}

pub async fn handle(live: &LiveApp, rest: &str, req: Request<Incoming>, client: IpAddr) -> Answer {
    let storage = &live.capabilities.storage;
    let app = &*storage.app;
    let (name, encoded) = rest.split_once('/').unwrap_or((rest, ""));
    let bucket = storage.buckets.get(name).ok_or_else(|| {
        ApiError::new(
            ErrorCode::BucketNotFound,
            format!("app `{app}` has no bucket `{}`", name.escape_debug()),
        )
    })?;
    let path = decode(encoded)?;
    let target = Target { name, bucket, path };
    let query = Query::parse(req.uri().query());
    let method = req.method().clone();
    if target.path.is_empty() {
        return match method {
            Method::GET => list(live, &target, &query, req.headers()).await,
            _ => Err(method_not_allowed("GET")),
        };
    }
    let key = target.key();
    crate::capabilities::storage::keys::check(&key).map_err(key_error)?;
    match method {
        Method::GET | Method::HEAD => download(live, &target, &query, req).await,
        Method::PUT => upload(live, &target, &query, req, client).await,
        Method::DELETE => {
            allow(live, &target, Action::Delete, req.headers(), Asked::File).await?;
            match storage
                .files
                .delete(app, &key)
                .await
                .map_err(storage_error)?
            {
                true => Ok(json_value_response(
                    StatusCode::OK,
                    json!({"deleted": true}),
                )),
                false => Err(not_found(&target)),
            }
        }
        Method::POST => sign(live, &target, req).await,
        _ => Err(method_not_allowed("GET, HEAD, PUT, DELETE, POST")),
    }
}

/// The query parameters this module reads.
#[derive(Default)]
struct Query {
    expires: Option<String>,
    signature: Option<String>,
    prefix: Option<String>,
    cursor: Option<String>,
    limit: Option<String>,
    thumb: Option<String>,
}

impl Query {
    fn parse(query: Option<&str>) -> Self {
        let mut parsed = Query::default();
        for (name, value) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
            let slot = match &*name {
                "expires" => &mut parsed.expires,
                "signature" => &mut parsed.signature,
                "prefix" => &mut parsed.prefix,
                "cursor" => &mut parsed.cursor,
                "limit" => &mut parsed.limit,
                "thumb" => &mut parsed.thumb,
                _ => continue,
            };
            // A repeated parameter is refused by taking none of it.
            *slot = match slot {
                None => Some(value.into_owned()),
                Some(_) => Some(String::from("\0")),
            };
        }
        parsed
    }
}

/// The path as sent, percent-decoded once, as UTF-8.
fn decode(encoded: &str) -> Result<String, ApiError> {
    percent_encoding::percent_decode_str(encoded)
        .decode_utf8()
        .map(|k| k.into_owned())
        .map_err(|_| {
            ApiError::new(
                ErrorCode::InvalidFileKey,
                "the file key is not UTF-8 once percent-decoded",
            )
        })
}

/// What a rule's function is told besides the action and the key.
enum Asked<'a> {
    File,
    /// A write's content type and declared size.
    Store {
        content_type: &'a str,
        size: Option<u64>,
    },
    /// A listing, with its prefix as sent.
    List {
        prefix: &'a str,
    },
}

/// Checks the bucket's rule for `action` against the caller; a `function:`
/// rule asks the function, and anything but `{"allow": true}` refuses.
async fn allow(
    live: &LiveApp,
    target: &Target<'_>,
    action: Action,
    headers: &HeaderMap,
    asked: Asked<'_>,
) -> Result<(), ApiError> {
    let app = &*live.capabilities.storage.app;
    let identity = identify(&live.http.auth, headers).await?;
    let function = match target
        .bucket
        .allows(action, identity.as_ref(), &target.path)
        .map_err(|denied| denied_error(app, target.name, action, denied))?
    {
        Allowed::Yes => return Ok(()),
        Allowed::IfFunctionAgrees(function) => function,
    };
    let user = identity
        .as_ref()
        .map(|i| json!({"id": i.user, "session_id": i.session, "roles": i.roles, "mfa": i.mfa}));
    let mut question = json!({
        "action": action.name(), "bucket": target.name, "key": target.path, "user": user,
    });
    match asked {
        Asked::File => {}
        Asked::Store { content_type, size } => {
            question["content_type"] = json!(content_type);
            question["size"] = json!(size);
        }
        Asked::List { prefix } => {
            question["key"] = json!(prefix);
            question["list"] = json!(true);
        }
    }
    let request_id: Arc<str> = crate::store::query::new_id().into();
    let refused = |why: String| {
        ApiError::new(
            ErrorCode::FileAccessDenied,
            format!(
                "bucket `{}`'s rule for {} is function `{function}`, which {why}",
                target.name,
                action.name()
            ),
        )
    };
    match ask(
        &live.app,
        function,
        "file-rule",
        &question,
        identity,
        &request_id,
    )
    .await
    {
        Ok(answer) if answer["allow"] == json!(true) => Ok(()),
        Ok(answer) => {
            let reason = answer["reason"]
                .as_str()
                .map(|r| r.chars().take(200).collect::<String>());
            Err(refused(match reason {
                Some(reason) => format!("refused: {reason}"),
                None => "refused".to_string(),
            }))
        }
        Err(err) => {
            tracing::warn!(app, %request_id, bucket = target.name, "a file rule's function did not decide, so it refused: {err}");
            Err(refused(format!(
                "did not decide (request id {request_id}; see the server log), so it refused"
            )))
        }
    }
}

fn denied_error(app: &str, bucket: &str, action: Action, denied: Denied) -> ApiError {
    let verb = action.name();
    match denied {
        Denied::NoRule => ApiError::new(
            ErrorCode::FileAccessDenied,
            format!("bucket `{bucket}` lets no client {verb} files"),
        ),
        Denied::NotOwner => ApiError::new(
            ErrorCode::FileAccessDenied,
            format!(
                "in bucket `{bucket}` a user may {verb} only under their own id (`{bucket}/<user id>/...`)"
            ),
        ),
        Denied::Policy(refusal) => refusal_error(
            app,
            refusal,
            &format!("to {verb} files of bucket `{bucket}`"),
        ),
    }
}

/// A key the rules refuse to spell.
fn key_error(err: StorageError) -> ApiError {
    ApiError::new(ErrorCode::InvalidFileKey, err.to_string())
}

fn not_found(target: &Target<'_>) -> ApiError {
    ApiError::new(
        ErrorCode::FileNotFound,
        format!(
            "no file `{}` in bucket `{}`",
            target.path.escape_debug(),
            target.name
        ),
    )
}

fn method_not_allowed(allowed: &'static str) -> ApiError {
    ApiError::new(
        ErrorCode::MethodNotAllowed,
        format!("allowed here: {allowed}"),
    )
    .with_header(header::ALLOW, HeaderValue::from_static(allowed))
}

/// The answer to a failed file operation (the admin API's too).
pub(crate) fn storage_error(err: StorageError) -> ApiError {
    let message = err.to_string();
    let code = match err {
        StorageError::NotFound(_) => ErrorCode::FileNotFound,
        StorageError::Conflict(_) => ErrorCode::FileExists,
        StorageError::InvalidInput(_) => ErrorCode::InvalidInput,
        StorageError::PermissionDenied(_) => ErrorCode::FileAccessDenied,
        StorageError::LimitExceeded(_) => ErrorCode::FileTooLarge,
        StorageError::RangeNotSatisfiable(_) => ErrorCode::RangeNotSatisfiable,
        StorageError::Busy(_) => ErrorCode::Busy,
        StorageError::Unavailable(ref detail) => {
            tracing::warn!("file storage: {detail}");
            return ApiError::new(
                ErrorCode::FilesUnavailable,
                "file storage is unavailable; try again",
            );
        }
    };
    ApiError::new(code, message)
}

/// A signed URL's verdict: `Some(())` when the request carries a valid one
/// for `method`; `None` when it carries none.
fn signed(
    storage: &AppStorage,
    target: &Target<'_>,
    query: &Query,
    method: &str,
) -> Result<Option<()>, ApiError> {
    let (expires, signature) = match (&query.expires, &query.signature) {
        (None, None) => return Ok(None),
        (Some(e), Some(s)) => (e, s),
        _ => {
            return Err(ApiError::new(
                ErrorCode::InvalidSignature,
                "a signed URL has both `expires` and `signature`",
            ));
        }
    };
    let expires: u64 = expires
        .parse()
        .map_err(|_| ApiError::new(ErrorCode::InvalidSignature, "`expires` is not a time"))?;
    storage
        .files
        .signer()
        .verify(
            method,
            &storage.app,
            &target.key(),
            expires,
            signature,
            now_secs(),
        )
        .map_err(|err| match err {
            SignatureError::Expired => ApiError::new(ErrorCode::SignatureExpired, err.to_string()),
            SignatureError::Invalid => ApiError::new(ErrorCode::InvalidSignature, err.to_string()),
        })?;
    Ok(Some(()))
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

async fn download(
    live: &LiveApp,
    target: &Target<'_>,
    query: &Query,
    req: Request<Incoming>,
) -> Answer {
    let storage = &live.capabilities.storage;
    let app = &*storage.app;
    if signed(storage, target, query, "GET")?.is_none() {
        allow(live, target, Action::Read, req.headers(), Asked::File).await?;
    }
    let key = target.key();
    let headers = req.headers();
    let head_only = req.method() == Method::HEAD;
    let meta = storage
        .files
        .head(app, &key)
        .await
        .map_err(storage_error)?
        .ok_or_else(|| not_found(target))?;
    if let Some(size) = &query.thumb {
        return thumbnail(storage, target, meta, size, headers, head_only).await;
    }
    let mut response = Response::builder();
    let common = file_headers(target, &meta);
    if matches_none_match(headers, &meta.etag) {
        let mut answer = empty(StatusCode::NOT_MODIFIED);
        answer.headers_mut().extend(common);
        return Ok(answer);
    }
    let range = match wanted_range(headers, &meta) {
        Ok(range) => range,
        Err(()) => {
            let mut answer = ApiError::new(
                ErrorCode::RangeNotSatisfiable,
                format!("the file has {} bytes", meta.size),
            )
            .into_response();
            answer.headers_mut().insert(
                header::CONTENT_RANGE,
                HeaderValue::from_str(&format!("bytes */{}", meta.size)).expect("ascii"),
            );
            return Ok(answer);
        }
    };
    let (status, length) = match &range {
        Some(r) => (StatusCode::PARTIAL_CONTENT, r.end - r.start),
        None => (StatusCode::OK, meta.size),
    };
    if let Some(r) = &range {
        response = response.header(
            header::CONTENT_RANGE,
            format!("bytes {}-{}/{}", r.start, r.end - 1, meta.size),
        );
    }
    let body: ResponseBody = if head_only || length == 0 {
        empty_body()
    } else {
        let download = storage
            .files
            .open(app, meta.clone(), range.clone())
            .await
            .map_err(|err| match err {
                StorageError::Conflict(m) => ApiError::new(ErrorCode::FilesUnavailable, m),
                other => storage_error(other),
            })?;
        let frames = download.body.map(|chunk| {
            chunk
                .map(Frame::data)
                .map_err(|e| Box::new(e) as Box<dyn std::error::Error + Send + Sync>)
        });
        StreamBody::new(frames).boxed_unsync()
    };
    let mut answer = response
        .status(status)
        .header(header::CONTENT_LENGTH, length)
        .body(body)
        .map_err(|e| ApiError::new(ErrorCode::Internal, e.to_string()))?;
    answer.headers_mut().extend(common);
    Ok(answer)
}

/// `?thumb=SIZE`: the file's thumbnail in one of its bucket's sizes, under
/// the file's own rule, with an ETag of its own.
async fn thumbnail(
    storage: &AppStorage,
    target: &Target<'_>,
    meta: FileMeta,
    size: &str,
    headers: &HeaderMap,
    head_only: bool,
) -> Answer {
    let declared = &target.bucket.thumbs;
    let size = ThumbSize::parse(size)
        .ok()
        .filter(|s| declared.contains(s))
        .ok_or_else(|| {
            let sizes: Vec<String> = declared.iter().map(|s| s.to_string()).collect();
            ApiError::new(
                ErrorCode::ThumbnailSizeNotAllowed,
                if sizes.is_empty() {
                    format!(
                        "bucket `{}` declares no thumbnail sizes (`thumbs`)",
                        target.name
                    )
                } else {
                    format!(
                        "bucket `{}` makes thumbnails of sizes {}",
                        target.name,
                        sizes.join(", ")
                    )
                },
            )
        })?;
    let thumb_meta = FileMeta {
        etag: format!("{}-{size}", meta.etag),
        ..meta.clone()
    };
    if matches_none_match(headers, &thumb_meta.etag) {
        let mut answer = empty(StatusCode::NOT_MODIFIED);
        answer
            .headers_mut()
            .extend(file_headers(target, &thumb_meta));
        return Ok(answer);
    }
    let made = storage
        .files
        .thumbnail(&storage.app, &meta, size)
        .await
        .map_err(|err| match err {
            ThumbnailError::Unsupported(m) => ApiError::new(ErrorCode::ThumbnailUnsupported, m),
            ThumbnailError::Failed(m) => ApiError::new(ErrorCode::ThumbnailFailed, m),
            ThumbnailError::Storage(StorageError::Conflict(m)) => {
                ApiError::new(ErrorCode::FilesUnavailable, m)
            }
            ThumbnailError::Storage(other) => storage_error(other),
        })?;
    let thumb_meta = FileMeta {
        content_type: made.content_type.to_string(),
        size: made.bytes.len() as u64,
        ..thumb_meta
    };
    let mut common = file_headers(target, &thumb_meta);
    common.remove(header::ACCEPT_RANGES);
    let body: ResponseBody = if head_only {
        empty_body()
    } else {
        full_body(made.bytes)
    };
    let mut answer = Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_LENGTH, thumb_meta.size)
        .body(body)
        .map_err(|e| ApiError::new(ErrorCode::Internal, e.to_string()))?;
    answer.headers_mut().extend(common);
    Ok(answer)
}

/// The headers of every answer about a file.
fn file_headers(target: &Target<'_>, meta: &FileMeta) -> HeaderMap {
    let mut headers = HeaderMap::new();
    let value = |v: String| HeaderValue::from_str(&v).expect("only ASCII is put in headers");
    headers.insert(header::ETAG, value(format!("\"{}\"", meta.etag)));
    let modified = UNIX_EPOCH + Duration::from_millis(meta.modified_ms);
    headers.insert(
        header::LAST_MODIFIED,
        value(httpdate::fmt_http_date(modified)),
    );
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_str(&meta.content_type)
            .unwrap_or(HeaderValue::from_static("application/octet-stream")),
    );
    headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    headers.insert(
        header::CACHE_CONTROL,
        if target.bucket.is_public() {
            value(format!("public, max-age={PUBLIC_MAX_AGE_SECS}"))
        } else {
            HeaderValue::from_static("private, no-cache")
        },
    );
    headers.insert(
        header::CONTENT_DISPOSITION,
        value(disposition(&target.path)),
    );
    // Files are the app's users' bytes, served from the app's origin: never
    // sniffed into HTML, and sandboxed if opened as a document.
    headers.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("sandbox"),
    );
    headers
}

/// `inline` with the last segment as the file name (RFC 6266: an ASCII
/// fallback and the UTF-8 name percent-encoded).
fn disposition(path: &str) -> String {
    let name = path.rsplit('/').next().unwrap_or(path);
    let ascii: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() && c != '"' && c != '\\' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let encoded = percent_encoding::utf8_percent_encode(name, URL_SEGMENT);
    format!("inline; filename=\"{ascii}\"; filename*=UTF-8''{encoded}")
}

fn matches_none_match(headers: &HeaderMap, etag: &str) -> bool {
    let Some(value) = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    value
        .split(',')
        .map(str::trim)
        .any(|tag| tag == "*" || tag.trim_start_matches("W/").trim_matches('"') == etag)
}

/// The one range asked for: `Ok(None)` for the whole file (no `Range`, an
/// `If-Range` that no longer matches, several ranges, or a unit other than
/// bytes); `Err` when it starts past the end.
fn wanted_range(headers: &HeaderMap, meta: &FileMeta) -> Result<Option<std::ops::Range<u64>>, ()> {
    let Some(spec) = headers.get(header::RANGE).and_then(|v| v.to_str().ok()) else {
        return Ok(None);
    };
    if let Some(if_range) = headers.get(header::IF_RANGE).and_then(|v| v.to_str().ok())
        && if_range.trim().trim_matches('"') != meta.etag
    {
        return Ok(None);
    }
    let Some(spec) = spec.trim().strip_prefix("bytes=") else {
        return Ok(None);
    };
    if spec.contains(',') {
        return Ok(None);
    }
    let Some((start, end)) = spec.trim().split_once('-') else {
        return Ok(None);
    };
    let size = meta.size;
    let range = match (start.trim(), end.trim()) {
        ("", suffix) => {
            let Ok(n) = suffix.parse::<u64>() else {
                return Ok(None);
            };
            if n == 0 {
                return Err(());
            }
            size.saturating_sub(n)..size
        }
        (start, "") => {
            let Ok(start) = start.parse::<u64>() else {
                return Ok(None);
            };
            start..size
        }
        (start, end) => {
            let (Ok(start), Ok(end)) = (start.parse::<u64>(), end.parse::<u64>()) else {
                return Ok(None);
            };
            if end < start {
                return Ok(None);
            }
            start..end.saturating_add(1).min(size)
        }
    };
    if range.start >= size {
        return Err(());
    }
    Ok(Some(range))
}

fn empty(status: StatusCode) -> Response<ResponseBody> {
    let mut response = Response::new(empty_body());
    *response.status_mut() = status;
    response
}

async fn upload(
    live: &LiveApp,
    target: &Target<'_>,
    query: &Query,
    req: Request<Incoming>,
    client: IpAddr,
) -> Answer {
    let storage = &live.capabilities.storage;
    let app = &*storage.app;
    let headers = req.headers();
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/octet-stream")
        .to_string();
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let signed = signed(storage, target, query, "PUT")?.is_some();
    let (key, overwrite, exists) =
        check_store(live, target, &content_type, declared, headers, signed).await?;
    let max = target.bucket.max_bytes;
    let _slot = storage
        .files
        .write_slots()
        .take(app, Some(client))
        .map_err(storage_error)?;
    let body = req.into_body().into_data_stream();
    let meta = storage
        .files
        .put(app, &key, Some(&content_type), overwrite, max, body)
        .await
        .map_err(|err| match err {
            StorageError::LimitExceeded(_) => too_large(target.name, max),
            other => storage_error(other),
        })?;
    let status = if exists {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok(json_value_response(status, meta_json(target, &meta)))
}

/// Whether a client may store a file at `bucket`/`path` of `content_type`
/// and (when declared) `size`: the full key, and whether it may replace one.
pub(super) async fn allowed_to_store(
    live: &LiveApp,
    bucket: &str,
    path: &str,
    content_type: &str,
    size: Option<u64>,
    headers: &HeaderMap,
) -> Result<(String, Overwrite), ApiError> {
    let storage = &live.capabilities.storage;
    let found = storage.buckets.get(bucket).ok_or_else(|| {
        ApiError::new(
            ErrorCode::BucketNotFound,
            format!(
                "app `{}` has no bucket `{}`",
                storage.app,
                bucket.escape_debug()
            ),
        )
    })?;
    let target = Target {
        name: bucket,
        bucket: found,
        path: path.to_string(),
    };
    crate::capabilities::storage::keys::check(&target.key()).map_err(key_error)?;
    let (key, overwrite, _) =
        check_store(live, &target, content_type, size, headers, false).await?;
    Ok((key, overwrite))
}

/// The rule for storing at `target` (upload, or replace when a file is
/// there; none for a signed URL), then the bucket's content types and size.
async fn check_store(
    live: &LiveApp,
    target: &Target<'_>,
    content_type: &str,
    size: Option<u64>,
    headers: &HeaderMap,
    signed: bool,
) -> Result<(String, Overwrite, bool), ApiError> {
    let storage = &live.capabilities.storage;
    let app = &*storage.app;
    let key = target.key();
    let exists = storage
        .files
        .head(app, &key)
        .await
        .map_err(storage_error)?
        .is_some();
    if !signed {
        let action = if exists {
            Action::Replace
        } else {
            Action::Upload
        };
        allow(
            live,
            target,
            action,
            headers,
            Asked::Store { content_type, size },
        )
        .await?;
    }
    let create_only = headers
        .get(header::IF_NONE_MATCH)
        .is_some_and(|v| v.as_bytes() == b"*");
    // Without the right to replace, a file that appeared meanwhile is a
    // conflict, never overwritten.
    let overwrite = if exists && !create_only {
        Overwrite::Allowed
    } else {
        Overwrite::Refused
    };
    if !target.bucket.accepts(content_type) {
        return Err(ApiError::new(
            ErrorCode::ContentTypeNotAllowed,
            format!(
                "bucket `{}` takes {}, not `{}`",
                target.name,
                target.bucket.content_types.join(", "),
                content_type.escape_debug()
            ),
        ));
    }
    if size.is_some_and(|n| n > target.bucket.max_bytes) {
        return Err(too_large(target.name, target.bucket.max_bytes));
    }
    Ok((key, overwrite, exists))
}

fn too_large(bucket: &str, max: u64) -> ApiError {
    ApiError::new(
        ErrorCode::FileTooLarge,
        format!("bucket `{bucket}` takes files of at most {max} bytes"),
    )
}

fn meta_json(target: &Target<'_>, meta: &FileMeta) -> Value {
    let path = meta
        .key
        .strip_prefix(&format!("{}/", target.name))
        .unwrap_or(&meta.key);
    json!({
        "bucket": target.name,
        "key": path,
        "size": meta.size,
        "content_type": meta.content_type,
        "etag": meta.etag,
        "modified_ms": meta.modified_ms,
    })
}

async fn list(live: &LiveApp, target: &Target<'_>, query: &Query, headers: &HeaderMap) -> Answer {
    let storage = &live.capabilities.storage;
    let app = &*storage.app;
    let prefix = query.prefix.clone().unwrap_or_default();
    let limit = match &query.limit {
        None => 100,
        Some(l) => l
            .parse::<u32>()
            .ok()
            .filter(|l| (1..=MAX_PAGE).contains(l))
            .ok_or_else(|| {
                ApiError::new(
                    ErrorCode::InvalidQuery,
                    format!("`limit` is 1 to {MAX_PAGE}"),
                )
            })?,
    };
    // The rule sees the prefix's folder: an owner lists only their own.
    let folder = prefix.trim_end_matches('/');
    let ruled = Target {
        name: target.name,
        bucket: target.bucket,
        path: folder.to_string(),
    };
    allow(
        live,
        &ruled,
        Action::Read,
        headers,
        Asked::List { prefix: &prefix },
    )
    .await?;
    let full_prefix = format!("{}/{prefix}", target.name);
    let cursor = query
        .cursor
        .as_ref()
        .map(|c| format!("{}/{c}", target.name));
    let listing = storage
        .files
        .list(app, &full_prefix, cursor.as_deref(), limit)
        .await
        .map_err(storage_error)?;
    let files: Vec<Value> = listing.files.iter().map(|m| meta_json(target, m)).collect();
    let cursor = listing.cursor.map(|c| {
        c.strip_prefix(&format!("{}/", target.name))
            .unwrap_or(&c)
            .to_string()
    });
    Ok(json_value_response(
        StatusCode::OK,
        json!({"files": files, "cursor": cursor}),
    ))
}

async fn sign(live: &LiveApp, target: &Target<'_>, req: Request<Incoming>) -> Answer {
    let storage = &live.capabilities.storage;
    let app = &*storage.app;
    let headers = req.headers().clone();
    let body: SignRequest = read_json(req, MAX_SIGN_BODY).await?;
    if body.expires_in == 0 || body.expires_in > MAX_EXPIRY_SECS {
        return Err(ApiError::new(
            ErrorCode::InvalidBody,
            format!("`expires_in` is 1 to {MAX_EXPIRY_SECS} seconds"),
        ));
    }
    let action = match body.method.as_str() {
        "GET" => Action::Read,
        "PUT" => {
            let exists = storage
                .files
                .head(app, &target.key())
                .await
                .map_err(storage_error)?
                .is_some();
            if exists {
                Action::Replace
            } else {
                Action::Upload
            }
        }
        _ => {
            return Err(ApiError::new(
                ErrorCode::InvalidBody,
                "`method` is \"GET\" or \"PUT\"",
            ));
        }
    };
    allow(live, target, action, &headers, Asked::File).await?;
    let url = storage
        .signed_url(
            &target.key(),
            &body.method,
            Duration::from_secs(body.expires_in),
        )
        .await
        .map_err(storage_error)?;
    Ok(json_value_response(
        StatusCode::OK,
        json!({"url": url, "method": body.method, "expires_at": now_secs() + body.expires_in}),
    ))
}
