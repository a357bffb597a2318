//! The app's files from a function (`kiln_sdk::storage`):
//!
//! - `PUT /files/*key` stores the body (its `Content-Type` kept);
//!   `GET /files/*key` returns it; `DELETE /files/*key` deletes it;
//!   `GET /meta/*key` is its metadata;
//! - `GET /list?prefix=&cursor=&limit=`: one page of keys;
//! - `POST /copy?from=&to=`;
//! - `POST /generate/*key?mib=N[&max=BYTES]` streams N MiB of generated
//!   bytes into the file, and `GET /digest/*key[?start=&end=]` streams it
//!   back and answers its SHA-256: neither holds the file in memory;
//! - `POST /abandon/*key` writes a little and drops the writer unfinished;
//! - `POST /sign/*key?method=GET|PUT&expires=SECS`: a signed URL for a
//!   client without a token.
//!
//! Storage errors are JSON with the error's kind as `code`.

use std::io::{Read, Write};

use kiln_sdk::http::{Request, Response};
use kiln_sdk::storage::{self, Error, FileMeta, WriteOptions};
use serde_json::json;
use sha2::{Digest, Sha256};

fn handle(req: Request) -> Response {
    let key = req.param("key").map(str::to_string).unwrap_or_default();
    let route = req
        .path()
        .trim_start_matches('/')
        .split('/')
        .next()
        .unwrap_or("");
    let result = match (req.method(), route) {
        ("PUT", "files") => storage::put(&key, req.body(), req.header("content-type")).map(meta),
        ("GET", "files") => storage::get(&key).map(|bytes| Response::new(200).with_body(bytes)),
        ("DELETE", "files") => {
            storage::delete(&key).map(|d| Response::json(&json!({"deleted": d})))
        }
        ("GET", "meta") => storage::head(&key).map(|m| match m {
            Some(m) => meta(m),
            None => Response::error(404, "not_found", "no such file"),
        }),
        ("GET", "list") => list(&req),
        ("POST", "copy") => storage::copy(
            &req.query_param("from").unwrap_or_default(),
            &req.query_param("to").unwrap_or_default(),
        )
        .map(meta),
        ("POST", "generate") => generate(&req, &key),
        ("GET", "digest") => digest(&req, &key),
        ("POST", "abandon") => abandon(&key),
        ("POST", "sign") => storage::signed_url(
            &key,
            &req.query_param("method").unwrap_or_else(|| "GET".into()),
            req.query_param("expires")
                .and_then(|e| e.parse().ok())
                .unwrap_or(60),
        )
        .map(|url| Response::json(&json!({"url": url}))),
        _ => Ok(Response::error(404, "no_route", "not a files operation")),
    };
    result.unwrap_or_else(error)
}

fn meta(m: FileMeta) -> Response {
    Response::json(&json!({
        "key": m.key, "size": m.size, "content_type": m.content_type,
        "etag": m.etag, "modified_ms": m.modified_ms,
    }))
}

fn error(err: Error) -> Response {
    let (status, code, message) = match err {
        Error::NotFound(m) => (404, "not-found", m),
        Error::Conflict(m) => (409, "conflict", m),
        Error::InvalidInput(m) => (400, "invalid-input", m),
        Error::PermissionDenied(m) => (403, "permission-denied", m),
        Error::LimitExceeded(m) => (413, "limit-exceeded", m),
        Error::Unavailable(m) => (503, "unavailable", m),
    };
    Response::error(status, code, &message)
}

fn list(req: &Request) -> Result<Response, Error> {
    let limit = req
        .query_param("limit")
        .and_then(|l| l.parse().ok())
        .unwrap_or(100);
    let page = storage::list(
        &req.query_param("prefix").unwrap_or_default(),
        req.query_param("cursor").as_deref(),
        limit,
    )?;
    let keys: Vec<&str> = page.files.iter().map(|f| f.key.as_str()).collect();
    Ok(Response::json(
        &json!({"keys": keys, "cursor": page.cursor}),
    ))
}

/// The byte at `offset` of a generated file.
fn pattern(offset: u64) -> u8 {
    (offset % 251) as u8
}

fn generate(req: &Request, key: &str) -> Result<Response, Error> {
    let mib: u64 = req
        .query_param("mib")
        .and_then(|m| m.parse().ok())
        .unwrap_or(1);
    let max_bytes = req.query_param("max").and_then(|m| m.parse().ok());
    let mut writer = storage::write(
        key,
        WriteOptions {
            content_type: Some("application/octet-stream"),
            max_bytes,
            ..WriteOptions::default()
        },
    )?;
    let mut chunk = vec![0u8; 64 * 1024];
    let mut offset = 0u64;
    while offset < mib * 1024 * 1024 {
        for (i, byte) in chunk.iter_mut().enumerate() {
            *byte = pattern(offset + i as u64);
        }
        if let Err(err) = writer.write_all(&chunk) {
            // The host stopped reading: `finish` says why.
            eprintln!("files: write stopped at {offset}: {err}");
            break;
        }
        offset += chunk.len() as u64;
    }
    writer.finish().map(meta)
}

fn digest(req: &Request, key: &str) -> Result<Response, Error> {
    let range = req
        .query_param("start")
        .zip(req.query_param("end"))
        .and_then(|(s, e)| Some((s.parse().ok()?, e.parse().ok()?)));
    let (_, mut reader) = match range {
        Some((start, end)) => storage::read_range(key, start, end)?,
        None => storage::read(key)?,
    };
    let mut hash = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut bytes = 0u64;
    loop {
        let n = reader
            .read(&mut buf)
            .map_err(|e| Error::Unavailable(e.to_string()))?;
        if n == 0 {
            break;
        }
        hash.update(&buf[..n]);
        bytes += n as u64;
    }
    let hex: String = hash.finalize().iter().map(|b| format!("{b:02x}")).collect();
    Ok(Response::json(&json!({"sha256": hex, "bytes": bytes})))
}

fn abandon(key: &str) -> Result<Response, Error> {
    let mut writer = storage::write(key, WriteOptions::default())?;
    let _ = writer.write_all(b"never finished");
    drop(writer);
    Ok(Response::json(&json!({"abandoned": key})))
}

kiln_sdk::http_function!(handle);
