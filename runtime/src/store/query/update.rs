//! Update documents: MongoDB's update operators (the documented subset), or
//! a whole replacement.

use serde_json::{Map, Number, Value};

use super::QueryError;
use super::filter::{Filter, check_path};
use super::value::{compare, date_value, equal, is_date};

/// A parsed update.
#[derive(Debug, Clone)]
pub struct Update {
    ops: Vec<(Op, String, Value)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Set,
    Unset,
    Inc,
    Mul,
    Min,
    Max,
    Push,
    AddToSet,
    Pull,
    Rename,
    CurrentDate,
    SetOnInsert,
}

impl Op {
    fn parse(name: &str) -> Option<Op> {
        Some(match name {
            "$set" => Op::Set,
            "$unset" => Op::Unset,
            "$inc" => Op::Inc,
            "$mul" => Op::Mul,
            "$min" => Op::Min,
            "$max" => Op::Max,
            "$push" => Op::Push,
            "$addToSet" => Op::AddToSet,
            "$pull" => Op::Pull,
            "$rename" => Op::Rename,
            "$currentDate" => Op::CurrentDate,
            "$setOnInsert" => Op::SetOnInsert,
            _ => return None,
        })
    }
}

impl Update {
    /// Parses `{"$set": {...}, "$inc": {...}, ...}`.
    pub fn parse(value: &Value) -> Result<Update, QueryError> {
        let Value::Object(map) = value else {
            return Err(QueryError::invalid("an update must be a JSON object"));
        };
        if map.is_empty() {
            return Err(QueryError::invalid("an update needs at least one operator"));
        }
        let mut ops = Vec::new();
        for (name, fields) in map {
            if !name.starts_with('$') {
                return Err(QueryError::invalid(format!(
                    "`{name}` is not an update operator (use $set, or replace the document)"
                )));
            }
            let op = Op::parse(name).ok_or_else(|| QueryError::unsupported(name))?;
            let Value::Object(fields) = fields else {
                return Err(QueryError::invalid(format!(
                    "{name} takes an object of fields"
                )));
            };
            for (path, arg) in fields {
                check_path(path)?;
                check_argument(op, name, path, arg)?;
                ops.push((op, path.clone(), arg.clone()));
            }
        }
        let mut touched: Vec<&str> = Vec::new();
        for (op, path, arg) in &ops {
            touched.push(path);
            if *op == Op::Rename {
                touched.push(arg.as_str().expect("checked"));
            }
        }
        for (i, a) in touched.iter().enumerate() {
            for b in &touched[i + 1..] {
                if overlaps(a, b) {
                    return Err(QueryError::invalid(format!(
                        "updating `{a}` and `{b}` in one update would conflict"
                    )));
                }
            }
        }
        Ok(Update { ops })
    }

    /// Applies the update to `doc`; `inserting` when it builds an upserted
    /// document. Returns whether the document changed.
    pub fn apply(
        &self,
        doc: &mut Value,
        inserting: bool,
        now_millis: i64,
    ) -> Result<bool, QueryError> {
        let before = doc.clone();
        for (op, path, arg) in &self.ops {
            apply_one(*op, doc, path, arg, inserting, now_millis)?;
        }
        if let (Some(old), Some(new)) = (before.get("_id"), doc.get("_id"))
            && !equal(old, new)
        {
            return Err(QueryError::invalid("_id cannot be changed"));
        }
        Ok(before != *doc)
    }
}

fn overlaps(a: &str, b: &str) -> bool {
    a == b || a.starts_with(&format!("{b}.")) || b.starts_with(&format!("{a}."))
}

fn check_argument(op: Op, name: &str, path: &str, arg: &Value) -> Result<(), QueryError> {
    let bad = |what: &str| Err(QueryError::invalid(format!("{name} on `{path}`: {what}")));
    match op {
        Op::Inc | Op::Mul if !arg.is_number() => bad("takes a number"),
        Op::Rename => match arg.as_str() {
            Some(to) if to != path => check_path(to),
            _ => bad("takes the new field path as a string"),
        },
        Op::CurrentDate => match arg {
            Value::Bool(true) => Ok(()),
            Value::Object(m) if m.len() == 1 && m.get("$type") == Some(&Value::from("date")) => {
                Ok(())
            }
            _ => bad("takes true or {\"$type\": \"date\"}"),
        },
        Op::Push | Op::AddToSet => match arg {
            Value::Object(m) if m.keys().any(|k| k.starts_with('$')) => {
                if m.len() != 1 || !m.get("$each").is_some_and(Value::is_array) {
                    return bad("supports only {\"$each\": [...]} as a modifier");
                }
                Ok(())
            }
            _ => Ok(()),
        },
        Op::Pull => match arg {
            Value::Object(_) => Filter::parse(&serde_json::json!({ "v": arg })).map(|_| ()),
            _ => Ok(()),
        },
        _ => Ok(()),
    }
}

fn apply_one(
    op: Op,
    doc: &mut Value,
    path: &str,
    arg: &Value,
    inserting: bool,
    now: i64,
) -> Result<(), QueryError> {
    match op {
        Op::Set => set(doc, path, arg.clone()),
        Op::SetOnInsert if inserting => set(doc, path, arg.clone()),
        Op::SetOnInsert => Ok(()),
        Op::Unset => {
            unset(doc, path);
            Ok(())
        }
        Op::CurrentDate => set(doc, path, date_value(now)),
        Op::Inc | Op::Mul => {
            let current = get(doc, path).cloned();
            let result = match current {
                None if op == Op::Inc => arg.clone(),
                None => multiply(&zero_like(arg), arg),
                Some(Value::Number(n)) => {
                    let n = Value::Number(n);
                    if op == Op::Inc {
                        add(&n, arg)
                    } else {
                        multiply(&n, arg)
                    }
                }
                Some(_) => {
                    return Err(QueryError::invalid(format!(
                        "cannot apply {} to the non-number `{path}`",
                        if op == Op::Inc { "$inc" } else { "$mul" }
                    )));
                }
            };
            set(doc, path, result)
        }
        Op::Min | Op::Max => {
            let replace = match get(doc, path) {
                None => true,
                Some(current) => {
                    let order = compare(arg, current);
                    if op == Op::Min {
                        order.is_lt()
                    } else {
                        order.is_gt()
                    }
                }
            };
            if replace {
                set(doc, path, arg.clone())
            } else {
                Ok(())
            }
        }
        Op::Push | Op::AddToSet => {
            let items = match arg {
                Value::Object(m) if m.contains_key("$each") => {
                    m["$each"].as_array().cloned().unwrap_or_default()
                }
                other => vec![other.clone()],
            };
            let mut array = match get(doc, path) {
                None => Vec::new(),
                Some(Value::Array(a)) => a.clone(),
                Some(_) => return Err(QueryError::invalid(format!("`{path}` is not an array"))),
            };
            for item in items {
                if op == Op::Push || !array.iter().any(|e| equal(e, &item)) {
                    array.push(item);
                }
            }
            set(doc, path, Value::Array(array))
        }
        Op::Pull => {
            let Some(current) = get(doc, path) else {
                return Ok(());
            };
            let Value::Array(items) = current else {
                return Err(QueryError::invalid(format!("`{path}` is not an array")));
            };
            let pulled: Box<dyn Fn(&Value) -> bool> = match arg {
                // Operators apply to each element: {"$gte": 5}.
                Value::Object(m) if !is_date(arg) && m.keys().all(|k| k.starts_with('$')) => {
                    let filter = Filter::parse(&serde_json::json!({ "v": arg }))?;
                    Box::new(move |item| filter.matches(&serde_json::json!({ "v": item })))
                }
                // A document is a query on element documents: {"qty": {"$lt": 5}}.
                Value::Object(_) if !is_date(arg) => {
                    let filter = Filter::parse(arg)?;
                    Box::new(move |item| item.is_object() && filter.matches(item))
                }
                _ => Box::new(|item| equal(item, arg)),
            };
            let keep: Vec<Value> = items.iter().filter(|item| !pulled(item)).cloned().collect();
            set(doc, path, Value::Array(keep))
        }
        Op::Rename => {
            let to = arg.as_str().expect("checked");
            match take(doc, path) {
                Some(value) => set(doc, to, value),
                None => Ok(()),
            }
        }
    }
}

fn zero_like(n: &Value) -> Value {
    if n.as_i64().is_some() {
        Value::from(0)
    } else {
        Value::from(0.0)
    }
}

fn add(a: &Value, b: &Value) -> Value {
    match (a.as_i64(), b.as_i64()) {
        (Some(x), Some(y)) => x
            .checked_add(y)
            .map(Value::from)
            .unwrap_or_else(|| float(x as f64 + y as f64)),
        _ => float(a.as_f64().unwrap_or(0.0) + b.as_f64().unwrap_or(0.0)),
    }
}

fn multiply(a: &Value, b: &Value) -> Value {
    match (a.as_i64(), b.as_i64()) {
        (Some(x), Some(y)) => x
            .checked_mul(y)
            .map(Value::from)
            .unwrap_or_else(|| float(x as f64 * y as f64)),
        _ => float(a.as_f64().unwrap_or(0.0) * b.as_f64().unwrap_or(0.0)),
    }
}

fn float(f: f64) -> Value {
    Number::from_f64(f)
        .map(Value::Number)
        .unwrap_or(Value::Null)
}

/// The value at `path`, following documents and array indexes.
fn get<'a>(doc: &'a Value, path: &str) -> Option<&'a Value> {
    super::path::get(doc, path)
}

/// Sets `path`, creating documents on the way; a numeric part indexes an
/// existing array (padding it with nulls).
pub fn set(doc: &mut Value, path: &str, value: Value) -> Result<(), QueryError> {
    let parts: Vec<&str> = path.split('.').collect();
    let (last, parents) = parts.split_last().expect("paths are non-empty");
    let mut current = doc;
    for part in parents {
        current = match current {
            Value::Object(map) => map
                .entry(part.to_string())
                .or_insert_with(|| Value::Object(Map::new())),
            Value::Array(items) => {
                let index = array_index(part, path)?;
                if items.len() <= index {
                    items.resize(index + 1, Value::Null);
                }
                if items[index].is_null() {
                    items[index] = Value::Object(Map::new());
                }
                &mut items[index]
            }
            _ => return Err(cannot_create(path)),
        };
    }
    match current {
        Value::Object(map) => {
            map.insert(last.to_string(), value);
            Ok(())
        }
        Value::Array(items) => {
            let index = array_index(last, path)?;
            if items.len() <= index {
                items.resize(index + 1, Value::Null);
            }
            items[index] = value;
            Ok(())
        }
        _ => Err(cannot_create(path)),
    }
}

fn array_index(part: &str, path: &str) -> Result<usize, QueryError> {
    match part.parse::<usize>() {
        Ok(i) if i < 100_000 => Ok(i),
        _ => Err(cannot_create(path)),
    }
}

fn cannot_create(path: &str) -> QueryError {
    QueryError::invalid(format!(
        "cannot set `{path}`: a value on the way is not a document"
    ))
}

fn unset(doc: &mut Value, path: &str) {
    let _ = take(doc, path);
}

/// Removes and returns the value at `path` (array elements become null, as in MongoDB).
fn take(doc: &mut Value, path: &str) -> Option<Value> {
    let (parent, last) = match path.rsplit_once('.') {
        Some((parent, last)) => (get_mut(doc, parent)?, last),
        None => (doc, path),
    };
    match parent {
        Value::Object(map) => map.shift_remove(last),
        Value::Array(items) => {
            let slot = items.get_mut(last.parse::<usize>().ok()?)?;
            Some(std::mem::replace(slot, Value::Null))
        }
        _ => None,
    }
}

fn get_mut<'a>(doc: &'a mut Value, path: &str) -> Option<&'a mut Value> {
    path.split('.').try_fold(doc, |value, part| match value {
        Value::Object(map) => map.get_mut(part),
        Value::Array(items) => items.get_mut(part.parse::<usize>().ok()?),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn updated(update: Value, mut doc: Value) -> Value {
        Update::parse(&update)
            .unwrap()
            .apply(&mut doc, false, 0)
            .unwrap();
        doc
    }

    #[test]
    fn applies_field_operators() {
        let doc = json!({"_id": "1", "n": 1, "f": 1.5, "old": "x", "gone": true, "lo": 5, "hi": 5});
        let out = updated(
            json!({
                "$set": {"a.b": 2},
                "$inc": {"n": 2, "new": 1},
                "$mul": {"f": 2, "m": 3},
                "$rename": {"old": "renamed"},
                "$unset": {"gone": ""},
                "$min": {"lo": 3},
                "$max": {"hi": 3},
            }),
            doc,
        );
        assert_eq!(
            out,
            json!({"_id": "1", "n": 3, "f": 3.0, "lo": 3, "hi": 5, "a": {"b": 2}, "new": 1, "m": 0, "renamed": "x"})
        );
    }

    #[test]
    fn applies_array_operators() {
        let doc = json!({"t": ["a"], "s": [1, 5, 8], "o": [{"q": 1}, {"q": 7}]});
        let out = updated(
            json!({
                "$push": {"t": {"$each": ["b", "a"]}},
                "$pull": {"s": {"$gte": 5}, "o": {"q": {"$lt": 5}}},
                "$addToSet": {"u": {"$each": [1, 1, 2]}},
            }),
            doc,
        );
        assert_eq!(
            out,
            json!({"t": ["a", "b", "a"], "s": [1], "o": [{"q": 7}], "u": [1, 2]})
        );
        assert_eq!(
            updated(json!({"$pull": {"t": "a"}}), json!({"t": ["a", "b", "a"]})),
            json!({"t": ["b"]})
        );
    }

    #[test]
    fn current_date_and_set_on_insert() {
        let mut doc = json!({});
        let update =
            Update::parse(&json!({"$currentDate": {"at": true}, "$setOnInsert": {"n": 1}}))
                .unwrap();
        update.apply(&mut doc, false, 86_400_000).unwrap();
        assert_eq!(doc, json!({"at": {"$date": "1970-01-02T00:00:00.000Z"}}));
        update.apply(&mut doc, true, 0).unwrap();
        assert_eq!(doc["n"], 1);
    }

    #[test]
    fn refuses_bad_updates_by_name() {
        for (update, named) in [
            (json!({"$push": {"a": {"$slice": 2}}}), "$push"),
            (json!({"$bit": {"a": 1}}), "$bit"),
            (json!({"a": 1}), "`a`"),
            (json!({"$inc": {"a": "1"}}), "$inc"),
            (json!({"$set": {"a": 1}, "$inc": {"a.b": 1}}), "conflict"),
        ] {
            let err = Update::parse(&update).unwrap_err().to_string();
            assert!(err.contains(named), "{update}: {err}");
        }
        let mut doc = json!({"_id": "1", "n": "text"});
        let err = Update::parse(&json!({"$inc": {"n": 1}}))
            .unwrap()
            .apply(&mut doc, false, 0);
        assert!(err.is_err());
        let err = Update::parse(&json!({"$set": {"_id": "2"}}))
            .unwrap()
            .apply(&mut doc, false, 0);
        assert!(err.unwrap_err().to_string().contains("_id"));
        let err = Update::parse(&json!({"$set": {"n.x": 1}}))
            .unwrap()
            .apply(&mut doc, false, 0);
        assert!(err.is_err(), "cannot create a field inside a string");
    }
}
