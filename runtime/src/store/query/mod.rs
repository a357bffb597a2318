//! MongoDB's query language over JSON documents (the documented subset):
//! filters, updates, sort and projection. The embedded store runs queries
//! with it; every backend validates with it, so an operator outside the
//! subset is refused the same way everywhere.

pub mod budget;
pub mod filter;
pub mod path;
pub mod shape;
pub mod update;
pub mod value;

use serde_json::Value;

pub use self::budget::Budget;
pub use self::filter::Filter;
pub use self::shape::{Projection, Sort};
pub use self::update::Update;

/// A query or document the store cannot accept, or a call that ran out of
/// its budget.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    #[error("{0}")]
    Invalid(String),
    /// Past the call's deadline, cancelled, or over a size limit.
    #[error("{0}")]
    OverBudget(String),
}

impl QueryError {
    pub fn invalid(message: impl Into<String>) -> Self {
        QueryError::Invalid(message.into())
    }

    pub fn unsupported(operator: &str) -> Self {
        QueryError::Invalid(format!(
            "the operator {operator} is not supported (see the README for the supported subset)"
        ))
    }
}

/// Largest document, as JSON text (MongoDB's BSON limit).
pub const MAX_DOCUMENT_BYTES: usize = 16 * 1024 * 1024;
/// Deepest nesting of a document.
pub const MAX_DEPTH: usize = 100;

/// Checks a document to be stored: an object, `_id` a string if present,
/// field names neither empty, nor starting with `$`, nor holding `.`
/// (dates, `{"$date": ...}`, excepted), at most 100 levels deep, and at
/// most [`MAX_DOCUMENT_BYTES`] as JSON text (checked after every update too).
pub fn check_document(doc: &Value) -> Result<(), QueryError> {
    check_shape(doc)?;
    check_size(doc)
}

/// Fails once `doc` as JSON text passes [`MAX_DOCUMENT_BYTES`], without
/// writing the text out.
pub fn check_size(doc: &Value) -> Result<(), QueryError> {
    struct Counter(usize);
    impl std::io::Write for Counter {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            if self.0 > MAX_DOCUMENT_BYTES {
                return Err(std::io::Error::other("too large"));
            }
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    serde_json::to_writer(Counter(0), doc).map_err(|_| {
        QueryError::OverBudget(format!(
            "the document is over {MAX_DOCUMENT_BYTES} bytes as JSON"
        ))
    })
}

fn check_shape(doc: &Value) -> Result<(), QueryError> {
    let Value::Object(map) = doc else {
        return Err(QueryError::invalid("a document must be a JSON object"));
    };
    if let Some(id) = map.get("_id") {
        match id {
            Value::String(s) if !s.is_empty() && s.len() <= 1024 => {}
            _ => {
                return Err(QueryError::invalid(
                    "_id must be a non-empty string of at most 1024 bytes",
                ));
            }
        }
    }
    check_value(doc, 0)
}

fn check_value(value: &Value, depth: usize) -> Result<(), QueryError> {
    if depth > MAX_DEPTH {
        return Err(QueryError::invalid(format!(
            "the document nests deeper than {MAX_DEPTH} levels"
        )));
    }
    match value {
        Value::Object(map) => {
            if map.contains_key("$date") {
                return match self::value::date_of(map) {
                    Some(_) => Ok(()),
                    None => Err(QueryError::invalid("a date is {\"$date\": \"<RFC 3339>\"}")),
                };
            }
            for (key, child) in map {
                if key.is_empty() || key.starts_with('$') || key.contains('.') || key.contains('\0')
                {
                    return Err(QueryError::invalid(format!(
                        "`{}` is not a valid field name (no leading `$`, no `.`)",
                        key.escape_debug()
                    )));
                }
                check_value(child, depth + 1)?;
            }
            Ok(())
        }
        Value::Array(items) => items.iter().try_for_each(|i| check_value(i, depth + 1)),
        _ => Ok(()),
    }
}

/// A new `_id`: 24 hex digits, seconds since the epoch then random bits, so
/// ids sort roughly by creation like MongoDB's ObjectIds.
pub fn new_id() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs()) as u32;
    format!("{secs:08x}{}", hex::encode(rand::random::<[u8; 8]>()))
}

/// Parses JSON text (serde_json refuses nesting past 128 levels, so deep input cannot overflow the stack).
pub fn parse_json(text: &str) -> Result<Value, QueryError> {
    serde_json::from_str(text).map_err(|e| QueryError::invalid(format!("invalid JSON: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn checks_documents() {
        assert!(
            check_document(&json!({"_id": "a", "at": {"$date": "2024-01-01T00:00:00Z"}})).is_ok()
        );
        for bad in [
            json!([1]),
            json!({"_id": 5}),
            json!({"$set": 1}),
            json!({"a.b": 1}),
            json!({"a": {"$date": "yesterday"}}),
        ] {
            assert!(check_document(&bad).is_err(), "{bad}");
        }
        let mut deep = json!(1);
        for _ in 0..101 {
            deep = json!({ "d": deep });
        }
        assert!(
            check_document(&deep)
                .unwrap_err()
                .to_string()
                .contains("deeper")
        );
    }
}
