//! Index keys: values encoded as bytes whose order is MongoDB's order within
//! a type bracket, so SQLite can range-scan them.
//!
//! Numbers are encoded as f64: integers beyond 2^53 lose precision in the
//! key (the full document is always checked again, so results stay exact).

use serde_json::Value;

use super::query::path::resolve_with_missing;
use super::query::value::{Bracket, bracket, date_of};
use super::query::{Budget, QueryError};

/// Most keys one document may put into one index (an array gives one key
/// per element); a document over it is refused, never half-indexed.
pub const MAX_KEYS_PER_DOCUMENT: usize = 10_000;

/// The encoding of one value: its bracket, then an order-preserving body.
pub fn encode(value: &Value, out: &mut Vec<u8>) {
    out.push(bracket(value) as u8 + 1);
    match value {
        Value::Null => {}
        Value::Bool(b) => out.push(*b as u8),
        Value::Number(n) => out.extend_from_slice(&float_key(n.as_f64().unwrap_or(0.0))),
        Value::String(s) => escape(s.as_bytes(), out),
        Value::Object(map) if bracket(value) == Bracket::Date => {
            let millis = date_of(map).unwrap_or(0);
            out.extend_from_slice(&((millis as u64) ^ (1 << 63)).to_be_bytes());
        }
        // Whole documents and arrays are only looked up by equality.
        other => escape(other.to_string().as_bytes(), out),
    }
}

/// The smallest key of a bracket, and the first key past it.
pub fn bracket_bounds(b: Bracket) -> (Vec<u8>, Vec<u8>) {
    (vec![b as u8 + 1], vec![b as u8 + 2])
}

/// Most bytes of keys one document may put into one index.
pub const MAX_KEY_BYTES_PER_DOCUMENT: usize = 16 * 1024 * 1024;

/// Every key `doc` puts into an index over `paths`: one per combination of
/// values, an array contributing each element; a missing field is null.
///
/// The number of combinations is computed before any key is built and
/// refused past [`MAX_KEYS_PER_DOCUMENT`]; their bytes are counted as they
/// are built and refused past [`MAX_KEY_BYTES_PER_DOCUMENT`]. A document
/// over either is refused, never half-indexed.
pub fn index_keys(
    doc: &Value,
    paths: &[String],
    budget: &Budget,
) -> Result<Vec<Vec<u8>>, QueryError> {
    let mut fields: Vec<Vec<&Value>> = Vec::with_capacity(paths.len());
    let mut count: usize = 1;
    for path in paths {
        let resolved = resolve_with_missing(doc, path, budget)?;
        let mut values: Vec<&Value> = Vec::new();
        for v in resolved.values {
            match v {
                Value::Array(items) if !items.is_empty() => values.extend(items.iter()),
                Value::Array(_) => values.push(&Value::Null),
                other => values.push(other),
            }
        }
        // A path missing anywhere matches `null`, so the null key finds it.
        if values.is_empty() || resolved.missing {
            values.push(&Value::Null);
        }
        count = count.saturating_mul(values.len());
        if count > MAX_KEYS_PER_DOCUMENT {
            return Err(QueryError::OverBudget(format!(
                "the document gives more than {MAX_KEYS_PER_DOCUMENT} keys to the index on {} (arrays multiply keys)",
                paths.join(", ")
            )));
        }
        fields.push(values);
    }
    let mut keys: Vec<Vec<u8>> = vec![Vec::new()];
    let mut bytes = 0usize;
    for values in &fields {
        let mut next = Vec::with_capacity(keys.len() * values.len());
        for prefix in &keys {
            for value in values {
                budget.charge(1)?;
                let mut key = prefix.clone();
                encode(value, &mut key);
                bytes += key.len();
                if bytes > MAX_KEY_BYTES_PER_DOCUMENT {
                    return Err(QueryError::OverBudget(format!(
                        "the document gives more than {MAX_KEY_BYTES_PER_DOCUMENT} bytes of keys to the index on {}",
                        paths.join(", ")
                    )));
                }
                next.push(key);
            }
        }
        keys = next;
    }
    keys.sort();
    keys.dedup();
    Ok(keys)
}

/// The first key past every key that starts with `prefix`.
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return end;
        }
    }
    vec![u8::MAX; prefix.len() + 1]
}

fn float_key(f: f64) -> [u8; 8] {
    let f = if f == 0.0 { 0.0 } else { f }; // -0.0 and 0.0 are one key
    let bits = f.to_bits();
    let ordered = if bits >> 63 == 1 {
        !bits
    } else {
        bits | (1 << 63)
    };
    ordered.to_be_bytes()
}

/// Bytes with 0x00 escaped as 0x00 0xFF and a 0x00 0x00 terminator, so a
/// string orders before its extensions.
fn escape(bytes: &[u8], out: &mut Vec<u8>) {
    for &b in bytes {
        out.push(b);
        if b == 0 {
            out.push(0xFF);
        }
    }
    out.extend_from_slice(&[0, 0]);
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn key(v: Value) -> Vec<u8> {
        let mut out = Vec::new();
        encode(&v, &mut out);
        out
    }

    #[test]
    fn keys_order_like_values() {
        let ordered = [
            json!(null),
            json!(-5.5),
            json!(-1),
            json!(0),
            json!(2),
            json!(10.25),
            json!(""),
            json!("a"),
            json!("a\u{0}"),
            json!("ab"),
            json!("b"),
            json!(false),
            json!(true),
            json!({"$date": "1969-12-31T00:00:00Z"}),
            json!({"$date": "2024-01-01T00:00:00Z"}),
        ];
        for pair in ordered.windows(2) {
            assert!(
                key(pair[0].clone()) < key(pair[1].clone()),
                "{} < {}",
                pair[0],
                pair[1]
            );
        }
        assert_eq!(key(json!(1)), key(json!(1.0)));
    }

    #[test]
    fn arrays_give_one_key_per_element_and_missing_fields_are_null() {
        let budget = Budget::of(std::time::Duration::from_secs(10));
        let doc = json!({"tags": ["a", "b", "a"], "n": 1});
        let keys = index_keys(&doc, &["tags".into(), "n".into()], &budget).unwrap();
        assert_eq!(keys.len(), 2);
        assert_eq!(
            index_keys(&json!({}), &["x".into()], &budget).unwrap(),
            vec![key(json!(null))]
        );
    }

    #[test]
    fn too_many_keys_are_refused_before_building_them() {
        let budget = Budget::of(std::time::Duration::from_secs(10));
        let many: Vec<u32> = (0..3000).collect();
        let doc = json!({"a": many, "b": many, "c": many});
        let paths: Vec<String> = vec!["a".into(), "b".into(), "c".into()];
        let started = std::time::Instant::now();
        let err = index_keys(&doc, &paths, &budget).unwrap_err();
        assert!(matches!(err, QueryError::OverBudget(_)), "{err}");
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
        let small = json!({"a": [1, 2], "b": [3, 4, 5]});
        assert_eq!(index_keys(&small, &paths, &budget).unwrap().len(), 6);
        let long = "x".repeat(4 * 1024 * 1024);
        let wide = json!({"a": [long.clone(), long.clone(), long.clone(), long.clone(), long], "b": [1, 2]});
        let err = index_keys(&wide, &paths, &budget).unwrap_err().to_string();
        assert!(err.contains("bytes"), "{err}");
        let huge: Vec<u32> = (0..(MAX_KEYS_PER_DOCUMENT as u32 + 1)).collect();
        let err = index_keys(&json!({ "a": huge }), &["a".into()], &budget).unwrap_err();
        assert!(matches!(err, QueryError::OverBudget(_)), "{err}");
    }
}
