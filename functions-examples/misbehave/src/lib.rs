//! Misbehaves on purpose, per path:
//! - `/spin`: loops forever;
//! - `/alloc/:mb`: allocates (and touches) that many MiB;
//! - `/trap`: panics;
//! - `/flood`: streams a response body forever;
//! - `/silent`: returns without sending a response;
//! - `/env`: answers its environment variables as JSON;
//! - `/escape`: tries the filesystem and the network, answers what happened;
//! - `/incr`: adds 1 to a counter document (upserted) and answers it;
//! - `/db-errors`: feeds the database bad input, answers each error's kind;
//! - `/global`: adds 1 to a global counter and keeps a 3 MiB heap buffer in a
//!   global list; answers both counts (`1 1` in a fresh instance);
//! - `/cron-runs`: the documents the scheduled handler recorded (below);
//! - `/db-raw` (POST): one database call described by the JSON body, for
//!   the containment tests (`{"op": "update", "collection": ..., ...}`);
//!   answers `{"ok": result}` or `{"error": kind, "message": ...}`;
//! - `/log-lines/:n`: writes `n` empty lines to stdout;
//! - `/schedule-many/:n`: schedules `n` one-off jobs of `?fn=`, due at the
//!   epoch (`?when=now`: now; `?when=MS`: at MS since the epoch), with the
//!   payload `{"do": "record"}` (`?sleep_ms=N`: `{"do": "sleep", "ms": N}`);
//! - `/fetch?URL`: a GET to URL over outbound HTTP; answers the status or
//!   the error;
//! - `/forward?URL`: the same GET as a transparent proxy would send it: with
//!   the `kiln-*` headers the request came with, and `kiln-note` set by the
//!   function itself;
//! - `/drip`: streams 4 KiB every 10 ms until stopped; `/trap-mid-body`
//!   traps after 64 KiB of it;
//! - `/ok`: answers 200.

use kiln_sdk::bindings::wasi::http::types::{IncomingRequest, ResponseOutparam};
use kiln_sdk::http::{Request, Response};

fn handle(req: IncomingRequest, out: ResponseOutparam) {
    let req = match Request::from_incoming(req) {
        Ok(req) => req,
        Err(_) => return Response::error(400, "bad_body", "unreadable body").send(out),
    };
    let path = req.path().to_string();
    match path.split('/').nth(1).unwrap_or("") {
        "spin" => {
            let mut n: u64 = 0;
            loop {
                n = std::hint::black_box(n.wrapping_add(1));
            }
        }
        "alloc" => {
            let mb: usize = path
                .split('/')
                .nth(2)
                .and_then(|m| m.parse().ok())
                .unwrap_or(1);
            let block = vec![1u8; mb * 1024 * 1024];
            let sum: u64 = block.iter().step_by(4096).map(|b| *b as u64).sum();
            Response::json(&format!("allocated {mb} MiB ({sum} pages)")).send(out)
        }
        "trap" => panic!("misbehave: trapping on purpose"),
        "cron-runs" => {
            use kiln_sdk::bindings::kiln::platform::database as wit;
            let options = wit::FindOptions {
                sort: Some(r#"{"scheduled_ms": 1}"#.into()),
                projection: None,
                skip: None,
                limit: Some(1000),
                batch_size: None,
                cursor: None,
            };
            match wit::find("cron_runs", "{}", &options) {
                Ok(page) => Response::text(format!("[{}]", page.documents.join(","))).send(out),
                Err(e) => Response::error(500, "db", &format!("{e:?}")).send(out),
            }
        }
        "flood" => flood(out),
        "drip" => drip(out, false),
        "trap-mid-body" => drip(out, true),
        "silent" => drop(out),
        "env" => Response::json(&std::env::vars().collect::<Vec<_>>()).send(out),
        "escape" => Response::json(&escape_attempts(req.query())).send(out),
        "incr" => {
            use kiln_sdk::bindings::kiln::platform::database as wit;
            match wit::find_one_and_update(
                "counters",
                r#"{"_id": "c"}"#,
                r#"{"$inc": {"n": 1}}"#,
                true,
                true,
            ) {
                Ok(Some(doc)) => Response::text(doc).send(out),
                Ok(None) => Response::error(500, "db", "no counter").send(out),
                Err(e) => Response::error(500, "db", &format!("{e:?}")).send(out),
            }
        }
        "db-errors" => Response::json(&database_errors()).send(out),
        "db-raw" => match req.json::<serde_json::Value>() {
            Ok(call) => Response::json(&raw_database_call(&call)).send(out),
            Err(e) => Response::error(400, "bad_body", &e.to_string()).send(out),
        },
        "log-lines" => {
            let n: usize = path
                .split('/')
                .nth(2)
                .and_then(|n| n.parse().ok())
                .unwrap_or(1);
            print!("{}", "\n".repeat(n));
            Response::text("logged").send(out)
        }
        "schedule-many" => {
            let n: usize = path
                .split('/')
                .nth(2)
                .and_then(|n| n.parse().ok())
                .unwrap_or(1);
            let function = req.query_param("fn").unwrap_or_else(|| "bad".into());
            let prefix = req.query_param("tag").unwrap_or_else(|| "job".into());
            let at = match req.query_param("when").as_deref() {
                Some("now") => std::time::SystemTime::now(),
                Some(ms) => match ms.parse() {
                    Ok(ms) => std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms),
                    Err(_) => std::time::UNIX_EPOCH,
                },
                None => std::time::UNIX_EPOCH,
            };
            let mut scheduled = 0;
            let mut error = None;
            for i in 0..n {
                let tag = format!("{prefix}-{i}");
                let payload = match req
                    .query_param("sleep_ms")
                    .and_then(|ms| ms.parse::<u64>().ok())
                {
                    Some(ms) => serde_json::json!({"do": "sleep", "ms": ms, "tag": tag}),
                    None => serde_json::json!({"do": "record", "tag": tag}),
                };
                match kiln_sdk::scheduler::schedule_at(&function, at, &payload) {
                    Ok(_) => scheduled += 1,
                    Err(e) => {
                        error = Some(format!("{e:?}"));
                        break;
                    }
                }
            }
            Response::json(&serde_json::json!({"scheduled": scheduled, "error": error})).send(out)
        }
        "fetch" => Response::json(&fetch(req.query(), &[])).send(out),
        "forward" => {
            let mut headers: Vec<(&str, &str)> =
                ["kiln-app", "kiln-route", "kiln-params", "kiln-request-id"]
                    .into_iter()
                    .filter_map(|name| Some((name, req.header(name)?)))
                    .collect();
            headers.push(("kiln-note", "set by the function"));
            Response::json(&fetch(req.query(), &headers)).send(out)
        }
        "global" => {
            // The counter lives in the data segment; the buffers on the heap,
            // past what a reused instance slot keeps resident.
            static COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
            static BUFFERS: std::sync::Mutex<Vec<Vec<u8>>> = std::sync::Mutex::new(Vec::new());
            let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
            let mut buffers = BUFFERS.lock().unwrap();
            buffers.push(vec![0xA5; 3 * 1024 * 1024]);
            Response::text(format!("{n} {}", buffers.len())).send(out)
        }
        _ => Response::text("ok").send(out),
    }
}

/// What reading the filesystem and connecting to `query` (an address) gave.
fn escape_attempts(address: &str) -> Vec<(String, String)> {
    let outcome = |r: std::io::Result<String>| match r {
        Ok(v) => format!("ok: {v}"),
        Err(e) => format!("error: {e}"),
    };
    vec![
        (
            "read_dir".into(),
            outcome(std::fs::read_dir("/").map(|d| format!("{} entries", d.count()))),
        ),
        (
            "read_file".into(),
            outcome(std::fs::read_to_string("/etc/passwd")),
        ),
        (
            "connect".into(),
            outcome(std::net::TcpStream::connect(address).map(|_| "connected".into())),
        ),
    ]
}

/// Bad input of every kind, and the kind of error each gets.
fn database_errors() -> Vec<(&'static str, String)> {
    use kiln_sdk::bindings::kiln::platform::database as wit;
    let kind = |r: Result<String, wit::Error>| match r {
        Ok(v) => format!("ok {v}"),
        Err(wit::Error::InvalidInput(_)) => "invalid-input".into(),
        Err(wit::Error::LimitExceeded(_)) => "limit-exceeded".into(),
        Err(wit::Error::Conflict(_)) => "conflict".into(),
        Err(other) => format!("{other:?}"),
    };
    let mut deep = String::from("1");
    for _ in 0..101 {
        deep = format!("{{\"d\": {deep}}}");
    }
    let huge = format!("{{\"blob\": \"{}\"}}", "x".repeat(17 * 1024 * 1024));
    let options = || wit::FindOptions {
        sort: None,
        projection: None,
        skip: None,
        limit: None,
        batch_size: None,
        cursor: None,
    };
    vec![
        ("not-json", kind(wit::insert("things", "{not json"))),
        ("not-an-object", kind(wit::insert("things", "[1, 2]"))),
        (
            "dollar-field",
            kind(wit::insert("things", r#"{"$set": 1}"#)),
        ),
        ("deep", kind(wit::insert("things", &deep))),
        ("huge", kind(wit::insert("things", &huge))),
        ("platform-collection", kind(wit::insert("_kiln", "{}"))),
        (
            "path-collection",
            kind(wit::insert("../other/things", "{}")),
        ),
        (
            "where",
            kind(
                wit::find("things", r#"{"$where": "1"}"#, &options())
                    .map(|p| p.documents.len().to_string()),
            ),
        ),
        (
            "half-bad-batch",
            kind(
                wit::insert_many("things", &["{}".into(), "{bad".into()])
                    .map(|ids| ids.len().to_string()),
            ),
        ),
        (
            "count-after",
            kind(wit::count("things", "{}").map(|n| n.to_string())),
        ),
    ]
}

/// One database call described as JSON; its result or its error's kind.
fn raw_database_call(call: &serde_json::Value) -> serde_json::Value {
    use kiln_sdk::bindings::kiln::platform::database as wit;
    use serde_json::json;
    let text = |key: &str| call[key].to_string();
    let collection = call["collection"].as_str().unwrap_or("things");
    let options = wit::FindOptions {
        sort: call.get("sort").map(|s| s.to_string()),
        projection: None,
        skip: None,
        limit: call["limit"].as_u64(),
        batch_size: None,
        cursor: None,
    };
    let result: Result<serde_json::Value, wit::Error> = match call["op"].as_str().unwrap_or("") {
        "insert" => wit::insert(collection, &text("doc")).map(|id| json!(id)),
        "insert-many" => {
            let docs: Vec<String> = call["docs"]
                .as_array()
                .map(|d| d.iter().map(|d| d.to_string()).collect())
                .unwrap_or_default();
            wit::insert_many(collection, &docs).map(|ids| json!(ids.len()))
        }
        "find" => {
            wit::find(collection, &text("filter"), &options).map(|p| json!(p.documents.len()))
        }
        "count" => wit::count(collection, &text("filter")).map(|n| json!(n)),
        "update" => wit::update(
            collection,
            &text("filter"),
            &text("update"),
            wit::UpdateOptions {
                upsert: false,
                multi: true,
            },
        )
        .map(|r| json!({"matched": r.matched, "modified": r.modified})),
        "get" => wit::get(collection, call["id"].as_str().unwrap_or("")).map(|d| json!(d)),
        "create-index" => wit::create_index(collection, &text("keys"), false).map(|_| json!(true)),
        other => return json!({"error": "bad-op", "message": other}),
    };
    match result {
        Ok(value) => json!({ "ok": value }),
        Err(e) => {
            let (kind, message) = match e {
                wit::Error::InvalidInput(m) => ("invalid-input", m),
                wit::Error::LimitExceeded(m) => ("limit-exceeded", m),
                wit::Error::Conflict(m) => ("conflict", m),
                wit::Error::NotFound(m) => ("not-found", m),
                wit::Error::Unavailable(m) => ("unavailable", m),
                wit::Error::PermissionDenied(m) => ("permission-denied", m),
            };
            json!({ "error": kind, "message": message })
        }
    }
}

/// A GET to `url` with `headers` through wasi:http's outgoing handler.
fn fetch(url: &str, headers: &[(&str, &str)]) -> String {
    use kiln_sdk::bindings::wasi::http::outgoing_handler;
    use kiln_sdk::bindings::wasi::http::types::{Fields, OutgoingRequest, Scheme};
    let Some((scheme, rest)) = url.split_once("://") else {
        return "error: not a URL".into();
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let fields = Fields::new();
    for (name, value) in headers {
        let _ = fields.append(name, value.as_bytes());
    }
    let request = OutgoingRequest::new(fields);
    let _ = request.set_scheme(Some(&if scheme == "https" {
        Scheme::Https
    } else {
        Scheme::Http
    }));
    let _ = request.set_authority(Some(authority));
    let _ = request.set_path_with_query(Some(path));
    match outgoing_handler::handle(request, None) {
        Err(e) => format!("error: {e:?}"),
        Ok(future) => {
            future.subscribe().block();
            match future.get() {
                Some(Ok(Ok(response))) => format!("status {}", response.status()),
                Some(Ok(Err(e))) => format!("error: {e:?}"),
                other => format!("error: {other:?}"),
            }
        }
    }
}

fn flood(out: ResponseOutparam) {
    use kiln_sdk::bindings::wasi::http::types::{Fields, OutgoingResponse};
    let response = OutgoingResponse::new(Fields::new());
    let body = response.body().expect("a new response has a body");
    ResponseOutparam::set(out, Ok(response));
    let stream = body.write().expect("a new body has a stream");
    let chunk = [b'x'; 4096];
    while stream.blocking_write_and_flush(&chunk).is_ok() {}
}

/// Sends 4 KiB every 10 ms without end, or traps after the first 64 KiB.
fn drip(out: ResponseOutparam, trap: bool) {
    use kiln_sdk::bindings::wasi::http::types::{Fields, OutgoingResponse};
    let response = OutgoingResponse::new(Fields::new());
    let body = response.body().expect("a new response has a body");
    ResponseOutparam::set(out, Ok(response));
    let stream = body.write().expect("a new body has a stream");
    let chunk = [b'x'; 4096];
    for sent in 1.. {
        if stream.blocking_write_and_flush(&chunk).is_err() {
            return;
        }
        if trap && sent == 16 {
            panic!("misbehave: trapping mid-body on purpose");
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

kiln_sdk::raw_http_function!(handle);

/// The scheduled handler, for the scheduler's tests. The payload says what
/// to do: `{"do": "record"}` inserts one document per occurrence into
/// `cron_runs` (a second run of one occurrence fails on its `_id`);
/// `{"do": "sleep", "ms": N}` records, then sleeps; `{"do": "fail", "times": N}`
/// fails the first N attempts of an occurrence; `"trap"` panics; `"spin"`
/// loops until its timeout.
fn scheduled(run: kiln_sdk::scheduled::Run<serde_json::Value>) -> Result<(), String> {
    use kiln_sdk::bindings::kiln::platform::database as wit;
    let what = run.payload["do"].as_str().unwrap_or("record");
    println!(
        "misbehave: {what} for {} due at {}",
        run.trigger, run.scheduled_ms
    );
    let record = || {
        let doc = serde_json::json!({
            "_id": format!("{}-{}", run.trigger, run.scheduled_ms),
            "trigger": run.trigger,
            "scheduled_ms": run.scheduled_ms,
            "started_ms": run.started_ms,
        });
        wit::insert("cron_runs", &doc.to_string())
            .map(|_| ())
            .map_err(|e| format!("{e:?}"))
    };
    match what {
        "sleep" => {
            record()?;
            let ms = run.payload["ms"].as_u64().unwrap_or(1000);
            std::thread::sleep(std::time::Duration::from_millis(ms));
            Ok(())
        }
        "fail" => {
            let times = run.payload["times"].as_u64().unwrap_or(u64::MAX);
            let counter = format!("attempts-{}-{}", run.trigger, run.scheduled_ms);
            let filter = serde_json::json!({ "_id": counter }).to_string();
            let doc = wit::find_one_and_update(
                "cron_attempts",
                &filter,
                r#"{"$inc": {"n": 1}}"#,
                true,
                true,
            )
            .map_err(|e| format!("{e:?}"))?
            .unwrap_or_default();
            let n = serde_json::from_str::<serde_json::Value>(&doc)
                .ok()
                .and_then(|d| d["n"].as_u64())
                .unwrap_or(0);
            if n <= times {
                return Err(format!("failing attempt {n} on purpose"));
            }
            record()
        }
        "trap" => panic!("misbehave: trapping on purpose"),
        "spin" => {
            let mut n: u64 = 0;
            loop {
                n = std::hint::black_box(n.wrapping_add(1));
            }
        }
        _ => record(),
    }
}

kiln_sdk::scheduled_function!(scheduled);
