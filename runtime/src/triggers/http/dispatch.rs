//! One HTTP invocation: a fresh instance, the guest's handler, the limits.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tokio::time::Instant;
use wasmtime_wasi_http::WasiHttpView;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;

use super::body::{LimitedRequestBody, LimitedResponseBody, ResponseBody};
use super::error::error_response;
use super::{HttpApp, RouteMatch};
use crate::engine::logs::emit;
use crate::engine::quota::AppQuota;
use crate::engine::{Engine, InvocationState, is_pool_exhausted};

/// Headers the trigger sets for the guest; a client cannot set them.
pub(super) const KILN_HEADER_PREFIX: &str = "kiln-";

/// Handles one request for `app`. `path` is the app-relative path.
pub async fn handle(
    engine: &Engine,
    app: &HttpApp,
    path: &str,
    mut req: Request<Incoming>,
    request_id: &str,
) -> Response<ResponseBody> {
    let (function, pattern, params) = match app.router.route(req.method(), path) {
        RouteMatch::Found {
            function,
            pattern,
            params,
        } => (&app.functions[function], pattern, params),
        RouteMatch::NotFound => {
            return error_response(
                StatusCode::NOT_FOUND,
                "route_not_found",
                &format!("no route of app `{}` matches {}", app.app, path),
            );
        }
        RouteMatch::MethodNotAllowed { allow } => {
            let allow_list = allow
                .iter()
                .map(|m| m.as_str())
                .collect::<Vec<_>>()
                .join(", ");
            let mut resp = error_response(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                &format!(
                    "{} is not allowed on {path}; allowed: {allow_list}",
                    req.method()
                ),
            );
            if let Ok(value) = HeaderValue::from_str(&allow_list) {
                resp.headers_mut().insert(http::header::ALLOW, value);
            }
            return resp;
        }
    };
    let limits = function.limits;
    let declared_len = req
        .headers()
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared_len.is_some_and(|len| len > limits.max_request_body) {
        return body_too_large(limits.max_request_body);
    }

    let pre = match function.component.get().await {
        Ok(loaded) => match &loaded.http {
            Some(pre) => pre.clone(),
            // A deploy refuses a route to a function without the handler.
            None => {
                return error_response(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "no_http_handler",
                    &format!("function `{}` has no HTTP handler", function.name),
                );
            }
        },
        Err(message) => {
            tracing::error!(request_id, app = %app.app, function = %function.name, "cannot load the function: {message}");
            return error_response(
                StatusCode::SERVICE_UNAVAILABLE,
                "function_unavailable",
                &format!(
                    "function `{}` could not be loaded (request id {request_id}); see the server log",
                    function.name
                ),
            );
        }
    };
    let deadline = Instant::now() + limits.timeout;
    let admission = match function.admit(deadline).await {
        Ok(admission) => admission,
        Err(overloaded) => {
            return error_response(
                StatusCode::SERVICE_UNAVAILABLE,
                "overloaded",
                &format!("function `{}`: {overloaded}", function.name),
            );
        }
    };

    prepare_guest_request(&mut req, app, path, &pattern, &params, request_id);
    let exceeded = Arc::new(AtomicBool::new(false));
    let req =
        req.map(|body| LimitedRequestBody::new(body, limits.max_request_body, exceeded.clone()));

    let mut store = engine.new_store(function.invocation_context(
        request_id,
        &app.app,
        &app.function_names,
        &app.services,
    ));
    let (sender, receiver) = tokio::sync::oneshot::channel();
    let resources = store
        .data_mut()
        .http()
        .new_incoming_request(Scheme::Http, req)
        .and_then(|req| Ok((req, store.data_mut().http().new_response_outparam(sender)?)));
    let (guest_req, out) = match resources {
        Ok(r) => r,
        Err(err) => {
            return error_response(StatusCode::BAD_REQUEST, "bad_request", &format!("{err:#}"));
        }
    };

    // The guest keeps running after it sends the response head, to stream the
    // body; so it runs in its own task, bounded by the deadline.
    let quota = function.app_quota.clone();
    let task = tokio::spawn(async move {
        let outcome = tokio::time::timeout_at(deadline, async {
            let proxy = pre.instantiate_async(&mut store).await?;
            proxy
                .wasi_http_incoming_handler()
                .call_handle(&mut store, guest_req, out)
                .await
        })
        .await;
        log_guest_output(store.data(), &quota);
        drop(admission);
        match outcome {
            Ok(Ok(())) => GuestOutcome::Returned,
            Ok(Err(err)) if is_pool_exhausted(&err) => GuestOutcome::PoolExhausted,
            Ok(Err(trap)) => GuestOutcome::Trapped(trap),
            Err(_) => GuestOutcome::TimedOut,
        }
    });

    let started = match receiver.await {
        // The guest answered after reading past the limit: its answer is about a cut-off body.
        Ok(Ok(_)) if exceeded.load(Ordering::Relaxed) => {
            return body_too_large(limits.max_request_body);
        }
        Ok(Ok(resp)) => resp,
        Ok(Err(code)) => {
            tracing::warn!(request_id, "function answered with an error: {code:?}");
            return error_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                "function_error",
                &format!("the function failed: {code:?}"),
            );
        }
        Err(_) => {
            let outcome = task
                .await
                .unwrap_or_else(|join| GuestOutcome::Trapped(join.into()));
            return failed_before_response(outcome, &exceeded, &limits, request_id);
        }
    };

    let limit = limits.max_response_body;
    let log_id = request_id.to_string();
    let (mut parts, body) = started.into_parts();
    parts.headers.insert(
        "kiln-request-id",
        HeaderValue::from_str(request_id).expect("hex id"),
    );
    let body = LimitedResponseBody::new(body, limit, move || {
        tracing::warn!(request_id = %log_id, limit, "response body over the function's limit: cut off");
    });
    Response::from_parts(parts, body.boxed_unsync())
}

enum GuestOutcome {
    Returned,
    Trapped(wasmtime::Error),
    TimedOut,
    /// Every pooling slot of the server was taken.
    PoolExhausted,
}

fn failed_before_response(
    outcome: GuestOutcome,
    request_body_exceeded: &AtomicBool,
    limits: &crate::engine::Limits,
    request_id: &str,
) -> Response<ResponseBody> {
    if request_body_exceeded.load(Ordering::Relaxed) {
        return body_too_large(limits.max_request_body);
    }
    match outcome {
        GuestOutcome::TimedOut => {
            tracing::warn!(request_id, timeout = ?limits.timeout, "function timed out");
            error_response(
                StatusCode::GATEWAY_TIMEOUT,
                "timeout",
                &format!("the function did not answer within {:?}", limits.timeout),
            )
        }
        GuestOutcome::Trapped(trap) => {
            tracing::warn!(request_id, "function trapped: {trap:#}");
            error_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                "function_trapped",
                &format!("the function failed (request id {request_id}); see the server log"),
            )
        }
        GuestOutcome::PoolExhausted => {
            tracing::warn!(request_id, "no free instance slot on the server");
            error_response(
                StatusCode::SERVICE_UNAVAILABLE,
                "overloaded",
                "the server has no free instance slot; try again shortly",
            )
        }
        GuestOutcome::Returned => error_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            "no_response",
            "the function returned without sending a response",
        ),
    }
}

fn body_too_large(limit: u64) -> Response<ResponseBody> {
    error_response(
        StatusCode::PAYLOAD_TOO_LARGE,
        "request_body_too_large",
        &format!("the request body is over the function's limit of {limit} bytes"),
    )
}

/// Rewrites the request as the guest sees it: the app-relative path, and
/// `kiln-*` headers with the route's details (a client's own are dropped).
fn prepare_guest_request<B>(
    req: &mut Request<B>,
    app: &HttpApp,
    path: &str,
    pattern: &str,
    params: &[(String, String)],
    request_id: &str,
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
    let encoded_params = params
        .iter()
        .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
        .collect::<Vec<_>>()
        .join("&");
    for (name, value) in [
        ("kiln-app", app.app.as_ref()),
        ("kiln-route", pattern),
        ("kiln-params", &encoded_params),
        ("kiln-request-id", request_id),
    ] {
        if let Ok(value) = HeaderValue::from_str(value) {
            headers.insert(name, value);
        }
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

fn log_guest_output(state: &InvocationState, quota: &AppQuota) {
    for (stream, capture) in [("stdout", &state.stdout), ("stderr", &state.stderr)] {
        let (text, dropped) = capture.take();
        emit(&state.context, quota, stream, &text, dropped);
    }
}
