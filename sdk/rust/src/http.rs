//! HTTP handlers: a buffered [`Request`] in, a [`Response`] out.
//!
//! [`http_function!`](crate::http_function) exports a plain function as the
//! component's `wasi:http/incoming-handler`. For streaming, use
//! [`raw_http_function!`](crate::raw_http_function) and the wasi:http
//! bindings in [`crate::bindings`].

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::bindings::wasi::http::types::{
    Fields, IncomingRequest, Method, OutgoingBody, OutgoingResponse, ResponseOutparam,
};
use crate::bindings::wasi::io::streams::StreamError;

/// Largest chunk `blocking-write-and-flush` takes.
const WRITE_CHUNK: usize = 4096;

/// A request, with its body read in full.
pub struct Request {
    method: String,
    path: String,
    query: String,
    headers: Vec<(String, Vec<u8>)>,
    params: Vec<(String, String)>,
    body: Vec<u8>,
}

/// Why a request body could not be used as asked.
#[derive(Debug)]
pub enum BodyError {
    /// The body is not valid JSON of the expected shape.
    Json(serde_json::Error),
    /// The body is not UTF-8.
    Utf8(std::str::Utf8Error),
}

impl std::fmt::Display for BodyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BodyError::Json(e) => write!(f, "invalid JSON body: {e}"),
            BodyError::Utf8(e) => write!(f, "body is not UTF-8: {e}"),
        }
    }
}

impl std::error::Error for BodyError {}

impl Request {
    /// Reads the guest's incoming request, body included.
    pub fn from_incoming(req: IncomingRequest) -> Result<Self, StreamError> {
        let method = method_name(&req.method());
        let path_with_query = req.path_with_query().unwrap_or_else(|| "/".into());
        let (path, query) = match path_with_query.split_once('?') {
            Some((p, q)) => (p.to_string(), q.to_string()),
            None => (path_with_query, String::new()),
        };
        let headers = req.headers().entries();
        let params = headers
            .iter()
            .find(|(k, _)| k == "kiln-params")
            .map(|(_, v)| parse_pairs(&String::from_utf8_lossy(v)))
            .unwrap_or_default();
        let mut body = Vec::new();
        if let Ok(incoming) = req.consume()
            && let Ok(stream) = incoming.stream()
        {
            loop {
                match stream.blocking_read(64 * 1024) {
                    Ok(chunk) => body.extend_from_slice(&chunk),
                    Err(StreamError::Closed) => break,
                    Err(err) => return Err(err),
                }
            }
        }
        Ok(Request {
            method,
            path,
            query,
            headers,
            params,
            body,
        })
    }

    /// `GET`, `POST`, ...
    pub fn method(&self) -> &str {
        &self.method
    }

    /// The path within the app (`/hello/world`), without the query.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The raw query string, without `?`.
    pub fn query(&self) -> &str {
        &self.query
    }

    /// A query parameter, percent-decoded.
    pub fn query_param(&self, name: &str) -> Option<String> {
        parse_pairs(&self.query)
            .into_iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v)
    }

    /// A route parameter: `name` for `/hello/:name`, `rest` for `/files/*rest`.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The first value of a header (names are case-insensitive), as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .and_then(|(_, v)| std::str::from_utf8(v).ok())
    }

    pub fn body(&self) -> &[u8] {
        &self.body
    }

    pub fn text(&self) -> Result<&str, BodyError> {
        std::str::from_utf8(&self.body).map_err(BodyError::Utf8)
    }

    /// The body parsed as JSON.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, BodyError> {
        serde_json::from_slice(&self.body).map_err(BodyError::Json)
    }
}

/// A response, built with chained calls.
pub struct Response {
    status: u16,
    headers: Vec<(String, Vec<u8>)>,
    body: Vec<u8>,
}

impl Response {
    /// An empty response with this status.
    pub fn new(status: u16) -> Self {
        Response {
            status,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    /// 200 with a JSON body.
    pub fn json<T: Serialize + ?Sized>(value: &T) -> Self {
        match serde_json::to_vec(value) {
            Ok(body) => Response::new(200)
                .with_header("content-type", "application/json")
                .with_body(body),
            Err(err) => Response::error(500, "serialization", &err.to_string()),
        }
    }

    /// 200 with a text body.
    pub fn text(text: impl Into<String>) -> Self {
        Response::new(200)
            .with_header("content-type", "text/plain; charset=utf-8")
            .with_body(text.into().into_bytes())
    }

    /// A JSON error in Kiln's shape: `{"error": {"code", "message"}}`.
    pub fn error(status: u16, code: &str, message: &str) -> Self {
        let body = serde_json::json!({ "error": { "code": code, "message": message } });
        Response::new(status)
            .with_header("content-type", "application/json")
            .with_body(body.to_string().into_bytes())
    }

    pub fn with_status(mut self, status: u16) -> Self {
        self.status = status;
        self
    }

    pub fn with_header(mut self, name: &str, value: &str) -> Self {
        self.headers
            .push((name.to_string(), value.as_bytes().to_vec()));
        self
    }

    pub fn with_body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }

    /// Sends the response through the outparam.
    pub fn send(self, out: ResponseOutparam) {
        let headers = match Fields::from_list(&self.headers) {
            Ok(h) => h,
            Err(_) => {
                return Response::error(
                    500,
                    "invalid_header",
                    "the function set an invalid header",
                )
                .send(out);
            }
        };
        let response = OutgoingResponse::new(headers);
        let _ = response.set_status_code(self.status);
        let body = response.body().expect("a new response has a body");
        ResponseOutparam::set(out, Ok(response));
        let stream = body.write().expect("a new body has a stream");
        for chunk in self.body.chunks(WRITE_CHUNK) {
            if stream.blocking_write_and_flush(chunk).is_err() {
                return; // The client went away.
            }
        }
        drop(stream);
        let _ = OutgoingBody::finish(body, None);
    }
}

/// Runs a buffered handler for one request. Used by [`http_function!`](crate::http_function).
#[doc(hidden)]
pub fn dispatch(
    req: IncomingRequest,
    out: ResponseOutparam,
    handler: fn(Request) -> Response,
    hooks: crate::hooks::Hooks,
) {
    match Request::from_incoming(req) {
        Ok(req) => match hooks.answer(&req) {
            Some(answer) => answer.send(out),
            None => handler(req).send(out),
        },
        Err(_) => Response::error(
            400,
            "bad_request_body",
            "the request body could not be read",
        )
        .send(out),
    }
}

fn method_name(method: &Method) -> String {
    match method {
        Method::Get => "GET".into(),
        Method::Head => "HEAD".into(),
        Method::Post => "POST".into(),
        Method::Put => "PUT".into(),
        Method::Delete => "DELETE".into(),
        Method::Connect => "CONNECT".into(),
        Method::Options => "OPTIONS".into(),
        Method::Trace => "TRACE".into(),
        Method::Patch => "PATCH".into(),
        Method::Other(other) => other.clone(),
    }
}

/// `a=1&b=x%20y` into pairs, percent-decoded (`+` is a space).
fn parse_pairs(s: &str) -> Vec<(String, String)> {
    s.split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (decode(k), decode(v))
        })
        .collect()
}

fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => match (
                bytes.get(i + 1).and_then(hex),
                bytes.get(i + 2).and_then(hex),
            ) {
                (Some(hi), Some(lo)) => {
                    out.push(hi << 4 | lo);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex(b: &u8) -> Option<u8> {
    (*b as char).to_digit(16).map(|d| d as u8)
}

/// Exports `fn(Request) -> Response` as the component's HTTP handler, and
/// optionally a collection's write hooks (see [`crate::hooks`]):
/// `http_function!(handle, before_write = before, after_write = after)`.
#[macro_export]
macro_rules! http_function {
    ($handler:path $(, before_write = $before:path)? $(, after_write = $after:path)? $(,)?) => {
        struct __KilnHttpFunction;
        impl $crate::bindings::exports::wasi::http::incoming_handler::Guest for __KilnHttpFunction {
            fn handle(
                request: $crate::bindings::wasi::http::types::IncomingRequest,
                out: $crate::bindings::wasi::http::types::ResponseOutparam,
            ) {
                #[allow(unused_mut)]
                let mut hooks = $crate::hooks::Hooks::default();
                $(hooks.before_write = Some($before);)?
                $(hooks.after_write = Some($after);)?
                $crate::http::dispatch(request, out, $handler, hooks)
            }
        }
        $crate::bindings::__export_http_function!(__KilnHttpFunction with_types_in $crate::bindings);
    };
}

/// Exports `fn(IncomingRequest, ResponseOutparam)` as the component's HTTP
/// handler, for functions that stream.
#[macro_export]
macro_rules! raw_http_function {
    ($handler:path) => {
        struct __KilnRawHttpFunction;
        impl $crate::bindings::exports::wasi::http::incoming_handler::Guest for __KilnRawHttpFunction {
            fn handle(
                request: $crate::bindings::wasi::http::types::IncomingRequest,
                out: $crate::bindings::wasi::http::types::ResponseOutparam,
            ) {
                $handler(request, out)
            }
        }
        $crate::bindings::__export_http_function!(__KilnRawHttpFunction with_types_in $crate::bindings);
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_query_pairs() {
        assert_eq!(
            parse_pairs("a=1&b=x%20y&c=%2&d=+&e"),
            vec![
                ("a".into(), "1".into()),
                ("b".into(), "x y".into()),
                ("c".into(), "%2".into()),
                ("d".into(), " ".into()),
                ("e".into(), "".into()),
            ]
        );
    }
}
