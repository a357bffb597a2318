//! Dotted paths (`a.b.0.c`) through documents and arrays, as MongoDB
//! resolves them in queries.

use std::collections::HashSet;

use serde_json::Value;

use super::value::is_date;
use super::{Budget, QueryError};

/// The values at `path`: through an array, the path continues into every
/// element that is a document, and a numeric part also indexes the array.
/// Empty when the path is missing.
///
/// Both ways through an array can reach one element at one point of the
/// path; each such (element, position) is followed once, so the work is at
/// most the document's size times the path's length (not exponential in
/// the nesting), and every step is charged to `budget`.
pub fn resolve<'a>(
    doc: &'a Value,
    path: &str,
    budget: &Budget,
) -> Result<Vec<&'a Value>, QueryError> {
    Ok(resolve_with_missing(doc, path, budget)?.values)
}

/// The values at a path, and whether the path is missing somewhere: a
/// document on the way (the top one, or an element of an array) lacks the
/// next field, or a scalar stands where a document would continue it.
/// Elements of arrays that are not documents, and empty arrays, do not
/// count as missing (MongoDB 9.0's rule for null queries through arrays).
#[derive(Debug)]
pub struct Resolved<'a> {
    pub values: Vec<&'a Value>,
    pub missing: bool,
}

pub fn resolve_with_missing<'a>(
    doc: &'a Value,
    path: &str,
    budget: &Budget,
) -> Result<Resolved<'a>, QueryError> {
    walk(doc, path, false, budget)
}

/// The values at a path as a sort sees them: as [`resolve_with_missing`],
/// but an element of an array that is not a document (a scalar, a date),
/// and an empty array, also lack the rest of the path, so they count as
/// null in the sort key, as in MongoDB (`{a: [{v: 1}, {k: 3}]}` sorts by
/// `a.k` as null, before `{a: [{k: 0}]}`).
pub fn resolve_for_sort<'a>(
    doc: &'a Value,
    path: &str,
    budget: &Budget,
) -> Result<Resolved<'a>, QueryError> {
    walk(doc, path, true, budget)
}

fn walk<'a>(
    doc: &'a Value,
    path: &str,
    elements_lack_fields: bool,
    budget: &Budget,
) -> Result<Resolved<'a>, QueryError> {
    let parts: Vec<&str> = path.split('.').collect();
    let mut walk = Walk {
        parts: &parts,
        seen: HashSet::new(),
        out: Vec::new(),
        missing: false,
        elements_lack_fields,
        budget,
    };
    walk.visit(doc, 0)?;
    Ok(Resolved {
        values: walk.out,
        missing: walk.missing,
    })
}

struct Walk<'p, 'a, 'b> {
    parts: &'p [&'p str],
    /// (element, position) pairs already followed from an array.
    seen: HashSet<(*const Value, usize)>,
    out: Vec<&'a Value>,
    missing: bool,
    /// Whether array elements that are not documents, and empty arrays,
    /// make the path missing (sorts) or not (filters).
    elements_lack_fields: bool,
    budget: &'b Budget,
}

impl<'a> Walk<'_, 'a, '_> {
    fn visit(&mut self, value: &'a Value, at: usize) -> Result<(), QueryError> {
        self.budget.charge(1)?;
        let Some(part) = self.parts.get(at) else {
            self.out.push(value);
            return Ok(());
        };
        match value {
            Value::Object(map) => match map.get(*part) {
                Some(next) => self.visit(next, at + 1)?,
                None => self.missing = true,
            },
            Value::Array(items) => {
                self.budget.charge(items.len())?;
                let indexed = part.parse::<usize>().ok().and_then(|i| items.get(i));
                if let Some(item) = indexed
                    && self.seen.insert((item as *const Value, at + 1))
                {
                    self.visit(item, at + 1)?;
                }
                let missing = self.missing;
                if self.elements_lack_fields
                    && (items.is_empty() || items.iter().any(|i| !i.is_object() || is_date(i)))
                {
                    self.missing = true;
                }
                // Only document elements continue the path: for a filter,
                // an array of scalars, or an empty one, is not "missing"
                // the field.
                for item in items.iter().filter(|i| i.is_object()) {
                    if self.seen.insert((item as *const Value, at)) {
                        self.visit(item, at)?;
                    }
                }
                // `a.0` found by index is not missing for lack of a field `0`.
                if indexed.is_some() {
                    self.missing = missing;
                }
            }
            _ => self.missing = true,
        }
        Ok(())
    }
}

/// The single value at `path` following only documents and array indexes
/// (what updates, sorts on documents without arrays, and projections use).
pub fn get<'a>(doc: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(doc, |value, part| match value {
        Value::Object(map) => map.get(part),
        Value::Array(items) => items.get(part.parse::<usize>().ok()?),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::time::{Duration, Instant};

    fn at<'a>(doc: &'a Value, path: &str) -> Vec<&'a Value> {
        resolve(doc, path, &Budget::of(Duration::from_secs(10))).unwrap()
    }

    #[test]
    fn resolves_through_arrays_of_documents() {
        let doc = json!({"a": [{"b": 1}, {"b": [2, 3]}, 4], "c": {"d": null}});
        assert_eq!(at(&doc, "a.b"), vec![&json!(1), &json!([2, 3])]);
        assert_eq!(at(&doc, "a.0.b"), vec![&json!(1)]);
        assert_eq!(at(&doc, "a.2"), vec![&json!(4)]);
        assert_eq!(at(&doc, "c.d"), vec![&json!(null)]);
        assert!(at(&doc, "c.e").is_empty());
        assert_eq!(get(&doc, "a.1.b.0"), Some(&json!(2)));
    }

    #[test]
    fn knows_where_a_path_is_missing() {
        let missing = |doc: Value, path: &str| {
            resolve_with_missing(&doc, path, &Budget::of(Duration::from_secs(10)))
                .unwrap()
                .missing
        };
        assert!(missing(json!({}), "a"));
        assert!(missing(json!({"a": 5}), "a.b"));
        assert!(missing(json!({"a": [{"b": 1}, {"c": 2}]}), "a.b"));
        assert!(!missing(json!({"a": [{"b": 1}, 3]}), "a.b"));
        assert!(!missing(json!({"a": []}), "a.b"));
        assert!(!missing(json!({"a": {"b": null}}), "a.b"));
        assert!(!missing(json!({"a": [{"b": 1}]}), "a.0"));
        assert!(missing(json!({"a": [5]}), "a.0.b"));
    }

    #[test]
    fn a_path_through_nested_arrays_of_documents_named_by_index_is_not_exponential() {
        // [{"0": [{"0": ...}]}]: each level is reachable both by index and
        // through the element, which doubled the work per level before.
        let mut doc = json!(1);
        for _ in 0..60 {
            doc = json!([{ "0": doc }]);
        }
        let doc = json!({ "a": doc });
        let path = format!("a{}", ".0".repeat(120));
        let started = Instant::now();
        let found = at(&doc, &path);
        assert!(!found.is_empty());
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
    }
}
