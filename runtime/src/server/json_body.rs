//! Reading a JSON request body for the server's own endpoints: bounded in
//! size and in time, so a client cannot hold a task with a slow body.

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
