//! `GET /loop?op=find|get|insert&n=N&key=K[&id=I]`: makes N database calls
//! (a find by the indexed field `customer`, a get by `_id`, or an insert of
//! one order, with `_id` I when given) and answers the time they took.
//! With `n=1` it is the per-request database workload of `bench/run`.

use kiln_sdk::bindings::kiln::platform::database as wit;
use kiln_sdk::http::{Request, Response};

fn handle(req: Request) -> Response {
    let n: u32 = req
        .query_param("n")
        .and_then(|n| n.parse().ok())
        .unwrap_or(1000);
    let key = req.query_param("key").unwrap_or_else(|| "c1".into());
    let op = req.query_param("op").unwrap_or_else(|| "find".into());
    let filter = serde_json::json!({ "customer": key }).to_string();
    let order = match req.query_param("id") {
        Some(id) => {
            serde_json::json!({ "_id": id, "customer": key, "total": 1, "items": ["a", "b"] })
        }
        None => serde_json::json!({ "customer": key, "total": 1, "items": ["a", "b"] }),
    }
    .to_string();
    let options = wit::FindOptions {
        sort: None,
        projection: None,
        skip: None,
        limit: Some(10),
        batch_size: None,
        cursor: None,
    };
    let started = std::time::Instant::now();
    let mut found = 0usize;
    for _ in 0..n {
        let result = match op.as_str() {
            "get" => wit::get("orders", &key).map(|d| d.map_or(0, |_| 1)),
            "insert" => wit::insert("orders", &order).map(|_| 1),
            _ => wit::find("orders", &filter, &options).map(|p| p.documents.len()),
        };
        match result {
            Ok(count) => found += count,
            Err(e) => return Response::error(500, "db", &format!("{e:?}")),
        }
    }
    let nanos = started.elapsed().as_nanos() as u64;
    Response::json(&serde_json::json!({ "calls": n, "nanos": nanos, "found": found }))
}

kiln_sdk::http_function!(handle);
