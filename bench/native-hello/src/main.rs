//! The physical limit for the HTTP benchmarks: native hyper, 2 workers,
//! keep-alive, no Nagle. `/json` serialises the same 50-element list as the
//! `json-work` component; `/static/NAME` reads NAME from the folder in
//! `NATIVE_STATIC_DIR` on every request (the storage benchmark's static
//! file); anything else answers like the plain hello.
//!
//! Usage: native-hello <port>

use std::convert::Infallible;

use bytes::Bytes;
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let port: u16 = std::env::args()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(8090);
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    println!("native listening on http://127.0.0.1:{port}");
    loop {
        let (stream, _) = listener.accept().await.unwrap();
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let _ = http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), service_fn(handle))
                .await;
        });
    }
}

async fn handle(req: Request<hyper::body::Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    if let Some(name) = req.uri().path().strip_prefix("/static/") {
        let dir = std::env::var("NATIVE_STATIC_DIR").unwrap_or_else(|_| ".".into());
        let found = match name.contains('/') || name.contains("..") {
            true => None,
            false => tokio::fs::read(std::path::Path::new(&dir).join(name))
                .await
                .ok(),
        };
        let mut response = match found {
            Some(bytes) => Response::new(Full::new(Bytes::from(bytes))),
            None => {
                let mut missing = Response::new(Full::new(Bytes::new()));
                *missing.status_mut() = hyper::StatusCode::NOT_FOUND;
                missing
            }
        };
        response.headers_mut().insert(
            hyper::header::CONTENT_TYPE,
            hyper::header::HeaderValue::from_static("text/plain"),
        );
        return Ok(response);
    }
    let body = if req.uri().path().starts_with("/json") {
        let items: Vec<_> = (0..50)
            .map(|i| serde_json::json!({"id": i, "name": format!("item {i}"), "price": i as f64 * 1.25, "tags": ["a", "b"]}))
            .collect();
        serde_json::to_vec(&items).unwrap()
    } else {
        format!("plain wasi:http says hi to Method::Get {}\n", req.uri()).into_bytes()
    };
    Ok(Response::new(Full::new(Bytes::from(body))))
}
