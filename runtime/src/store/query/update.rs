//! Update documents: MongoDB's update operators (the documented subset), or
//! a whole replacement.

use serde_json::{Map, Number, Value};

use super::filter::{Filter, check_path};
use super::value::{compare, date_value, equal, is_date};
use super::{Budget, QueryError};

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
        check_conflicts(&ops)?;
        Ok(Update { ops })
    }

    /// Applies the update to `doc`; `inserting` when it builds an upserted
    /// document. Returns whether the document changed. On an error `doc` is
    /// left as it was.
    pub fn apply(
        &self,
        doc: &mut Value,
        inserting: bool,
        now_millis: i64,
        budget: &Budget,
    ) -> Result<bool, QueryError> {
        let mut updated = doc.clone();
        let mut padding = Padding::default();
        for (op, path, arg) in &self.ops {
            let mut step = Step {
                doc: &mut updated,
                path,
                arg,
                inserting,
                now: now_millis,
                budget,
                padding: &mut padding,
            };
            step.apply(*op)?;
        }
        if let (Some(old), Some(new)) = (doc.get("_id"), updated.get("_id"))
            && !equal(old, new)
        {
            return Err(QueryError::invalid("_id cannot be changed"));
        }
        let changed = updated != *doc;
        *doc = updated;
        Ok(changed)
    }
}

/// Refuses two operators on one path, or on a path and a path inside it.
/// Sorted by their parts, a path is followed at once by the paths inside
/// it, so comparing neighbours finds every clash in O(n log n).
fn check_conflicts(ops: &[(Op, String, Value)]) -> Result<(), QueryError> {
    let mut touched: Vec<Vec<&str>> = Vec::with_capacity(ops.len());
    for (op, path, arg) in ops {
        touched.push(path.split('.').collect());
        if *op == Op::Rename
            && let Some(to) = arg.as_str()
        {
            touched.push(to.split('.').collect());
        }
    }
    touched.sort_unstable();
    for pair in touched.windows(2) {
        if pair[1].starts_with(&pair[0]) {
            return Err(QueryError::invalid(format!(
                "updating `{}` and `{}` in one update would conflict",
                pair[0].join("."),
                pair[1].join(".")
            )));
        }
    }
    Ok(())
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
            // A date (`{"$date": ...}`) is a value, not a modifier.
            Value::Object(m) if !is_date(arg) && m.keys().any(|k| k.starts_with('$')) => {
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

/// Array slots an update may add as padding (`$set: {"a.500": 1}` on a
/// short array fills the gap with nulls), over all its paths together:
/// without it, a small update could build a huge document.
pub const MAX_PADDING: usize = 100_000;

/// What is left of [`MAX_PADDING`] for one update.
#[derive(Debug)]
pub struct Padding(usize);

impl Default for Padding {
    fn default() -> Self {
        Padding(MAX_PADDING)
    }
}

/// One operator applied to one path of a document.
struct Step<'a> {
    doc: &'a mut Value,
    path: &'a str,
    arg: &'a Value,
    inserting: bool,
    now: i64,
    budget: &'a Budget,
    padding: &'a mut Padding,
}

impl Step<'_> {
    fn apply(&mut self, op: Op) -> Result<(), QueryError> {
        let (path, arg) = (self.path, self.arg);
        match op {
            Op::Set => self.set(arg.clone()),
            Op::SetOnInsert if self.inserting => self.set(arg.clone()),
            Op::SetOnInsert => Ok(()),
            Op::Unset => {
                take(self.doc, path);
                Ok(())
            }
            Op::CurrentDate => self.set(date_value(self.now)),
            Op::Inc | Op::Mul => {
                let name = if op == Op::Inc { "$inc" } else { "$mul" };
                let result = match get(self.doc, path) {
                    None if op == Op::Inc => arg.clone(),
                    None => arithmetic(name, path, &zero_like(arg), arg, op)?,
                    Some(current @ Value::Number(_)) => arithmetic(name, path, current, arg, op)?,
                    Some(_) => {
                        return Err(QueryError::invalid(format!(
                            "cannot apply {name} to the non-number `{path}`"
                        )));
                    }
                };
                self.set(result)
            }
            Op::Min | Op::Max => {
                let replace = match get(self.doc, path) {
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
                    self.set(arg.clone())
                } else {
                    Ok(())
                }
            }
            Op::Push | Op::AddToSet => {
                let items = match arg {
                    Value::Object(m) if !is_date(arg) && m.contains_key("$each") => {
                        m["$each"].as_array().cloned().unwrap_or_default()
                    }
                    other => vec![other.clone()],
                };
                let mut array = match get(self.doc, path) {
                    None => Vec::new(),
                    Some(Value::Array(a)) => a.clone(),
                    Some(_) => {
                        return Err(QueryError::invalid(format!("`{path}` is not an array")));
                    }
                };
                for item in items {
                    if op == Op::Push {
                        array.push(item);
                        continue;
                    }
                    self.budget.charge(array.len())?;
                    if !array.iter().any(|e| equal(e, &item)) {
                        array.push(item);
                    }
                }
                self.set(Value::Array(array))
            }
            Op::Pull => {
                let Some(current) = get(self.doc, path) else {
                    return Ok(());
                };
                let Value::Array(items) = current else {
                    return Err(QueryError::invalid(format!("`{path}` is not an array")));
                };
                let pulled = Pulled::parse(arg)?;
                let mut keep = Vec::with_capacity(items.len());
                for item in items {
                    if !pulled.matches(item, self.budget)? {
                        keep.push(item.clone());
                    }
                }
                self.set(Value::Array(keep))
            }
            Op::Rename => {
                let to = arg.as_str().expect("checked");
                match take(self.doc, path) {
                    Some(value) => set(self.doc, to, value, self.padding),
                    None => Ok(()),
                }
            }
        }
    }

    fn set(&mut self, value: Value) -> Result<(), QueryError> {
        set(self.doc, self.path, value, self.padding)
    }
}

/// What `$pull` removes.
enum Pulled<'a> {
    /// Operators apply to each element: `{"$gte": 5}`.
    Operators(Filter),
    /// A document is a query on element documents: `{"qty": {"$lt": 5}}`.
    Query(Filter),
    /// Anything else: elements equal to it.
    Equal(&'a Value),
}

impl<'a> Pulled<'a> {
    fn parse(arg: &'a Value) -> Result<Self, QueryError> {
        Ok(match arg {
            Value::Object(m) if !is_date(arg) && m.keys().all(|k| k.starts_with('$')) => {
                Pulled::Operators(Filter::parse(&serde_json::json!({ "v": arg }))?)
            }
            Value::Object(_) if !is_date(arg) => Pulled::Query(Filter::parse(arg)?),
            _ => Pulled::Equal(arg),
        })
    }

    fn matches(&self, item: &Value, budget: &Budget) -> Result<bool, QueryError> {
        budget.charge(1)?;
        match self {
            Pulled::Operators(filter) => {
                let wrapped = Value::Object(Map::from_iter([("v".to_string(), item.clone())]));
                filter.matches(&wrapped, budget)
            }
            Pulled::Query(filter) => Ok(item.is_object() && filter.matches(item, budget)?),
            Pulled::Equal(value) => Ok(equal(item, value)),
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

/// `$inc` (`a + b`) or `$mul` (`a * b`). Integers stay integers; a result
/// past the 64-bit integer range or past the largest double is refused, as
/// MongoDB refuses it, rather than stored imprecise or as null.
fn arithmetic(name: &str, path: &str, a: &Value, b: &Value, op: Op) -> Result<Value, QueryError> {
    let overflow = || {
        QueryError::invalid(format!(
            "{name} on `{path}` would overflow; the document is unchanged"
        ))
    };
    if let (Some(x), Some(y)) = (a.as_i64(), b.as_i64()) {
        let result = if op == Op::Inc {
            x.checked_add(y)
        } else {
            x.checked_mul(y)
        };
        return result.map(Value::from).ok_or_else(overflow);
    }
    let (x, y) = (a.as_f64().unwrap_or(0.0), b.as_f64().unwrap_or(0.0));
    let result = if op == Op::Inc { x + y } else { x * y };
    Number::from_f64(result)
        .map(Value::Number)
        .ok_or_else(overflow)
}

/// The value at `path`, following documents and array indexes.
fn get<'a>(doc: &'a Value, path: &str) -> Option<&'a Value> {
    super::path::get(doc, path)
}

/// Sets `path`, creating documents on the way; a numeric part indexes an
/// existing array (padding it with nulls, out of `padding`).
pub fn set(
    doc: &mut Value,
    path: &str,
    value: Value,
    padding: &mut Padding,
) -> Result<(), QueryError> {
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
                pad(items, index, path, padding)?;
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
            pad(items, index, path, padding)?;
            items[index] = value;
            Ok(())
        }
        _ => Err(cannot_create(path)),
    }
}

fn array_index(part: &str, path: &str) -> Result<usize, QueryError> {
    part.parse::<usize>().map_err(|_| {
        QueryError::invalid(format!(
            "cannot set `{path}`: `{part}` is not an index of the array on the way"
        ))
    })
}

/// Grows `items` to hold `index`, out of what is left of the padding.
fn pad(
    items: &mut Vec<Value>,
    index: usize,
    path: &str,
    padding: &mut Padding,
) -> Result<(), QueryError> {
    if index < items.len() {
        return Ok(());
    }
    let added = index - items.len() + 1;
    if added > padding.0 {
        return Err(QueryError::OverBudget(format!(
            "setting `{path}` would pad arrays with more than {MAX_PADDING} elements in one update"
        )));
    }
    padding.0 -= added;
    items.resize(index + 1, Value::Null);
    Ok(())
}

fn cannot_create(path: &str) -> QueryError {
    QueryError::invalid(format!(
        "cannot set `{path}`: a value on the way is neither a document nor an array"
    ))
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

    fn budget() -> Budget {
        Budget::of(std::time::Duration::from_secs(10))
    }

    fn updated(update: Value, mut doc: Value) -> Value {
        Update::parse(&update)
            .unwrap()
            .apply(&mut doc, false, 0, &budget())
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
        update
            .apply(&mut doc, false, 86_400_000, &budget())
            .unwrap();
        assert_eq!(doc, json!({"at": {"$date": "1970-01-02T00:00:00.000Z"}}));
        update.apply(&mut doc, true, 0, &budget()).unwrap();
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
        let err =
            Update::parse(&json!({"$inc": {"n": 1}}))
                .unwrap()
                .apply(&mut doc, false, 0, &budget());
        assert!(err.is_err());
        let err = Update::parse(&json!({"$set": {"_id": "2"}}))
            .unwrap()
            .apply(&mut doc, false, 0, &budget());
        assert!(err.unwrap_err().to_string().contains("_id"));
        let err = Update::parse(&json!({"$set": {"n.x": 1}})).unwrap().apply(
            &mut doc,
            false,
            0,
            &budget(),
        );
        assert!(err.is_err(), "cannot create a field inside a string");
    }

    #[test]
    fn pushes_dates_as_values() {
        let date = json!({"$date": "2024-01-01T00:00:00.000Z"});
        assert_eq!(
            updated(
                json!({"$push": {"d": date.clone()}, "$addToSet": {"e": date.clone()}}),
                json!({})
            ),
            json!({"d": [date.clone()], "e": [date]})
        );
    }

    #[test]
    fn finds_conflicts_between_any_two_paths_of_many() {
        let err = Update::parse(&json!({"$set": {"a": 1, "a-x": 2}, "$inc": {"a.b": 1}}))
            .unwrap_err()
            .to_string();
        assert!(err.contains("`a` and `a.b`"), "{err}");
        let err = Update::parse(&json!({"$set": {"x": 1}, "$rename": {"y": "x.z"}}))
            .unwrap_err()
            .to_string();
        assert!(err.contains("conflict"), "{err}");
        assert!(Update::parse(&json!({"$set": {"ab": 1, "a": 2, "a-b": 3}})).is_ok());
        // 20,000 distinct paths: a pairwise check did 200 million comparisons.
        let fields: serde_json::Map<String, Value> =
            (0..20_000).map(|i| (format!("f{i}.g"), json!(i))).collect();
        let started = std::time::Instant::now();
        assert!(Update::parse(&json!({ "$set": fields })).is_ok());
        assert!(started.elapsed() < std::time::Duration::from_secs(2));
    }

    #[test]
    fn padding_is_bounded_across_all_paths_of_one_update() {
        let fields: serde_json::Map<String, Value> =
            (0..20).map(|i| (format!("l{i}.99999"), json!(1))).collect();
        let mut doc = json!({});
        for i in 0..20 {
            doc[format!("l{i}")] = json!([]);
        }
        let err = Update::parse(&json!({ "$set": fields }))
            .unwrap()
            .apply(&mut doc, false, 0, &budget())
            .unwrap_err();
        assert!(matches!(err, QueryError::OverBudget(_)), "{err}");
        assert_eq!(
            updated(json!({"$set": {"l.2": 1}}), json!({"l": []})),
            json!({"l": [null, null, 1]})
        );
    }

    #[test]
    fn arithmetic_past_the_range_is_refused_not_stored() {
        for (update, doc) in [
            (json!({"$inc": {"n": 1}}), json!({"n": i64::MAX})),
            (json!({"$mul": {"n": 2}}), json!({"n": i64::MAX})),
            (json!({"$mul": {"n": 1e308}}), json!({"n": 1e308})),
            (json!({"$inc": {"n": 1.7e308}}), json!({"n": 1.7e308})),
        ] {
            let mut out = doc.clone();
            let err = Update::parse(&update)
                .unwrap()
                .apply(&mut out, false, 0, &budget())
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("`n`") && err.contains("overflow"),
                "{update}: {err}"
            );
        }
        assert_eq!(
            updated(json!({"$inc": {"n": 1}}), json!({"n": i64::MAX - 1})),
            json!({"n": i64::MAX})
        );
    }
}
