//! The reads `bench/data.py` makes through the data API, made by a function
//! instead, on the same collection `items`:
//!
//! - `POST /setup?n=N`: indexes `{group, n}` and inserts N items (`_id`
//!   `i0`..., `group` `g0`..`g99`, `n`, `title`);
//! - `GET /get/:id`: one item by id (404 when missing);
//! - `GET /list/:group`: the group's first 20 items by `n`.

use kiln_sdk::bindings::kiln::platform::database as wit;
use kiln_sdk::http::{Request, Response};
use serde_json::json;

fn handle(req: Request) -> Response {
    let result = match (req.method(), req.path().split('/').nth(1)) {
        ("POST", Some("setup")) => setup(&req),
        ("GET", Some("get")) => get(req.param("id").unwrap_or_default()),
        ("GET", Some("list")) => list(req.param("group").unwrap_or_default()),
        _ => return Response::error(404, "not_found", "no such route"),
    };
    result.unwrap_or_else(|e| Response::error(500, "database", &format!("{e:?}")))
}

fn setup(req: &Request) -> Result<Response, wit::Error> {
    let n: usize = req
        .query_param("n")
        .and_then(|n| n.parse().ok())
        .unwrap_or(10_000);
    wit::create_index("items", &json!({"group": 1, "n": 1}).to_string(), false)?;
    for start in (0..n).step_by(1000) {
        let docs: Vec<String> = (start..(start + 1000).min(n))
            .map(|k| json!({"_id": format!("i{k}"), "group": format!("g{}", k % 100), "n": k, "title": format!("item {k}")}).to_string())
            .collect();
        wit::insert_many("items", &docs)?;
    }
    Ok(Response::json(&json!({"inserted": n})))
}

fn get(id: &str) -> Result<Response, wit::Error> {
    Ok(match wit::get("items", id)? {
        Some(doc) => Response::new(200)
            .with_header("content-type", "application/json")
            .with_body(doc),
        None => Response::error(404, "document_not_found", "no such item"),
    })
}

fn list(group: &str) -> Result<Response, wit::Error> {
    let options = wit::FindOptions {
        sort: Some(json!({"n": 1}).to_string()),
        projection: None,
        skip: None,
        limit: Some(20),
        batch_size: None,
        cursor: None,
    };
    let page = wit::find("items", &json!({"group": group}).to_string(), &options)?;
    Ok(Response::new(200)
        .with_header("content-type", "application/json")
        .with_body(format!("{{\"documents\":[{}]}}", page.documents.join(","))))
}

kiln_sdk::http_function!(handle);
