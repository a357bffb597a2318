//! Fields clients never see (hidden) or never set (server-set): checks on
//! what a client sends, and the stripping of what it gets back.

use serde_json::{Map, Value};

use super::manifest::{Fill, overlaps};
use crate::access::Identity;
use crate::store::query::value::{date_value, equal};

/// The first field path a filter, sort or projection names that overlaps
/// one of `hidden`: naming it would let a client probe its values.
pub fn named_hidden<'h>(
    filter: &Value,
    sort: Option<&Value>,
    projection: Option<&Value>,
    hidden: &'h [String],
) -> Option<&'h str> {
    let mut paths = Vec::new();
    filter_paths(filter, "", &mut paths);
    for shape in [sort, projection].into_iter().flatten() {
        if let Value::Object(map) = shape {
            paths.extend(map.keys().cloned());
        }
    }
    paths.iter().find_map(|path| {
        hidden
            .iter()
            .find(|h| overlaps(h, path))
            .map(String::as_str)
    })
}

/// Every field path a filter names, `$elemMatch` queries included.
fn filter_paths(filter: &Value, prefix: &str, out: &mut Vec<String>) {
    let Value::Object(map) = filter else { return };
    for (key, value) in map {
        match key.as_str() {
            "$and" | "$or" | "$nor" => {
                if let Value::Array(items) = value {
                    items.iter().for_each(|f| filter_paths(f, prefix, out));
                }
            }
            // Other operators at this level are refused by the parser.
            k if k.starts_with('$') => {}
            field => {
                let path = join(prefix, field);
                condition_paths(value, &path, out);
                out.push(path);
            }
        }
    }
}

/// Paths inside a field's condition (`$elemMatch` on element documents).
fn condition_paths(condition: &Value, path: &str, out: &mut Vec<String>) {
    let Value::Object(map) = condition else {
        return;
    };
    for (op, arg) in map {
        match op.as_str() {
            "$elemMatch" => {
                let is_query = arg
                    .as_object()
                    .is_some_and(|m| m.keys().any(|k| !k.starts_with('$') || is_logical(k)));
                match is_query {
                    true => filter_paths(arg, path, out),
                    false => condition_paths(arg, path, out),
                }
            }
            "$not" => condition_paths(arg, path, out),
            "$all" => {
                if let Value::Array(items) = arg {
                    items.iter().for_each(|i| condition_paths(i, path, out));
                }
            }
            _ => {}
        }
    }
}

fn is_logical(key: &str) -> bool {
    matches!(key, "$and" | "$or" | "$nor")
}

fn join(prefix: &str, field: &str) -> String {
    match prefix {
        "" => field.to_string(),
        prefix => format!("{prefix}.{field}"),
    }
}

/// Removes every hidden path from a document, through arrays.
pub fn strip(doc: &mut Value, hidden: &[String]) {
    for path in hidden {
        let segments: Vec<&str> = path.split('.').collect();
        remove(doc, &segments);
    }
}

fn remove(value: &mut Value, segments: &[&str]) {
    let Some((first, rest)) = segments.split_first() else {
        return;
    };
    match value {
        Value::Object(map) => match rest.is_empty() {
            true => {
                map.shift_remove(*first);
            }
            false => {
                if let Some(child) = map.get_mut(*first) {
                    remove(child, rest);
                }
            }
        },
        Value::Array(items) => match first.parse::<usize>() {
            Ok(i) => match (items.get_mut(i), rest.is_empty()) {
                (Some(_), true) => {
                    items.remove(i);
                }
                (Some(item), false) => remove(item, rest),
                (None, _) => {}
            },
            Err(_) => items.iter_mut().for_each(|item| remove(item, segments)),
        },
        _ => {}
    }
}

/// The values at `path`, through arrays (empty when absent).
fn values_at<'a>(value: &'a Value, segments: &[&str], out: &mut Vec<&'a Value>) {
    let Some((first, rest)) = segments.split_first() else {
        out.push(value);
        return;
    };
    match value {
        Value::Object(map) => {
            if let Some(child) = map.get(*first) {
                values_at(child, rest, out);
            }
        }
        Value::Array(items) => match first.parse::<usize>() {
            Ok(i) => {
                if let Some(item) = items.get(i) {
                    values_at(item, rest, out);
                }
            }
            Err(_) => items.iter().for_each(|item| values_at(item, segments, out)),
        },
        _ => {}
    }
}

fn at<'a>(doc: &'a Value, path: &str) -> Vec<&'a Value> {
    let segments: Vec<&str> = path.split('.').collect();
    let mut out = Vec::new();
    values_at(doc, &segments, &mut out);
    out
}

/// The first protected path a client's document sets.
pub fn set_protected<'p>(doc: &Value, protected: &'p [String]) -> Option<&'p str> {
    protected
        .iter()
        .find(|path| !at(doc, path).is_empty())
        .map(String::as_str)
}

/// The first protected path whose value differs between two documents.
pub fn changed_protected<'p>(
    before: &Value,
    after: &Value,
    protected: &'p [String],
) -> Option<&'p str> {
    protected
        .iter()
        .find(|path| {
            let (a, b) = (at(before, path), at(after, path));
            a.len() != b.len() || a.iter().zip(&b).any(|(x, y)| !equal(x, y))
        })
        .map(String::as_str)
}

/// The first required path the document lacks (absent or null).
pub fn missing_required<'r>(doc: &Value, required: &'r [String]) -> Option<&'r str> {
    required
        .iter()
        .find(|path| at(doc, path).iter().all(|v| v.is_null()))
        .map(String::as_str)
}

/// Writes the server's fills into a document's top level.
pub fn fill(
    doc: &mut Value,
    fills: &[(String, Fill)],
    identity: Option<&Identity>,
    now_millis: i64,
) {
    let Value::Object(map) = doc else { return };
    for (field, fill) in fills {
        let value = match fill {
            Fill::UserId => identity.map_or(Value::Null, |i| Value::from(i.user.clone())),
            Fill::Now => date_value(now_millis),
            Fill::Literal(v) => v.clone(),
        };
        map.insert(field.clone(), value);
    }
}

/// Carries the protected fields of `before` into a client's replacement.
pub fn carry(before: &Value, replacement: &mut Value, protected: &[String]) {
    let (Value::Object(old), Value::Object(new)) = (before, replacement) else {
        return;
    };
    let mut carried = Map::new();
    for (key, value) in old {
        if protected.iter().any(|p| p == key) {
            carried.insert(key.clone(), value.clone());
        }
    }
    new.extend(carried);
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn hidden() -> Vec<String> {
        vec!["secret".into(), "card.pin".into()]
    }

    #[test]
    fn finds_hidden_fields_anywhere_a_query_names_them() {
        let h = hidden();
        for filter in [
            json!({"secret": 1}),
            json!({"$or": [{"a": 1}, {"secret": {"$exists": true}}]}),
            json!({"$nor": [{"card.pin": 1}]}),
            json!({"card": {"pin": 1}}),
            json!({"card": {"$elemMatch": {"pin": {"$gt": 1}}}}),
            json!({"secret.x": 1}),
        ] {
            assert!(named_hidden(&filter, None, None, &h).is_some(), "{filter}");
        }
        assert!(named_hidden(&json!({}), Some(&json!({"secret": 1})), None, &h).is_some());
        assert!(named_hidden(&json!({}), None, Some(&json!({"card.pin": 1})), &h).is_some());
        assert_eq!(
            named_hidden(&json!({"title": 1, "card.last4": 1}), None, None, &h),
            None
        );
    }

    #[test]
    fn strips_hidden_fields_through_arrays() {
        let mut doc = json!({"secret": 1, "card": [{"pin": 1, "last4": 2}], "title": "t"});
        strip(&mut doc, &hidden());
        assert_eq!(doc, json!({"card": [{"last4": 2}], "title": "t"}));
    }

    #[test]
    fn protected_fields_cannot_be_set_or_changed() {
        let protected = vec!["owner".to_string()];
        assert_eq!(
            set_protected(&json!({"owner": "me"}), &protected),
            Some("owner")
        );
        assert_eq!(set_protected(&json!({"title": "x"}), &protected), None);
        assert_eq!(
            changed_protected(&json!({"owner": "a"}), &json!({"owner": "b"}), &protected),
            Some("owner")
        );
        assert_eq!(
            changed_protected(&json!({"owner": "a"}), &json!({}), &protected),
            Some("owner")
        );
        assert_eq!(
            changed_protected(
                &json!({"owner": "a", "x": 1}),
                &json!({"owner": "a"}),
                &protected
            ),
            None
        );
        let mut replacement = json!({"title": "y"});
        carry(
            &json!({"owner": "a", "title": "x"}),
            &mut replacement,
            &protected,
        );
        assert_eq!(replacement, json!({"title": "y", "owner": "a"}));
    }
}
