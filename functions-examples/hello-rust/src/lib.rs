//! GET /hello/:name answers `{"message": "<greeting>, <name>!"}`, where the
//! greeting is the `greeting` variable of the manifest.

use kiln_sdk::http::{Request, Response};

fn handle(req: Request) -> Response {
    let greeting = kiln_sdk::config::get("greeting").unwrap_or_else(|| "Hello".into());
    let name = req.param("name").unwrap_or("world");
    println!("greeting {name}");
    Response::json(&serde_json::json!({
        "message": format!("{greeting}, {name}!"),
        "path": req.path(),
    }))
}

kiln_sdk::http_function!(handle);
