//! Write hooks of collections (`before_write` and `after_write` in
//! `kiln.toml`), exported beside the HTTP handler:
//!
//! ```ignore
//! use kiln_sdk::hooks::{BeforeWrite, WriteEvent};
//!
//! fn before(event: &WriteEvent) -> BeforeWrite {
//!     match event.document.as_ref().and_then(|d| d["title"].as_str()) {
//!         Some("") => BeforeWrite::refuse(400, "empty_title", "a todo needs a title"),
//!         _ => BeforeWrite::Proceed,
//!     }
//! }
//!
//! fn after(event: &WriteEvent) -> Result<(), String> {
//!     println!("{} {}", event.action, event.id);
//!     Ok(())
//! }
//!
//! kiln_sdk::http_function!(handle, before_write = before, after_write = after);
//! ```
//!
//! The host asks them through the HTTP handler with a `kiln-trigger`
//! header no client can send; a hook the function does not export answers
//! an error, which refuses the write (fails closed).

use serde::Deserialize;
use serde_json::{Value, json};

use crate::http::{Request, Response};

/// A client's write to a collection, as its hooks see it.
#[derive(Debug, Clone, Deserialize)]
pub struct WriteEvent {
    pub collection: String,
    /// `create`, `update` or `delete`.
    pub action: String,
    /// The document's id.
    pub id: String,
    /// The stored document before the write (none on create).
    #[serde(default)]
    pub before: Option<Value>,
    /// `before_write`: the document proposed (none on delete).
    #[serde(default)]
    pub document: Option<Value>,
    /// `after_write`: the document as committed (none on delete).
    #[serde(default)]
    pub after: Option<Value>,
    /// The client that wrote, if signed in.
    #[serde(default)]
    pub user: Option<WriteUser>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct WriteUser {
    pub id: String,
    #[serde(default)]
    pub roles: Vec<String>,
    #[serde(default)]
    pub mfa: bool,
}

/// What a `before_write` hook decides.
#[derive(Debug, Clone, PartialEq)]
pub enum BeforeWrite {
    /// Write the document as proposed.
    Proceed,
    /// Write this document instead.
    Replace(Value),
    /// Refuse: the client gets `status` (400 or 403) with `code` as the reason.
    Refuse {
        status: u16,
        code: String,
        message: String,
    },
}

impl BeforeWrite {
    pub fn refuse(status: u16, code: &str, message: &str) -> Self {
        BeforeWrite::Refuse {
            status,
            code: code.into(),
            message: message.into(),
        }
    }
}

/// The hooks a function exports.
#[derive(Clone, Copy, Default)]
pub struct Hooks {
    pub before_write: Option<fn(&WriteEvent) -> BeforeWrite>,
    pub after_write: Option<fn(&WriteEvent) -> Result<(), String>>,
}

impl Hooks {
    /// Answers the host's question if `req` is one; `None` for a client's request.
    pub fn answer(&self, req: &Request) -> Option<Response> {
        let trigger = req.header("kiln-trigger")?;
        let asked = |name: &str| {
            Response::error(
                500,
                "no_hook",
                &format!("this function exports no {name} hook"),
            )
        };
        let event = || req.json::<WriteEvent>();
        Some(match trigger {
            "before-write" => match (self.before_write, event()) {
                (None, _) => asked("before_write"),
                (_, Err(e)) => Response::error(500, "bad_event", &e.to_string()),
                (Some(hook), Ok(event)) => Response::json(&match hook(&event) {
                    BeforeWrite::Proceed => json!({}),
                    BeforeWrite::Replace(document) => json!({ "document": document }),
                    BeforeWrite::Refuse {
                        status,
                        code,
                        message,
                    } => {
                        json!({"refuse": {"status": status, "code": code, "message": message}})
                    }
                }),
            },
            "after-write" => match (self.after_write, event()) {
                (None, _) => asked("after_write"),
                (_, Err(e)) => Response::error(500, "bad_event", &e.to_string()),
                (Some(hook), Ok(event)) => match hook(&event) {
                    Ok(()) => Response::json(&json!({})),
                    Err(message) => {
                        eprintln!("after_write failed: {message}");
                        Response::error(500, "after_write_failed", &message)
                    }
                },
            },
            _ => return None,
        })
    }
}
