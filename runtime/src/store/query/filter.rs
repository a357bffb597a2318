//! Query filters: MongoDB's language, the documented subset.
//!
//! A filter is parsed (and so validated) before it runs: an operator outside
//! the subset is an error naming it, never ignored.

use regex::Regex;
use serde_json::{Map, Value};

use super::path::resolve_with_missing;
use super::value::{Bracket, bracket, compare, equal, is_date};
use super::{Budget, QueryError};

/// Most nested `$and`/`$or`/`$nor`/`$elemMatch`/`$not` levels in one filter.
const MAX_DEPTH: usize = 32;

/// A parsed filter.
#[derive(Debug, Clone)]
pub enum Filter {
    And(Vec<Filter>),
    Or(Vec<Filter>),
    Nor(Vec<Filter>),
    Field { path: String, conds: Vec<Cond> },
}

/// One condition on a field.
#[derive(Debug, Clone)]
pub enum Cond {
    Eq(Value),
    Ne(Value),
    Gt(Value),
    Gte(Value),
    Lt(Value),
    Lte(Value),
    In(Vec<Value>),
    Nin(Vec<Value>),
    Exists(bool),
    Regex(Regex),
    Size(usize),
    All(Vec<Value>),
    /// `$all` of `$elemMatch` documents: an element matches each.
    AllElemMatch(Vec<ElemMatch>),
    ElemMatch(ElemMatch),
    Not(Vec<Cond>),
}

/// `$elemMatch` takes a query on element documents, or operators on scalars.
#[derive(Debug, Clone)]
pub enum ElemMatch {
    Query(Box<Filter>),
    Operators(Vec<Cond>),
}

impl Filter {
    /// Parses a filter document (`{}` matches everything).
    pub fn parse(value: &Value) -> Result<Filter, QueryError> {
        match value {
            Value::Object(map) => parse_document(map, 0),
            _ => Err(QueryError::invalid("a filter must be a JSON object")),
        }
    }

    /// Whether `doc` matches; the work is charged to `budget`.
    pub fn matches(&self, doc: &Value, budget: &Budget) -> Result<bool, QueryError> {
        budget.charge(1)?;
        Ok(match self {
            Filter::And(all) => {
                for f in all {
                    if !f.matches(doc, budget)? {
                        return Ok(false);
                    }
                }
                true
            }
            Filter::Or(any) => {
                for f in any {
                    if f.matches(doc, budget)? {
                        return Ok(true);
                    }
                }
                false
            }
            Filter::Nor(none) => {
                for f in none {
                    if f.matches(doc, budget)? {
                        return Ok(false);
                    }
                }
                true
            }
            Filter::Field { path, conds } => {
                let resolved = resolve_with_missing(doc, path, budget)?;
                let at = At {
                    values: &resolved.values,
                    missing: resolved.missing,
                    whole: false,
                };
                for c in conds {
                    if !c.matches(&at, budget)? {
                        return Ok(false);
                    }
                }
                true
            }
        })
    }

    /// The equality conditions on top-level paths (through `$and`), which
    /// seed an upserted document.
    pub fn equalities(&self) -> Vec<(&str, &Value)> {
        match self {
            Filter::And(all) => all.iter().flat_map(Filter::equalities).collect(),
            Filter::Field { path, conds } => conds
                .iter()
                .filter_map(|c| match c {
                    Cond::Eq(v) => Some((path.as_str(), v)),
                    _ => None,
                })
                .collect(),
            _ => Vec::new(),
        }
    }

    /// The conditions on `path` every match must meet (through `$and`).
    pub fn conditions_on(&self, path: &str) -> Vec<&Cond> {
        match self {
            Filter::And(all) => all.iter().flat_map(|f| f.conditions_on(path)).collect(),
            Filter::Field { path: p, conds } if p == path => conds.iter().collect(),
            _ => Vec::new(),
        }
    }
}

fn parse_document(map: &Map<String, Value>, depth: usize) -> Result<Filter, QueryError> {
    if depth > MAX_DEPTH {
        return Err(QueryError::invalid("the filter nests too deeply"));
    }
    let mut parts = Vec::with_capacity(map.len());
    for (key, value) in map {
        parts.push(match key.as_str() {
            "$and" | "$or" | "$nor" => {
                let Value::Array(items) = value else {
                    return Err(QueryError::invalid(format!(
                        "{key} takes an array of filters"
                    )));
                };
                if items.is_empty() {
                    return Err(QueryError::invalid(format!(
                        "{key} needs at least one filter"
                    )));
                }
                let filters = items
                    .iter()
                    .map(|item| match item {
                        Value::Object(m) => parse_document(m, depth + 1),
                        _ => Err(QueryError::invalid(format!(
                            "{key} takes an array of filters"
                        ))),
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                match key.as_str() {
                    "$and" => Filter::And(filters),
                    "$or" => Filter::Or(filters),
                    _ => Filter::Nor(filters),
                }
            }
            op if op.starts_with('$') => return Err(QueryError::unsupported(op)),
            path => {
                check_path(path)?;
                Filter::Field {
                    path: path.to_string(),
                    conds: parse_conditions(value, depth)?,
                }
            }
        });
    }
    Ok(if parts.len() == 1 {
        parts.pop().expect("one part")
    } else {
        Filter::And(parts)
    })
}

/// A query path: non-empty parts, none starting with `$`.
pub fn check_path(path: &str) -> Result<(), QueryError> {
    if path.is_empty() || path.split('.').any(|p| p.is_empty() || p.starts_with('$')) {
        return Err(QueryError::invalid(format!(
            "`{path}` is not a valid field path"
        )));
    }
    Ok(())
}

/// Whether a condition is an operator document (`{"$gt": 5}`) rather than
/// a value to equal. Any `$` key makes it one, wherever it stands (a date,
/// `{"$date": ...}`, is a value); mixing operators and fields is refused
/// when the conditions are parsed, whatever the keys' order.
fn is_operator_document(value: &Value) -> bool {
    match value {
        Value::Object(map) => !is_date(value) && map.keys().any(|k| k.starts_with('$')),
        _ => false,
    }
}

fn is_logical(key: &str) -> bool {
    matches!(key, "$and" | "$or" | "$nor")
}

fn parse_conditions(value: &Value, depth: usize) -> Result<Vec<Cond>, QueryError> {
    if !is_operator_document(value) {
        return Ok(vec![Cond::Eq(value.clone())]);
    }
    let map = value.as_object().expect("an operator document");
    if let Some(plain) = map.keys().find(|k| !k.starts_with('$')) {
        return Err(QueryError::invalid(format!(
            "cannot mix operators and the field `{plain}` in one condition"
        )));
    }
    let mut conds = Vec::with_capacity(map.len());
    for (op, arg) in map {
        conds.push(match op.as_str() {
            "$eq" => Cond::Eq(arg.clone()),
            "$ne" => Cond::Ne(arg.clone()),
            "$gt" => Cond::Gt(arg.clone()),
            "$gte" => Cond::Gte(arg.clone()),
            "$lt" => Cond::Lt(arg.clone()),
            "$lte" => Cond::Lte(arg.clone()),
            "$in" => Cond::In(sorted_set(array_arg(op, arg)?)),
            "$nin" => Cond::Nin(sorted_set(array_arg(op, arg)?)),
            "$all" => parse_all(arg, depth)?,
            "$exists" => Cond::Exists(truthy(arg)),
            "$size" => match arg.as_u64().or_else(|| {
                // An integral double counts, as in MongoDB: `$size: 1.0`.
                arg.as_f64()
                    .filter(|f| f.fract() == 0.0 && *f >= 0.0 && *f < 9.007_199_254_740_992e15)
                    .map(|f| f as u64)
            }) {
                Some(n) => Cond::Size(usize::try_from(n).unwrap_or(usize::MAX)),
                None => return Err(QueryError::invalid("$size takes a non-negative integer")),
            },
            "$regex" => {
                let options = match map.get("$options") {
                    None => "",
                    Some(Value::String(o)) => o,
                    Some(_) => return Err(QueryError::invalid("$options takes a string")),
                };
                Cond::Regex(build_regex(arg, options)?)
            }
            "$options" if map.contains_key("$regex") => continue,
            "$options" => return Err(QueryError::invalid("$options needs $regex")),
            "$elemMatch" => Cond::ElemMatch(parse_elem_match(arg, depth)?),
            "$not" => match arg {
                Value::Object(_) if is_operator_document(arg) => {
                    Cond::Not(parse_conditions(arg, depth + 1)?)
                }
                _ => {
                    return Err(QueryError::invalid(
                        "$not takes an operator document, e.g. {\"$not\": {\"$gt\": 5}}",
                    ));
                }
            },
            other => return Err(QueryError::unsupported(other)),
        });
    }
    Ok(conds)
}

/// `$elemMatch`: operators on each element (`{"$gt": 5}`), or a query on
/// element documents (fields and `$and`/`$or`/`$nor`); not both.
fn parse_elem_match(arg: &Value, depth: usize) -> Result<ElemMatch, QueryError> {
    let Value::Object(inner) = arg else {
        return Err(QueryError::invalid("$elemMatch takes an object"));
    };
    let operators = inner
        .keys()
        .filter(|k| k.starts_with('$') && !is_logical(k))
        .count();
    match operators {
        0 => Ok(ElemMatch::Query(Box::new(parse_document(
            inner,
            depth + 1,
        )?))),
        n if n == inner.len() => Ok(ElemMatch::Operators(parse_conditions(arg, depth + 1)?)),
        _ => Err(QueryError::invalid(
            "$elemMatch takes operators on the elements, or a query on element documents, not both",
        )),
    }
}

/// `$all`: values every one of which the array holds, or `$elemMatch`
/// documents every one of which an element matches.
fn parse_all(arg: &Value, depth: usize) -> Result<Cond, QueryError> {
    let items = array_arg("$all", arg)?;
    let elem_match = |v: &Value| {
        v.as_object()
            .filter(|m| m.len() == 1)
            .and_then(|m| m.get("$elemMatch"))
            .cloned()
    };
    let matchers: Vec<Value> = items.iter().filter_map(elem_match).collect();
    if matchers.is_empty() {
        if let Some(op) = items.iter().find(|v| is_operator_document(v)) {
            return Err(QueryError::invalid(format!(
                "$all takes values or {{\"$elemMatch\": ...}} documents, not {op}"
            )));
        }
        return Ok(Cond::All(items));
    }
    if matchers.len() != items.len() {
        return Err(QueryError::invalid(
            "$all takes values or $elemMatch documents, not both",
        ));
    }
    matchers
        .iter()
        .map(|m| parse_elem_match(m, depth))
        .collect::<Result<_, _>>()
        .map(Cond::AllElemMatch)
}

fn array_arg(op: &str, arg: &Value) -> Result<Vec<Value>, QueryError> {
    match arg {
        Value::Array(items) => Ok(items.clone()),
        _ => Err(QueryError::invalid(format!("{op} takes an array"))),
    }
}

fn truthy(value: &Value) -> bool {
    match value {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64() != Some(0.0),
        _ => true,
    }
}

fn build_regex(pattern: &Value, options: &str) -> Result<Regex, QueryError> {
    let Value::String(pattern) = pattern else {
        return Err(QueryError::invalid("$regex takes a string"));
    };
    let mut builder = regex::RegexBuilder::new(pattern);
    builder.size_limit(1 << 20);
    for option in options.chars() {
        match option {
            'i' => builder.case_insensitive(true),
            'm' => builder.multi_line(true),
            's' => builder.dot_matches_new_line(true),
            other => {
                return Err(QueryError::invalid(format!(
                    "$options `{other}` is not supported (use i, m, s)"
                )));
            }
        };
    }
    builder
        .build()
        .map_err(|e| QueryError::invalid(format!("$regex: {e}")))
}

/// What a condition is tested against: the values at a path, whether the
/// path is missing somewhere (which `null` matches), and whether the values
/// are taken whole (inside `$elemMatch`, an element that is an array is one
/// value, not searched).
struct At<'v, 'a> {
    values: &'v [&'a Value],
    missing: bool,
    whole: bool,
}

impl Cond {
    fn matches(&self, at: &At<'_, '_>, budget: &Budget) -> Result<bool, QueryError> {
        Ok(match self {
            Cond::Eq(q) => eq_matches(at, q, budget)?,
            Cond::Ne(q) => !eq_matches(at, q, budget)?,
            // `$gte: null` and `$lte: null` are `null` equality, as in MongoDB.
            Cond::Gte(q) | Cond::Lte(q) if q.is_null() => eq_matches(at, q, budget)?,
            Cond::Gt(q) => any_scalar(at, budget, |v| same_bracket(v, q) && compare(v, q).is_gt())?,
            Cond::Gte(q) => {
                any_scalar(at, budget, |v| same_bracket(v, q) && compare(v, q).is_ge())?
            }
            Cond::Lt(q) => any_scalar(at, budget, |v| same_bracket(v, q) && compare(v, q).is_lt())?,
            Cond::Lte(q) => {
                any_scalar(at, budget, |v| same_bracket(v, q) && compare(v, q).is_le())?
            }
            Cond::In(list) => any_of(list, at, budget)?,
            Cond::Nin(list) => !any_of(list, at, budget)?,
            Cond::Exists(wanted) => at.values.is_empty() != *wanted,
            Cond::Regex(re) => {
                any_scalar(at, budget, |v| v.as_str().is_some_and(|s| re.is_match(s)))?
            }
            Cond::Size(n) => at
                .values
                .iter()
                .any(|v| v.as_array().is_some_and(|a| a.len() == *n)),
            Cond::All(list) => all_of(list, at, budget)?,
            Cond::AllElemMatch(all) => {
                for m in all {
                    if !elem_match(m, at, budget)? {
                        return Ok(false);
                    }
                }
                true
            }
            Cond::ElemMatch(m) => elem_match(m, at, budget)?,
            Cond::Not(conds) => !all_conds(conds, at, budget)?,
        })
    }
}

/// Whether an element of an array at the path matches `m`.
fn elem_match(m: &ElemMatch, at: &At<'_, '_>, budget: &Budget) -> Result<bool, QueryError> {
    for items in at.values.iter().filter_map(|v| v.as_array()) {
        for item in items {
            let hit = match m {
                ElemMatch::Query(filter) => item.is_object() && filter.matches(item, budget)?,
                ElemMatch::Operators(conds) => {
                    let element = At {
                        values: &[item],
                        missing: false,
                        whole: true,
                    };
                    all_conds(conds, &element, budget)?
                }
            };
            if hit {
                return Ok(true);
            }
        }
    }
    Ok(false)
}

fn all_conds(conds: &[Cond], at: &At<'_, '_>, budget: &Budget) -> Result<bool, QueryError> {
    for c in conds {
        if !c.matches(at, budget)? {
            return Ok(false);
        }
    }
    Ok(true)
}

/// A list in MongoDB's order, without repeats, for binary search.
fn sorted_set(mut list: Vec<Value>) -> Vec<Value> {
    list.sort_by(compare);
    list.dedup_by(|a, b| equal(a, b));
    list
}

/// Whether `sorted` (by [`compare`]) holds a value equal to `v`: values of
/// different brackets never compare equal, so this is `$eq`'s equality.
fn holds(sorted: &[Value], v: &Value) -> bool {
    sorted.binary_search_by(|q| compare(q, v)).is_ok()
}

/// `$in` (the list sorted at parse): whether any value at the path, or any
/// element of an array value, is listed; or null is listed and the path is
/// missing. O(values × log list).
fn any_of(sorted: &[Value], at: &At<'_, '_>, budget: &Budget) -> Result<bool, QueryError> {
    if at.missing && sorted.first().is_some_and(Value::is_null) {
        return Ok(true);
    }
    any_scalar(at, budget, |v| holds(sorted, v))
}

/// `$all` of values: every listed value is at the path (or, for null, the
/// path is missing). The values at the path are sorted once, so this is
/// O((values + list) × log values), not their product.
fn all_of(list: &[Value], at: &At<'_, '_>, budget: &Budget) -> Result<bool, QueryError> {
    if list.is_empty() {
        return Ok(false);
    }
    let mut present: Vec<&Value> = Vec::new();
    for v in at.values {
        present.push(v);
        if let (Value::Array(items), false) = (v, at.whole) {
            present.extend(items.iter());
        }
    }
    budget.charge(present.len() + list.len())?;
    present.sort_by(|a, b| compare(a, b));
    for q in list {
        let found = present.binary_search_by(|v| compare(v, q)).is_ok();
        if !found && !(q.is_null() && at.missing) {
            return Ok(false);
        }
    }
    Ok(true)
}

/// `$gt` and friends only compare values of one type bracket.
fn same_bracket(a: &Value, b: &Value) -> bool {
    let (x, y) = (bracket(a), bracket(b));
    x == y && x != Bracket::Null
}

/// Whether any value, or (unless taken whole) any element of an array
/// value, passes; each value tested is charged to `budget`.
fn any_scalar(
    at: &At<'_, '_>,
    budget: &Budget,
    test: impl Fn(&Value) -> bool,
) -> Result<bool, QueryError> {
    for v in at.values {
        budget.charge(1)?;
        if test(v) {
            return Ok(true);
        }
        if let (Value::Array(items), false) = (v, at.whole) {
            for item in items {
                budget.charge(1)?;
                if test(item) {
                    return Ok(true);
                }
            }
        }
    }
    Ok(false)
}

/// `{field: q}`: a value equal to `q`, an array holding it, or (for null)
/// a path missing somewhere.
fn eq_matches(at: &At<'_, '_>, q: &Value, budget: &Budget) -> Result<bool, QueryError> {
    if q.is_null() && at.missing {
        return Ok(true);
    }
    any_scalar(at, budget, |v| equal(v, q))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn matches(filter: Value, doc: Value) -> bool {
        Filter::parse(&filter)
            .unwrap()
            .matches(&doc, &Budget::of(std::time::Duration::from_secs(10)))
            .unwrap()
    }

    #[test]
    fn equality_reaches_into_arrays_and_null_matches_missing() {
        assert!(matches(json!({"tags": "a"}), json!({"tags": ["b", "a"]})));
        assert!(matches(
            json!({"tags": ["b", "a"]}),
            json!({"tags": ["b", "a"]})
        ));
        assert!(!matches(
            json!({"tags": ["a", "b"]}),
            json!({"tags": ["b", "a"]})
        ));
        assert!(matches(
            json!({"a.b": 2}),
            json!({"a": [{"b": 1}, {"b": 2}]})
        ));
        assert!(matches(json!({"x": null}), json!({})));
        assert!(matches(json!({"x": null}), json!({"x": null})));
        assert!(!matches(json!({"x": null}), json!({"x": 0})));
        assert!(matches(json!({"x": {"$ne": 1}}), json!({})));
    }

    #[test]
    fn comparisons_stay_within_a_type_bracket() {
        assert!(matches(json!({"n": {"$gt": 1}}), json!({"n": 2.5})));
        assert!(!matches(json!({"n": {"$gt": 1}}), json!({"n": "9"})));
        assert!(matches(
            json!({"n": {"$gte": 2, "$lt": 3}}),
            json!({"n": [1, 2]})
        ));
        assert!(!matches(json!({"n": {"$lt": 5}}), json!({})));
        assert!(matches(
            json!({"at": {"$lt": {"$date": "2024-01-02T00:00:00Z"}}}),
            json!({"at": {"$date": "2024-01-01T00:00:00Z"}})
        ));
    }

    #[test]
    fn logical_and_array_operators() {
        let doc = json!({"a": 1, "tags": ["x", "y"], "s": [{"k": 1, "v": 5}, {"k": 2, "v": 9}]});
        assert!(matches(
            json!({"$or": [{"a": 2}, {"tags": "y"}]}),
            doc.clone()
        ));
        assert!(!matches(json!({"$nor": [{"a": 1}]}), doc.clone()));
        assert!(matches(
            json!({"$and": [{"a": 1}, {"tags": {"$all": ["y", "x"]}}]}),
            doc.clone()
        ));
        assert!(matches(json!({"tags": {"$size": 2}}), doc.clone()));
        assert!(matches(
            json!({"s": {"$elemMatch": {"k": 2, "v": {"$gt": 8}}}}),
            doc.clone()
        ));
        assert!(!matches(
            json!({"s": {"$elemMatch": {"k": 1, "v": {"$gt": 8}}}}),
            doc.clone()
        ));
        assert!(matches(
            json!({"a": {"$in": [3, 1]}, "b": {"$nin": [1]}}),
            doc.clone()
        ));
        assert!(matches(json!({"a": {"$not": {"$gt": 5}}}), doc.clone()));
        assert!(matches(
            json!({"a": {"$exists": true}, "zz": {"$exists": false}}),
            doc
        ));
    }

    #[test]
    fn null_matches_missing_fields_through_arrays_of_documents() {
        let doc = json!({"arr": [{"w": 1}, {"v": 2}], "n": null, "s": [1, 2], "e": []});
        for (filter, expected) in [
            (json!({"arr.w": null}), true),
            (json!({"arr.w": {"$in": [null]}}), true),
            (json!({"arr.w": {"$ne": null}}), false),
            (json!({"arr.w": {"$nin": [null]}}), false),
            (json!({"n": {"$gte": null}}), true),
            (json!({"n": {"$lte": null}}), true),
            (json!({"gone": {"$gte": null}}), true),
            (json!({"n": {"$gt": null}}), false),
            (json!({"gone": {"$not": {"$gte": null}}}), false),
            // MongoDB 9.0's rule: arrays of scalars and empty arrays are
            // not "missing" a field.
            (json!({"s.x": null}), false),
            (json!({"e.x": null}), false),
        ] {
            assert_eq!(matches(filter.clone(), doc.clone()), expected, "{filter}");
        }
    }

    #[test]
    fn elem_match_takes_elements_whole_and_all_takes_elem_matches() {
        assert!(!matches(
            json!({"a": {"$elemMatch": {"$gt": 5}}}),
            json!({"a": [[6]]})
        ));
        assert!(matches(
            json!({"a": {"$elemMatch": {"$gt": 5}}}),
            json!({"a": [1, 6]})
        ));
        let doc = json!({"s": [{"k": 1, "v": 5}, {"k": 2, "v": 9}]});
        assert!(matches(
            json!({"s": {"$all": [{"$elemMatch": {"k": 1}}, {"$elemMatch": {"v": {"$gt": 8}}}]}}),
            doc.clone()
        ));
        assert!(!matches(
            json!({"s": {"$all": [{"$elemMatch": {"k": 1, "v": 9}}]}}),
            doc.clone()
        ));
        assert!(matches(
            json!({"s": {"$elemMatch": {"$or": [{"k": 3}, {"v": 9}]}}}),
            doc
        ));
        assert!(matches(json!({"s": {"$size": 2.0}}), json!({"s": [1, 2]})));
    }

    #[test]
    fn mixed_operators_and_fields_are_refused_in_any_order() {
        for filter in [
            json!({"x": {"a": 1, "$gt": 0}}),
            json!({"x": {"$gt": 0, "a": 1}}),
            json!({"x": {"$elemMatch": {"a": 1, "$gt": 0}}}),
            json!({"x": {"$elemMatch": {"$gt": 0, "a": 1}}}),
            json!({"x": {"$all": [1, {"$elemMatch": {"a": 1}}]}}),
        ] {
            assert!(Filter::parse(&filter).is_err(), "{filter}");
        }
    }

    #[test]
    fn regex_with_options() {
        assert!(matches(
            json!({"s": {"$regex": "^ab", "$options": "i"}}),
            json!({"s": "ABc"})
        ));
        assert!(!matches(
            json!({"s": {"$regex": "^ab"}}),
            json!({"s": "ABc"})
        ));
        assert!(matches(
            json!({"s": {"$regex": "^b", "$options": "m"}}),
            json!({"s": "a\nb"})
        ));
    }

    #[test]
    fn rejects_operators_outside_the_subset_by_name() {
        for (filter, named) in [
            (json!({"$where": "1"}), "$where"),
            (json!({"a": {"$type": "string"}}), "$type"),
            (json!({"a": {"$regex": "x", "$options": "g"}}), "`g`"),
            (json!({"$and": {}}), "$and"),
            (json!({"a": {"$in": 1}}), "$in"),
        ] {
            let err = Filter::parse(&filter).unwrap_err().to_string();
            assert!(err.contains(named), "{filter}: {err}");
        }
    }
}
