//! Reading a JSON request body for the server's own endpoints: bounded in
//! size and in time, so a client cannot hold a task with a slow body, and
//! only when labelled `application/json`: a browser sends `text/plain`,
//! form and multipart bodies cross-site without a preflight, JSON never.

use std::time::Duration;

use http::Request;
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;

use crate::triggers::http::{ApiError, ErrorCode};

/// How long a body may take to arrive.
const READ_TIMEOUT: Duration = Duration::from_secs(30);

pub async fn read_json<T: serde::de::DeserializeOwned>(
    req: Request<Incoming>,
    max_bytes: usize,
) -> Result<T, ApiError> {
    if !is_json(req.headers().get(http::header::CONTENT_TYPE)) {
        return Err(ApiError::new(
            ErrorCode::UnsupportedMediaType,
            "the body must be sent with content-type: application/json",
        ));
    }
    let read = Limited::new(req.into_body(), max_bytes).collect();
    let bytes = tokio::time::timeout(READ_TIMEOUT, read)
        .await
        .map_err(|_| ApiError::new(ErrorCode::InvalidBody, "the body took too long to arrive"))?
        .map_err(|_| {
            ApiError::new(
                ErrorCode::InvalidBody,
                format!("the body is over {max_bytes} bytes or was cut off"),
            )
        })?
        .to_bytes();
    serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::new(ErrorCode::InvalidJson, format!("body: {e}")))
}

/// `application/json` or a `+json` type, parameters (`; charset=utf-8`) aside.
fn is_json(content_type: Option<&http::HeaderValue>) -> bool {
    let Some(value) = content_type.and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let essence = value
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || essence
            .strip_prefix("application/")
            .is_some_and(|subtype| subtype.ends_with("+json"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_json_media_types_are_json() {
        let json = |v: &str| is_json(Some(&http::HeaderValue::from_str(v).unwrap()));
        assert!(json("application/json"));
        assert!(json("Application/JSON; charset=utf-8"));
        assert!(json("application/merge-patch+json"));
        assert!(!json("text/plain"));
        assert!(!json("text/plain; application/json"));
        assert!(!json("application/x-www-form-urlencoded"));
        assert!(!json("multipart/form-data; boundary=x"));
        assert!(!is_json(None));
    }
}
