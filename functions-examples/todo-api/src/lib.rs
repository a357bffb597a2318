//! A todo list over HTTP, stored in the app's `todos` collection:
//!
//! - `GET /todos[?done=true|false]`: the todos, oldest first;
//! - `POST /todos` `{"title": "...", "done": false}`: 201 and the new todo;
//! - `GET /todos/:id`, `PATCH /todos/:id` (`title` and/or `done`),
//!   `DELETE /todos/:id`: 404 when there is no such todo.
//!
//! A title is 1 to 200 characters; anything else is a 400 with a reason.
//!
//! It is also the write hooks of a `todos` collection clients reach
//! through the data API: `before_write` trims titles and refuses empty
//! ones; `after_write` counts the writes of each action in `todo_log`.

use kiln_sdk::db::{self, Collection};
use kiln_sdk::hooks::{BeforeWrite, WriteEvent};
use kiln_sdk::http::{Request, Response};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

#[derive(Serialize, Deserialize)]
struct Todo {
    #[serde(rename = "_id", skip_serializing_if = "Option::is_none")]
    id: Option<String>,
    title: String,
    done: bool,
    created: Value,
}

/// The fields a client may send.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TodoInput {
    title: Option<String>,
    done: Option<bool>,
}

fn todos() -> Collection<Todo> {
    Collection::new("todos")
}

fn handle(req: Request) -> Response {
    let id = req.param("id").map(str::to_string);
    let result = match (req.method(), id) {
        ("GET", None) => list(&req),
        ("POST", None) => create(&req),
        ("GET", Some(id)) => get(&id),
        ("PATCH", Some(id)) => patch(&id, &req),
        ("DELETE", Some(id)) => delete(&id),
        _ => Ok(Response::error(
            405,
            "method_not_allowed",
            "not a todo operation",
        )),
    };
    result.unwrap_or_else(|err| {
        eprintln!("todo-api: {err}");
        match err {
            db::Error::InvalidInput(m) => Response::error(400, "invalid_input", &m),
            db::Error::Conflict(m) => Response::error(409, "conflict", &m),
            db::Error::LimitExceeded(m) => Response::error(413, "limit_exceeded", &m),
            other => Response::error(503, "database_unavailable", &other.to_string()),
        }
    })
}

fn list(req: &Request) -> db::Result<Response> {
    let filter = match req.query_param("done").as_deref() {
        Some("true") => json!({"done": true}),
        Some("false") => json!({"done": false}),
        Some(_) => {
            return Ok(Response::error(
                400,
                "invalid_query",
                "done is true or false",
            ));
        }
        None => json!({}),
    };
    let all = todos()
        .find(filter)
        .sort(json!({"created": 1}))
        .batch_size(500)
        .all()?;
    Ok(Response::json(&all))
}

fn parse_input(req: &Request) -> Result<TodoInput, Response> {
    let input: TodoInput = req
        .json()
        .map_err(|e| Response::error(400, "invalid_body", &e.to_string()))?;
    if let Some(title) = &input.title {
        let len = title.trim().chars().count();
        if len == 0 || len > 200 {
            return Err(Response::error(
                400,
                "invalid_title",
                "a title is 1 to 200 characters",
            ));
        }
    }
    Ok(input)
}

fn create(req: &Request) -> db::Result<Response> {
    let input = match parse_input(req) {
        Ok(input) => input,
        Err(response) => return Ok(response),
    };
    let Some(title) = input.title else {
        return Ok(Response::error(
            400,
            "invalid_title",
            "a todo needs a title",
        ));
    };
    let mut todo = Todo {
        id: None,
        title: title.trim().to_string(),
        done: input.done.unwrap_or(false),
        created: db::now(),
    };
    todo.id = Some(todos().insert(&todo)?);
    Ok(Response::json(&todo).with_status(201))
}

fn not_found(id: &str) -> Response {
    Response::error(404, "not_found", &format!("no todo {id}"))
}

fn get(id: &str) -> db::Result<Response> {
    Ok(match todos().get(id)? {
        Some(todo) => Response::json(&todo),
        None => not_found(id),
    })
}

fn patch(id: &str, req: &Request) -> db::Result<Response> {
    let input = match parse_input(req) {
        Ok(input) => input,
        Err(response) => return Ok(response),
    };
    let mut set = serde_json::Map::new();
    if let Some(title) = input.title {
        set.insert("title".into(), json!(title.trim()));
    }
    if let Some(done) = input.done {
        set.insert("done".into(), json!(done));
    }
    if set.is_empty() {
        return Ok(Response::error(
            400,
            "empty_patch",
            "send title and/or done",
        ));
    }
    Ok(
        match todos().find_one_and_update(json!({"_id": id}), json!({"$set": set}), false)? {
            Some(todo) => Response::json(&todo),
            None => not_found(id),
        },
    )
}

fn delete(id: &str) -> db::Result<Response> {
    Ok(match todos().delete_one(json!({"_id": id}))? {
        0 => not_found(id),
        _ => Response::new(204),
    })
}

fn before_write(event: &WriteEvent) -> BeforeWrite {
    let Some(mut doc) = event.document.clone() else {
        return BeforeWrite::Proceed;
    };
    match doc["title"].as_str().map(str::trim) {
        Some("") => BeforeWrite::refuse(400, "empty_title", "a todo needs a title"),
        Some(title) => {
            doc["title"] = json!(title);
            BeforeWrite::Replace(doc)
        }
        None => BeforeWrite::Proceed,
    }
}

fn after_write(event: &WriteEvent) -> Result<(), String> {
    Collection::<Value>::new("todo_log")
        .upsert(json!({"_id": event.action}), json!({"$inc": {"writes": 1}}))
        .map(|_| ())
        .map_err(|e| e.to_string())
}

kiln_sdk::http_function!(
    handle,
    before_write = before_write,
    after_write = after_write
);
