//! Asking one of an app's functions for a decision: the host sends its HTTP
//! handler a made-up `POST` with a JSON question and reads a JSON answer
//! of at most [`MAX_ANSWER_BYTES`], within the function's own timeout and
//! concurrency (so the asking counts against the app). Bucket rules of the
//! `function:` kind use it.

use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Request, header};
use http_body_util::{BodyExt, Full, Limited};
use serde_json::Value;

use super::entry::{Handled, call_handler};
use crate::capabilities::auth::Identity;
use crate::invocation::{App, Outcome};

/// The path the function sees a question on.
pub const ASK_PATH: &str = "/_kiln/decide";
/// Largest answer read.
pub const MAX_ANSWER_BYTES: usize = 16 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum AskError {
    #[error("the app has no function `{0}`")]
    NoFunction(String),
    /// The function trapped, timed out, was overloaded, or answered other
    /// than 200 with JSON.
    #[error("{0}")]
    Failed(String),
}

/// Asks `function` of `app` `question`, as `identity` (which the function
/// reads as its caller); `purpose` is the `kiln-trigger` header it sees.
pub async fn ask(
    app: &App,
    function: &str,
    purpose: &'static str,
    question: &Value,
    identity: Option<Identity>,
    request_id: &Arc<str>,
) -> Result<Value, AskError> {
    let function = app
        .function(function)
        .ok_or_else(|| AskError::NoFunction(function.to_string()))?
        .clone();
    let failed = |what: String| AskError::Failed(format!("function `{}` {what}", function.name));
    let trigger_headers: Vec<(HeaderName, HeaderValue)> = [
        ("kiln-app", &*app.name),
        ("kiln-trigger", purpose),
        ("kiln-request-id", &**request_id),
    ]
    .into_iter()
    .filter_map(|(name, value)| {
        Some((
            HeaderName::from_static(name),
            HeaderValue::from_str(value).ok()?,
        ))
    })
    .collect();
    let body = Full::new(Bytes::from(question.to_string()))
        .map_err(|never| -> wasmtime_wasi_http::Error { match never {} });
    let mut request = Request::post(format!("http://localhost{ASK_PATH}"))
        .header(header::HOST, "localhost")
        .header(header::CONTENT_TYPE, "application/json")
        .body(body)
        .map_err(|e| failed(format!("could not be asked: {e}")))?;
    request
        .headers_mut()
        .extend(trigger_headers.iter().cloned());
    let timeout = function.limits.timeout;
    let answer = match call_handler(
        function.clone(),
        request_id,
        trigger_headers,
        identity,
        request,
    )
    .await
    {
        Handled::Answered(answer) => answer,
        Handled::Refused(code) => return Err(failed(format!("answered with an error: {code:?}"))),
        Handled::Ended(outcome) => {
            return Err(failed(match outcome {
                Outcome::TimedOut(t) => format!("did not answer within {t:?}"),
                Outcome::Trapped(trap) => format!("trapped: {trap:#}"),
                Outcome::Overloaded(o) => format!("was not run: {o}"),
                Outcome::Unavailable(m) => format!("was not run: {m}"),
                Outcome::Returned(()) => "returned without answering".to_string(),
            }));
        }
    };
    let status = answer.status();
    // The body streams while the guest runs; the function's timeout bounds it.
    let read = Limited::new(answer.into_body(), MAX_ANSWER_BYTES).collect();
    let bytes = tokio::time::timeout(timeout, read)
        .await
        .map_err(|_| failed(format!("did not finish its answer within {timeout:?}")))?
        .map_err(|e| {
            failed(format!(
                "sent an answer that was cut off or over {MAX_ANSWER_BYTES} bytes: {e}"
            ))
        })?
        .to_bytes();
    if status != http::StatusCode::OK {
        return Err(failed(format!("answered {status}")));
    }
    serde_json::from_slice(&bytes).map_err(|e| failed(format!("answered other than JSON: {e}")))
}
