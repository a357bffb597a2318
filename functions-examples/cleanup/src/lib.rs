//! Expired sessions, cleaned up on a schedule and on demand:
//!
//! - the scheduled handler deletes the documents of the payload's collection
//!   (`sessions` by default) whose `expires_at` date has passed; the example
//!   app's `expire-sessions` cron trigger runs it every hour;
//! - `POST /sessions?ttl_ms=N`: a session expiring in N ms (201);
//! - `GET /sessions`: `{"count": n}`;
//! - `POST /cleanup?delay_ms=N` (or `?at_ms=T`, ms since the epoch): schedules a
//!   one-off cleanup in N ms (or at T) (202, `{"job": id}`);
//! - `DELETE /jobs/:id`: cancels a cleanup that has not started (204, or 404).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use kiln_sdk::db::{self, Collection};
use kiln_sdk::http::{Request, Response};
use kiln_sdk::scheduled::Run;
use kiln_sdk::scheduler;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

#[derive(Serialize, Deserialize)]
struct Session {
    #[serde(rename = "_id", skip_serializing_if = "Option::is_none")]
    id: Option<String>,
    expires_at: Value,
}

/// The payload of a cleanup run.
#[derive(Serialize, Deserialize)]
struct Cleanup {
    #[serde(default = "default_collection")]
    collection: String,
}

fn default_collection() -> String {
    "sessions".into()
}

fn cleanup(run: Run<Option<Cleanup>>) -> Result<(), String> {
    let collection = run
        .payload
        .map_or_else(default_collection, |p| p.collection);
    let deleted = Collection::<Value>::new(collection.as_str())
        .delete_many(json!({ "expires_at": { "$lt": db::now() } }))
        .map_err(|e| e.to_string())?;
    println!(
        "{}: deleted {deleted} expired documents from {collection}",
        run.trigger
    );
    Ok(())
}

kiln_sdk::scheduled_function!(cleanup);

fn query_ms(req: &Request, name: &str) -> Result<u64, Response> {
    req.query_param(name)
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| {
            Response::error(
                400,
                "bad_query",
                &format!("`{name}` (milliseconds) is required"),
            )
        })
}

fn handle(req: Request) -> Response {
    let sessions = Collection::<Session>::new("sessions");
    let path = req.path().to_string();
    let result = match (req.method(), path.as_str()) {
        ("POST", "/sessions") => query_ms(&req, "ttl_ms").and_then(|ttl| {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as i64);
            let session = Session {
                id: None,
                expires_at: db::date(now + ttl as i64),
            };
            sessions
                .insert(&session)
                .map(|id| Response::json(&json!({ "id": id })).with_status(201))
                .map_err(|e| Response::error(500, "db", &e.to_string()))
        }),
        ("GET", "/sessions") => sessions
            .count(json!({}))
            .map(|count| Response::json(&json!({ "count": count })))
            .map_err(|e| Response::error(500, "db", &e.to_string())),
        // `at_ms` (ms since the epoch) instead of `delay_ms`: at that instant.
        ("POST", "/cleanup") => match req.query_param("at_ms") {
            Some(_) => query_ms(&req, "at_ms").map(|at| UNIX_EPOCH + Duration::from_millis(at)),
            None => query_ms(&req, "delay_ms")
                .map(|delay| SystemTime::now() + Duration::from_millis(delay)),
        }
        .and_then(|at| {
            scheduler::schedule_at(
                "cleanup",
                at,
                &Cleanup {
                    collection: default_collection(),
                },
            )
            .map(|job| Response::json(&json!({ "job": job })).with_status(202))
            .map_err(|e| Response::error(500, "scheduler", &format!("{e:?}")))
        }),
        ("DELETE", _) => match req.param("id") {
            Some(id) => match scheduler::cancel(id) {
                Ok(()) => Ok(Response::new(204)),
                Err(scheduler::Error::NotFound(m)) => {
                    Err(Response::error(404, "job_not_found", &m))
                }
                Err(e) => Err(Response::error(500, "scheduler", &format!("{e:?}"))),
            },
            None => Err(Response::error(404, "not_found", "no such route")),
        },
        _ => Err(Response::error(404, "not_found", "no such route")),
    };
    result.unwrap_or_else(|resp| resp)
}

kiln_sdk::http_function!(handle);
