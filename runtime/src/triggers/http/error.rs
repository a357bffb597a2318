//! JSON responses of the server itself; errors are
//! `{"error": {"code": "...", "message": "..."}}`.

use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::{BodyExt, Full};
use serde_json::{Value, json};

use super::ResponseBody;

/// A JSON error response with a stable `code` a client can match on.
pub fn error_response(status: StatusCode, code: &str, message: &str) -> Response<ResponseBody> {
    json_response(
        status,
        json!({ "error": { "code": code, "message": message } }),
    )
}

pub fn json_response(status: StatusCode, body: Value) -> Response<ResponseBody> {
    Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(
            Full::new(Bytes::from(body.to_string()))
                .map_err(|never| match never {})
                .boxed_unsync(),
        )
        .expect("a JSON response is valid")
}
