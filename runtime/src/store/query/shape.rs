//! Sort and projection of query results.

use std::cmp::Ordering;

use serde_json::{Map, Value};

use super::filter::check_path;
use super::path::resolve_for_sort;
use super::value::{compare, is_date};
use super::{Budget, QueryError};

/// A sort specification: `{"field": 1, "other": -1}`. Ties are broken by
/// `_id`, so pages of a sorted result are stable.
#[derive(Debug, Clone, Default)]
pub struct Sort {
    keys: Vec<(String, bool)>,
}

impl Sort {
    pub fn parse(value: &Value) -> Result<Sort, QueryError> {
        let Value::Object(map) = value else {
            return Err(QueryError::invalid(
                "a sort must be an object such as {\"field\": 1}",
            ));
        };
        let mut keys = Vec::with_capacity(map.len());
        for (path, direction) in map {
            check_path(path)?;
            let ascending = match direction.as_i64() {
                Some(1) => true,
                Some(-1) => false,
                _ => {
                    return Err(QueryError::invalid(format!(
                        "sort `{path}`: the direction is 1 or -1"
                    )));
                }
            };
            keys.push((path.clone(), ascending));
        }
        Ok(Sort { keys })
    }

    pub fn keys(&self) -> &[(String, bool)] {
        &self.keys
    }

    /// What `doc` sorts by, computed once per document (charged to `budget`)
    /// so that sorting compares keys, not paths.
    pub fn key(&self, doc: &Value, budget: &Budget) -> Result<SortKey, QueryError> {
        let mut values = Vec::with_capacity(self.keys.len());
        for (path, ascending) in &self.keys {
            values.push(sort_key(doc, path, *ascending, budget)?);
        }
        Ok(SortKey {
            values,
            id: doc.get("_id").cloned().unwrap_or(Value::Null),
        })
    }

    pub fn compare(&self, a: &SortKey, b: &SortKey) -> Ordering {
        for ((_, ascending), (x, y)) in self.keys.iter().zip(a.values.iter().zip(&b.values)) {
            let order = compare_sort_values(x, y);
            let order = if *ascending { order } else { order.reverse() };
            if order != Ordering::Equal {
                return order;
            }
        }
        compare(&a.id, &b.id)
    }
}

/// An empty array sorts before everything, null and missing included (so
/// first ascending and last descending), as in MongoDB.
fn compare_sort_values(x: &Value, y: &Value) -> Ordering {
    let empty = |v: &Value| v.as_array().is_some_and(Vec::is_empty);
    match (empty(x), empty(y)) {
        (true, true) => Ordering::Equal,
        (true, false) => Ordering::Less,
        (false, true) => Ordering::Greater,
        (false, false) => compare(x, y),
    }
}

/// The values one document sorts by, and its `_id` to break ties.
#[derive(Debug, Clone)]
pub struct SortKey {
    values: Vec<Value>,
    id: Value,
}

/// The value a document sorts by: an array sorts by its smallest element
/// ascending and its largest descending; a missing field as null, also
/// where only some elements of an array on the path lack it.
fn sort_key(
    doc: &Value,
    path: &str,
    ascending: bool,
    budget: &Budget,
) -> Result<Value, QueryError> {
    let resolved = resolve_for_sort(doc, path, budget)?;
    let mut candidates = Vec::new();
    if resolved.missing {
        candidates.push(&Value::Null);
    }
    for value in resolved.values {
        match value {
            Value::Array(items) if !items.is_empty() => candidates.extend(items.iter()),
            other => candidates.push(other),
        }
    }
    budget.charge(candidates.len())?;
    let pick = if ascending {
        candidates.into_iter().min_by(|a, b| compare(a, b))
    } else {
        candidates.into_iter().max_by(|a, b| compare(a, b))
    };
    Ok(pick.cloned().unwrap_or(Value::Null))
}

/// A projection: only some fields (`{"a": 1}`), or all but some (`{"a": 0}`).
#[derive(Debug, Clone)]
pub struct Projection {
    fields: Vec<String>,
    include: bool,
    include_id: bool,
}

impl Projection {
    pub fn parse(value: &Value) -> Result<Projection, QueryError> {
        let Value::Object(map) = value else {
            return Err(QueryError::invalid(
                "a projection must be an object such as {\"field\": 1}",
            ));
        };
        let mut include = None;
        let mut include_id = true;
        let mut fields = Vec::new();
        for (path, flag) in map {
            check_path(path)?;
            let on = match flag {
                Value::Bool(b) => *b,
                Value::Number(n) if n.as_i64() == Some(0) || n.as_i64() == Some(1) => {
                    n.as_i64() == Some(1)
                }
                _ => {
                    return Err(QueryError::invalid(format!(
                        "projection `{path}`: use 1 or 0 (operators such as $slice are not supported)"
                    )));
                }
            };
            if path == "_id" {
                include_id = on;
                continue;
            }
            if include.is_some_and(|i| i != on) {
                return Err(QueryError::invalid(
                    "a projection either includes or excludes fields, not both",
                ));
            }
            include = Some(on);
            fields.push(path.clone());
        }
        Ok(Projection {
            fields,
            include: include.unwrap_or(false),
            include_id,
        })
    }

    pub fn apply(&self, doc: &Value) -> Value {
        let mut out = if self.include {
            let mut picked = Value::Object(Map::new());
            for path in &self.fields {
                copy_path(doc, &mut picked, &path.split('.').collect::<Vec<_>>());
            }
            picked
        } else {
            let mut kept = doc.clone();
            for path in &self.fields {
                remove_path(&mut kept, &path.split('.').collect::<Vec<_>>());
            }
            kept
        };
        if let Value::Object(map) = &mut out {
            match (self.include_id, doc.get("_id")) {
                (true, Some(id)) if self.include => {
                    map.shift_insert(0, "_id".into(), id.clone());
                }
                (false, _) => {
                    map.shift_remove("_id");
                }
                _ => {}
            }
        }
        out
    }
}

fn copy_path(from: &Value, to: &mut Value, parts: &[&str]) {
    let Some((first, rest)) = parts.split_first() else {
        return;
    };
    match (from, to) {
        (Value::Object(src), Value::Object(dst)) => {
            let Some(value) = src.get(*first) else { return };
            if rest.is_empty() {
                dst.insert(first.to_string(), value.clone());
                return;
            }
            // A path through a scalar, a date or null leads nowhere:
            // nothing to copy.
            if is_date(value) || !(value.is_object() || value.is_array()) {
                return;
            }
            let slot = dst.entry(first.to_string()).or_insert_with(|| match value {
                Value::Array(items) => {
                    Value::Array(items.iter().map(|_| Value::Object(Map::new())).collect())
                }
                _ => Value::Object(Map::new()),
            });
            copy_path(value, slot, rest);
        }
        (Value::Array(src), Value::Array(dst)) => {
            for (s, d) in src.iter().zip(dst.iter_mut()) {
                copy_path(s, d, parts);
            }
            // Elements that are not documents (dates included) have no
            // such field.
            let mut i = 0;
            dst.retain(|_| {
                i += 1;
                src[i - 1].is_object() && !is_date(&src[i - 1])
            });
        }
        _ => {}
    }
}

fn remove_path(value: &mut Value, parts: &[&str]) {
    let Some((first, rest)) = parts.split_first() else {
        return;
    };
    match value {
        Value::Object(map) if rest.is_empty() => {
            map.shift_remove(*first);
        }
        Value::Object(map) => {
            if let Some(next) = map.get_mut(*first) {
                remove_path(next, rest);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|i| remove_path(i, parts)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sorted(sort: &Sort, docs: &mut [Value]) {
        let budget = Budget::of(std::time::Duration::from_secs(10));
        docs.sort_by(|a, b| {
            sort.compare(
                &sort.key(a, &budget).unwrap(),
                &sort.key(b, &budget).unwrap(),
            )
        });
    }

    #[test]
    fn sorts_mixed_types_by_bracket_and_arrays_by_their_ends() {
        let mut docs = vec![
            json!({"_id": "a", "v": "x"}),
            json!({"_id": "b", "v": 10}),
            json!({"_id": "c"}),
            json!({"_id": "d", "v": [5, 50]}),
            json!({"_id": "e", "v": true}),
            json!({"_id": "f", "v": []}),
        ];
        let sort = Sort::parse(&json!({"v": 1})).unwrap();
        sorted(&sort, &mut docs);
        let ids: Vec<_> = docs.iter().map(|d| d["_id"].as_str().unwrap()).collect();
        assert_eq!(ids, ["f", "c", "d", "b", "a", "e"]);
        let sort = Sort::parse(&json!({"v": -1})).unwrap();
        sorted(&sort, &mut docs);
        let ids: Vec<_> = docs.iter().map(|d| d["_id"].as_str().unwrap()).collect();
        assert_eq!(ids, ["e", "a", "d", "b", "c", "f"]);
    }

    #[test]
    fn projects_included_or_excluded_fields() {
        let doc = json!({"_id": "1", "a": {"b": 1, "c": 2}, "d": 3, "l": [{"x": 1, "y": 2}, 7]});
        let only = Projection::parse(&json!({"a.b": 1, "l.x": 1})).unwrap();
        assert_eq!(
            only.apply(&doc),
            json!({"_id": "1", "a": {"b": 1}, "l": [{"x": 1}]})
        );
        let without = Projection::parse(&json!({"a.c": 0, "_id": 0, "l": 0})).unwrap();
        assert_eq!(without.apply(&doc), json!({"a": {"b": 1}, "d": 3}));
        assert!(Projection::parse(&json!({"a": 1, "d": 0})).is_err());
        let through = Projection::parse(&json!({"o.x": 1})).unwrap();
        assert_eq!(
            through.apply(&json!({"_id": "1", "o": 42})),
            json!({"_id": "1"})
        );
        assert_eq!(
            through.apply(&json!({"_id": "1", "o": null})),
            json!({"_id": "1"})
        );
        // A date is a value, not a document with a field `$date`.
        let date = json!({"$date": "2024-01-01T00:00:00Z"});
        assert_eq!(
            through.apply(&json!({"_id": "1", "o": date})),
            json!({"_id": "1"})
        );
        assert_eq!(
            through.apply(&json!({"_id": "1", "o": [date, {"x": 1, "y": 2}]})),
            json!({"_id": "1", "o": [{"x": 1}]})
        );
    }

    #[test]
    fn elements_lacking_the_sorted_field_sort_as_null() {
        let mut docs = vec![
            json!({"_id": "a", "arr": [{"k": 5}, {"k": 0}]}),
            json!({"_id": "b", "arr": [{"v": "x"}, {"k": 3}]}),
            json!({"_id": "c", "arr": [7, {"k": 1}]}),
        ];
        let sort = Sort::parse(&json!({"arr.k": 1})).unwrap();
        sorted(&sort, &mut docs);
        let ids: Vec<_> = docs.iter().map(|d| d["_id"].as_str().unwrap()).collect();
        assert_eq!(ids, ["b", "c", "a"]);
        // Descending, each sorts by its largest: 5, 3, 1.
        let sort = Sort::parse(&json!({"arr.k": -1})).unwrap();
        sorted(&sort, &mut docs);
        let ids: Vec<_> = docs.iter().map(|d| d["_id"].as_str().unwrap()).collect();
        assert_eq!(ids, ["a", "b", "c"]);
    }
}
