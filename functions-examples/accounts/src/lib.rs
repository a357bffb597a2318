//! The signed-in user, read from the host (never from headers), and user
//! management from a function. The manifest gives each route its policy:
//!
//! - `GET /me` (`auth = "user"`): the caller, their session and roles;
//! - `GET /whoami` (public): the caller, or `null` without a token;
//! - `GET /staff` (`auth = "role:staff"`): only users with the role;
//! - `GET /secure` (`auth = "mfa"`): only sessions that passed the second factor;
//! - `POST /admin/users` `{"email", "password"}` (`auth = "role:admin"`): creates a user;
//! - `PUT /admin/users/:id/roles` `{"roles": [...]}`: replaces their roles;
//! - `POST /admin/users/:id/disable`: disables them (their sessions end).
//!
//! It is also the app's mailer (`[auth] mail = { function = "accounts" }`):
//! verification and reset mail arrive as one-off jobs with the payload
//! `{kind, to, token, link}`. A real app would call its mail provider here;
//! this one files each message in the `outbox` collection.

use kiln_sdk::auth::{self, Caller, Error, User};
use kiln_sdk::http::{Request, Response};
use serde_json::{Value, json};

fn user_json(user: &User) -> Value {
    json!({
        "id": user.id,
        "email": user.email,
        "roles": user.roles,
        "data": user.data,
        "disabled": user.disabled,
        "anonymous": user.anonymous,
    })
}

fn caller_json(caller: &Caller) -> Value {
    json!({
        "user": user_json(&caller.user),
        "session_id": caller.session_id,
        "mfa": caller.mfa,
    })
}

fn failure(err: Error) -> Response {
    let (status, code, message) = match err {
        Error::NotFound(m) => (404, "not_found", m),
        Error::Conflict(m) => (409, "conflict", m),
        Error::InvalidInput(m) => (400, "invalid_input", m),
        Error::PermissionDenied(m) => (403, "permission_denied", m),
        Error::LimitExceeded(m) => (429, "limit_exceeded", m),
        Error::Unavailable(m) => (503, "unavailable", m),
    };
    Response::error(status, code, &message)
}

fn handle(req: Request) -> Response {
    let result = match (req.method(), req.path()) {
        ("GET", "/me") | ("GET", "/staff") | ("GET", "/secure") => me(),
        ("GET", "/whoami") => {
            auth::current_user().map(|caller| Response::json(&caller.as_ref().map(caller_json)))
        }
        ("POST", "/admin/users") => create(&req),
        ("PUT", _) => set_roles(&req),
        ("POST", _) => disable(&req),
        _ => return Response::error(404, "not_found", "no such route"),
    };
    result.unwrap_or_else(failure)
}

fn me() -> Result<Response, Error> {
    // The route's policy guarantees a caller; a missing one is a host bug.
    match auth::current_user()? {
        Some(caller) => Ok(Response::json(&caller_json(&caller))),
        None => Ok(Response::error(
            500,
            "no_caller",
            "the host verified no caller",
        )),
    }
}

fn body(req: &Request) -> Result<Value, Error> {
    req.json::<Value>()
        .map_err(|e| Error::InvalidInput(format!("the body is not JSON: {e}")))
}

fn create(req: &Request) -> Result<Response, Error> {
    let body = body(req)?;
    let email = body["email"].as_str().unwrap_or_default();
    let password = body["password"].as_str().unwrap_or_default();
    let user = auth::create_user(email, password, &json!({"created_by": "function"}))?;
    Ok(Response::json(&user_json(&user)).with_status(201))
}

fn set_roles(req: &Request) -> Result<Response, Error> {
    let id = req.param("id").unwrap_or_default();
    let body = body(req)?;
    let roles: Vec<&str> = body["roles"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    Ok(Response::json(&user_json(&auth::set_roles(id, &roles)?)))
}

fn disable(req: &Request) -> Result<Response, Error> {
    let id = req.param("id").unwrap_or_default();
    Ok(Response::json(&user_json(&auth::set_disabled(id, true)?)))
}

fn mail(run: kiln_sdk::scheduled::Run<Value>) -> Result<(), String> {
    let outbox = kiln_sdk::db::Collection::<Value>::new("outbox");
    let message = json!({
        "kind": run.payload["kind"],
        "to": run.payload["to"],
        "token": run.payload["token"],
        "link": run.payload["link"],
    });
    outbox
        .insert(&message)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

kiln_sdk::http_function!(handle);
kiln_sdk::scheduled_function!(mail);
