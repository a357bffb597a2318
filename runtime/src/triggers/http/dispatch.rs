//! One HTTP request: route it, hand it to the invocation core, translate
//! the outcome into a response.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use http::{HeaderName, HeaderValue, Request, Response};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use super::auth::{check, identify};
use super::body::{LimitedRequestBody, LimitedResponseBody, ResponseBody};
use super::entry::{Handled, call_handler};
use super::error::{ApiError, ErrorCode};
use super::{BodyLimits, HttpRoutes, KILN_HEADER_PREFIX, PLATFORM_PREFIX, RouteMatch, RouteTarget};
use crate::access::Rule;
use crate::invocation::{App, Outcome, Overloaded};

/// Handles one request for `app`; `path` is the app-relative path, outside
/// the platform's namespace (the server routes that).
pub async fn handle(
    app: &App,
    routes: &HttpRoutes,
    path: &str,
    mut req: Request<Incoming>,
    request_id: &Arc<str>,
) -> Result<Response<ResponseBody>, ApiError> {
    let Routed {
        target,
        pattern,
        params,
    } = route(app, routes, req.method(), path)?;
    let RouteTarget {
        function: index,
        policy,
    } = &routes.targets[target];
    // On a public route a token that does not verify is not Kiln's to
    // refuse: the function sees no caller, and the header as sent (a
    // component checking its own bearer tokens keeps working).
    let identity = match identify(&routes.auth, req.headers()).await {
        Ok(identity) => identity,
        Err(_) if matches!(policy, Rule::Public) => None,
        Err(refused) => return Err(refused),
    };
    check(&app.name, policy, identity.as_ref())?;
    let index = *index;
    let function = app.functions[index].clone();
    let name = function.name.clone();
    let limits = routes.body_limits[index];
    let declared_len = req
        .headers()
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared_len.is_some_and(|len| len > limits.max_request_body) {
        return Err(body_too_large(&limits));
    }
    let has_host = req.uri().authority().is_some()
        || req
            .headers()
            .get(http::header::HOST)
            .is_some_and(|h| h.to_str().is_ok());
    if !has_host {
        return Err(ApiError::new(
            ErrorCode::BadRequest,
            "the request has no readable Host header",
        ));
    }

    let params = decode_params(params)?;
    let trigger_headers = guest_headers(&app.name, &pattern, &params, request_id);
    prepare_guest_request(&mut req, path, &trigger_headers);
    let exceeded = Arc::new(AtomicBool::new(false));
    let request =
        req.map(|body| LimitedRequestBody::new(body, limits.max_request_body, exceeded.clone()));
    let started = match call_handler(function, request_id, trigger_headers, identity, request).await
    {
        // The guest answered after reading past the limit: its answer is about a cut-off body.
        Handled::Answered(_) if exceeded.load(Ordering::Relaxed) => {
            return Err(body_too_large(&limits));
        }
        Handled::Answered(resp) => resp,
        Handled::Refused(code) => {
            tracing::warn!(%request_id, "function answered with an error: {code:?}");
            return Err(ApiError::new(
                ErrorCode::FunctionError,
                format!("the function failed: {code:?}"),
            ));
        }
        Handled::Ended(outcome) => {
            if exceeded.load(Ordering::Relaxed) {
                return Err(body_too_large(&limits));
            }
            return Err(failed_before_response(outcome, &name, request_id));
        }
    };
    let limit = limits.max_response_body;
    let log_id = request_id.clone();
    let (parts, body) = started.into_parts();
    let body = LimitedResponseBody::new(body, limit, move || {
        tracing::warn!(request_id = %log_id, limit, "response body over the function's limit: cut off");
    });
    Ok(Response::from_parts(parts, body.boxed_unsync()))
}

/// Whether an app-relative path is in the platform's namespace.
pub fn is_platform_path(path: &str) -> bool {
    path.strip_prefix(PLATFORM_PREFIX)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// A request's route.
struct Routed {
    /// The route's index in the manifest.
    target: usize,
    pattern: String,
    params: Vec<(String, String)>,
}

fn route(
    app: &App,
    routes: &HttpRoutes,
    method: &http::Method,
    path: &str,
) -> Result<Routed, ApiError> {
    match routes.router.route(method, path) {
        RouteMatch::Found {
            target,
            pattern,
            params,
        } => Ok(Routed {
            target,
            pattern,
            params,
        }),
        RouteMatch::NotFound => Err(ApiError::new(
            ErrorCode::RouteNotFound,
            format!("no route of app `{}` matches {path}", app.name),
        )),
        RouteMatch::MethodNotAllowed { allow } => {
            let allow_list = allow
                .iter()
                .map(|m| m.as_str())
                .collect::<Vec<_>>()
                .join(", ");
            let error = ApiError::new(
                ErrorCode::MethodNotAllowed,
                format!("{method} is not allowed on {path}; allowed: {allow_list}"),
            );
            Err(match HeaderValue::from_str(&allow_list) {
                Ok(value) => error.with_header(http::header::ALLOW, value),
                Err(_) => error,
            })
        }
    }
}

/// The error for an invocation that ended before the guest sent a response.
fn failed_before_response(outcome: Outcome<()>, function: &str, request_id: &str) -> ApiError {
    match outcome {
        Outcome::TimedOut(timeout) => {
            tracing::warn!(request_id, ?timeout, "function timed out");
            ApiError::new(
                ErrorCode::Timeout,
                format!("the function did not answer within {timeout:?}"),
            )
        }
        Outcome::Trapped(trap) => {
            tracing::warn!(request_id, "function trapped: {trap:#}");
            ApiError::new(
                ErrorCode::FunctionTrapped,
                format!("the function failed (request id {request_id}); see the server log"),
            )
        }
        Outcome::Overloaded(Overloaded::Server) => {
            tracing::warn!(request_id, "no free instance slot on the server");
            ApiError::new(
                ErrorCode::Overloaded,
                "the server has no free instance slot; try again shortly",
            )
        }
        Outcome::Overloaded(overloaded) => {
            ApiError::new(ErrorCode::Overloaded, overloaded.to_string())
        }
        // The detail is in the server log (the invocation core wrote it).
        Outcome::Unavailable(_) => ApiError::new(
            ErrorCode::FunctionUnavailable,
            format!(
                "function `{function}` could not be loaded (request id {request_id}); see the server log"
            ),
        ),
        Outcome::Returned(()) => ApiError::new(
            ErrorCode::NoResponse,
            "the function returned without sending a response",
        ),
    }
}

fn body_too_large(limits: &BodyLimits) -> ApiError {
    ApiError::new(
        ErrorCode::RequestBodyTooLarge,
        format!(
            "the request body is over the function's limit of {} bytes",
            limits.max_request_body
        ),
    )
}

/// The `kiln-*` headers the guest sees: the route's details.
fn guest_headers(
    app: &str,
    pattern: &str,
    params: &[(String, String)],
    request_id: &str,
) -> Vec<(HeaderName, HeaderValue)> {
    let encoded_params = params
        .iter()
        .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
        .collect::<Vec<_>>()
        .join("&");
    [
        ("kiln-app", app),
        ("kiln-route", pattern),
        ("kiln-params", &encoded_params),
        ("kiln-request-id", request_id),
    ]
    .into_iter()
    .filter_map(|(name, value)| {
        Some((
            HeaderName::from_static(name),
            HeaderValue::from_str(value).ok()?,
        ))
    })
    .collect()
}

/// Rewrites the request as the guest sees it: the app-relative path, and
/// the trigger's `kiln-*` headers (a client's own are dropped).
fn prepare_guest_request<B>(
    req: &mut Request<B>,
    path: &str,
    trigger_headers: &[(HeaderName, HeaderValue)],
) {
    let headers = req.headers_mut();
    let spoofed: Vec<_> = headers
        .keys()
        .filter(|k| k.as_str().starts_with(KILN_HEADER_PREFIX))
        .cloned()
        .collect();
    for name in spoofed {
        headers.remove(name);
    }
    for (name, value) in trigger_headers {
        headers.insert(name.clone(), value.clone());
    }
    let mut uri = req.uri().clone().into_parts();
    let path_and_query = match req.uri().query() {
        Some(q) => format!("{path}?{q}"),
        None => path.to_string(),
    };
    uri.path_and_query = path_and_query.parse().ok();
    if let Ok(new_uri) = http::Uri::from_parts(uri) {
        *req.uri_mut() = new_uri;
    }
}

/// Route parameters as the function sees them: percent-decoded once, as
/// Express and Workers routers do (`/files/a%20b` gives `a b`); one that is
/// not UTF-8 once decoded is refused rather than altered.
fn decode_params(params: Vec<(String, String)>) -> Result<Vec<(String, String)>, ApiError> {
    params
        .into_iter()
        .map(|(name, raw)| {
            let value = percent_encoding::percent_decode_str(&raw)
                .decode_utf8()
                .map_err(|_| {
                    ApiError::new(
                        ErrorCode::BadRequest,
                        format!("route parameter `{name}` is not UTF-8 once percent-decoded"),
                    )
                })?
                .into_owned();
            Ok((name, value))
        })
        .collect()
}

/// Percent-encodes everything but unreserved characters.
fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
