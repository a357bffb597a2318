//! MongoDB's order of values: type brackets first, then within the type.
//!
//! Documents are JSON; a date is `{"$date": "<RFC 3339>"}` and compares as a
//! date. Numbers compare by value whatever their JSON spelling (1 == 1.0).

use std::cmp::Ordering;

use serde_json::{Map, Value};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// The type brackets, in MongoDB's sort order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Bracket {
    Null,
    Number,
    String,
    Object,
    Array,
    Bool,
    Date,
}

/// The bracket of a value (a `{"$date": ...}` object is a date).
pub fn bracket(value: &Value) -> Bracket {
    match value {
        Value::Null => Bracket::Null,
        Value::Bool(_) => Bracket::Bool,
        Value::Number(_) => Bracket::Number,
        Value::String(_) => Bracket::String,
        Value::Array(_) => Bracket::Array,
        Value::Object(map) if date_of(map).is_some() => Bracket::Date,
        Value::Object(_) => Bracket::Object,
    }
}

/// The instant of a `{"$date": "..."}` object, in milliseconds since the epoch.
pub fn date_of(map: &Map<String, Value>) -> Option<i64> {
    if map.len() != 1 {
        return None;
    }
    match map.get("$date")? {
        Value::String(s) => parse_date(s),
        // Canonical extended JSON: {"$date": {"$numberLong": "..."}}.
        Value::Object(inner) if inner.len() == 1 => {
            inner.get("$numberLong")?.as_str()?.parse().ok()
        }
        Value::Number(n) => n.as_i64(),
        _ => None,
    }
}

/// Milliseconds since the epoch of an RFC 3339 date.
pub fn parse_date(s: &str) -> Option<i64> {
    let t = OffsetDateTime::parse(s, &Rfc3339).ok()?;
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).ok()
}

/// `{"$date": "<RFC 3339, UTC, milliseconds>"}` for an instant.
pub fn date_value(millis: i64) -> Value {
    let t = OffsetDateTime::from_unix_timestamp_nanos(millis as i128 * 1_000_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH);
    let text = format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        t.year(),
        t.month() as u8,
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.millisecond()
    );
    serde_json::json!({ "$date": text })
}

/// Rewrites every date in `value` to Kiln's one spelling (UTC,
/// milliseconds), so a document reads back the same from every backend.
pub fn canonicalize_dates(value: &mut Value) {
    match value {
        Value::Object(map) => match date_of(map) {
            Some(millis) => *value = date_value(millis),
            None => map.values_mut().for_each(canonicalize_dates),
        },
        Value::Array(items) => items.iter_mut().for_each(canonicalize_dates),
        _ => {}
    }
}

/// Whether a value is a `{"$date": ...}` object.
pub fn is_date(value: &Value) -> bool {
    matches!(value, Value::Object(map) if date_of(map).is_some())
}

/// MongoDB's total order over values.
pub fn compare(a: &Value, b: &Value) -> Ordering {
    let (ba, bb) = (bracket(a), bracket(b));
    if ba != bb {
        return ba.cmp(&bb);
    }
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => compare_numbers(x, y),
        (Value::String(x), Value::String(y)) => x.cmp(y),
        (Value::Bool(x), Value::Bool(y)) => x.cmp(y),
        (Value::Array(x), Value::Array(y)) => compare_sequences(x.iter(), y.iter()),
        (Value::Object(x), Value::Object(y)) if ba == Bracket::Date => date_of(x).cmp(&date_of(y)),
        (Value::Object(x), Value::Object(y)) => {
            for (fa, fb) in x.iter().zip(y.iter()) {
                let by_field = compare(fa.1, fb.1).then_with(|| fa.0.cmp(fb.0));
                if by_field != Ordering::Equal {
                    return by_field;
                }
            }
            x.len().cmp(&y.len())
        }
        _ => Ordering::Equal,
    }
}

fn compare_sequences<'a>(
    mut x: impl Iterator<Item = &'a Value>,
    mut y: impl Iterator<Item = &'a Value>,
) -> Ordering {
    loop {
        match (x.next(), y.next()) {
            (None, None) => return Ordering::Equal,
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some(a), Some(b)) => match compare(a, b) {
                Ordering::Equal => continue,
                other => return other,
            },
        }
    }
}

/// Numbers by value, exactly: integers as integers (64-bit signed or
/// unsigned), and an integer against a double without rounding the integer
/// to a double (`9223372036854775807 < 9223372036854775808.0`).
fn compare_numbers(x: &serde_json::Number, y: &serde_json::Number) -> Ordering {
    match (integer(x), integer(y)) {
        (Some(a), Some(b)) => a.cmp(&b),
        (Some(a), None) => compare_integer_double(a, y.as_f64().unwrap_or(f64::NAN)),
        (None, Some(b)) => compare_integer_double(b, x.as_f64().unwrap_or(f64::NAN)).reverse(),
        (None, None) => {
            let (a, b) = (
                x.as_f64().unwrap_or(f64::NAN),
                y.as_f64().unwrap_or(f64::NAN),
            );
            a.partial_cmp(&b).unwrap_or(Ordering::Equal)
        }
    }
}

fn integer(n: &serde_json::Number) -> Option<i128> {
    n.as_i64()
        .map(i128::from)
        .or_else(|| n.as_u64().map(i128::from))
}

/// `i` against `f`, exactly (NaN counts as equal, as elsewhere).
fn compare_integer_double(i: i128, f: f64) -> Ordering {
    if f.is_nan() {
        return Ordering::Equal;
    }
    // Every double at or past 2^64 in size is past any i128 we hold here.
    const LIMIT: f64 = 18_446_744_073_709_551_616.0; // 2^64
    if f >= LIMIT {
        return Ordering::Less;
    }
    if f <= -LIMIT {
        return Ordering::Greater;
    }
    let whole = f.trunc();
    // In range, so the conversion is exact.
    match i.cmp(&(whole as i128)) {
        Ordering::Equal => 0.0f64.partial_cmp(&(f - whole)).unwrap_or(Ordering::Equal),
        other => other,
    }
}

/// Equality as MongoDB's `$eq` sees it between two single values.
pub fn equal(a: &Value, b: &Value) -> bool {
    bracket(a) == bracket(b) && compare(a, b) == Ordering::Equal
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn orders_across_types_by_bracket() {
        let mut values = vec![
            json!(true),
            json!({"$date": "2024-01-01T00:00:00Z"}),
            json!([1]),
            json!({"a": 1}),
            json!("a"),
            json!(3),
            json!(null),
        ];
        values.sort_by(compare);
        assert_eq!(
            values,
            vec![
                json!(null),
                json!(3),
                json!("a"),
                json!({"a": 1}),
                json!([1]),
                json!(true),
                json!({"$date": "2024-01-01T00:00:00Z"})
            ]
        );
    }

    #[test]
    fn compares_numbers_by_value_and_dates_as_instants() {
        assert!(equal(&json!(1), &json!(1.0)));
        assert_eq!(compare(&json!(2), &json!(10.5)), Ordering::Less);
        assert!(equal(
            &json!({"$date": "2024-01-01T01:00:00+01:00"}),
            &json!({"$date": "2024-01-01T00:00:00Z"})
        ));
        assert_eq!(
            compare(
                &json!({"$date": "2023-12-31T23:59:59Z"}),
                &json!({"$date": "2024-01-01T00:00:00Z"})
            ),
            Ordering::Less
        );
        assert!(!equal(&json!("1"), &json!(1)));
        // Near 2^63, exactly.
        assert_eq!(
            compare(&json!(i64::MAX), &json!(9223372036854775808.0)),
            Ordering::Less
        );
        assert!(!equal(&json!(i64::MAX), &json!(9223372036854775808.0)));
        assert!(equal(&json!(1u64 << 63), &json!(9223372036854775808.0)));
        assert_eq!(compare(&json!(2.5), &json!(2)), Ordering::Greater);
        assert_eq!(compare(&json!(-2.5), &json!(-2)), Ordering::Less);
        assert_eq!(
            compare(&json!(u64::MAX), &json!(i64::MIN)),
            Ordering::Greater
        );
    }

    #[test]
    fn formats_dates_back_as_utc_milliseconds() {
        let millis = parse_date("2024-02-29T12:34:56.789Z").unwrap();
        assert_eq!(
            date_value(millis),
            json!({"$date": "2024-02-29T12:34:56.789Z"})
        );
    }
}
