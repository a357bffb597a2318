//! Dotted paths (`a.b.0.c`) through documents and arrays, as MongoDB
//! resolves them in queries.

use serde_json::Value;

/// The values at `path`: through an array, the path continues into every
/// element that is a document, and a numeric part also indexes the array.
/// Empty when the path is missing.
pub fn resolve<'a>(doc: &'a Value, path: &str) -> Vec<&'a Value> {
    let parts: Vec<&str> = path.split('.').collect();
    let mut out = Vec::new();
    collect(doc, &parts, &mut out);
    out
}

fn collect<'a>(value: &'a Value, parts: &[&str], out: &mut Vec<&'a Value>) {
    let Some((first, rest)) = parts.split_first() else {
        out.push(value);
        return;
    };
    match value {
        Value::Object(map) => {
            if let Some(next) = map.get(*first) {
                collect(next, rest, out);
            }
        }
        Value::Array(items) => {
            if let Ok(index) = first.parse::<usize>()
                && let Some(item) = items.get(index)
            {
                collect(item, rest, out);
            }
            for item in items.iter().filter(|i| i.is_object()) {
                collect(item, parts, out);
            }
        }
        _ => {}
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

    #[test]
    fn resolves_through_arrays_of_documents() {
        let doc = json!({"a": [{"b": 1}, {"b": [2, 3]}, 4], "c": {"d": null}});
        assert_eq!(resolve(&doc, "a.b"), vec![&json!(1), &json!([2, 3])]);
        assert_eq!(resolve(&doc, "a.0.b"), vec![&json!(1)]);
        assert_eq!(resolve(&doc, "a.2"), vec![&json!(4)]);
        assert_eq!(resolve(&doc, "c.d"), vec![&json!(null)]);
        assert!(resolve(&doc, "c.e").is_empty());
        assert_eq!(get(&doc, "a.1.b.0"), Some(&json!(2)));
    }
}
