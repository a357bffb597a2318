//! Query filters: MongoDB's language, the documented subset.
//!
//! A filter is parsed (and so validated) before it runs: an operator outside
//! the subset is an error naming it, never ignored.

use regex::Regex;
use serde_json::{Map, Value};

use super::path::resolve;
use super::{Budget, QueryError};
use super::value::{Bracket, bracket, compare, equal};

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
                let values = resolve(doc, path, budget)?;
                for c in conds {
                    if !c.matches(&values, budget)? {
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

fn is_operator_document(value: &Value) -> bool {
    match value {
        Value::Object(map) => map
            .keys()
            .next()
            .is_some_and(|k| k.starts_with('$') && k != "$date"),
        _ => false,
    }
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
            "$in" => Cond::In(array_arg(op, arg)?),
            "$nin" => Cond::Nin(array_arg(op, arg)?),
            "$all" => Cond::All(array_arg(op, arg)?),
            "$exists" => Cond::Exists(truthy(arg)),
            "$size" => match arg.as_u64() {
                Some(n) => Cond::Size(n as usize),
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
            "$elemMatch" => {
                let Value::Object(inner) = arg else {
                    return Err(QueryError::invalid("$elemMatch takes an object"));
                };
                if is_operator_document(arg) {
                    Cond::ElemMatch(ElemMatch::Operators(parse_conditions(arg, depth + 1)?))
                } else {
                    Cond::ElemMatch(ElemMatch::Query(Box::new(parse_document(
                        inner,
                        depth + 1,
                    )?)))
                }
            }
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

impl Cond {
    /// Whether the values at a path (empty: missing) meet the condition.
    fn matches(&self, values: &[&Value], budget: &Budget) -> Result<bool, QueryError> {
        Ok(match self {
            Cond::Eq(q) => eq_matches(values, q, budget)?,
            Cond::Ne(q) => !eq_matches(values, q, budget)?,
            Cond::Gt(q) => any_scalar(values, budget, |v| same_bracket(v, q) && compare(v, q).is_gt())?,
            Cond::Gte(q) => any_scalar(values, budget, |v| same_bracket(v, q) && compare(v, q).is_ge())?,
            Cond::Lt(q) => any_scalar(values, budget, |v| same_bracket(v, q) && compare(v, q).is_lt())?,
            Cond::Lte(q) => any_scalar(values, budget, |v| same_bracket(v, q) && compare(v, q).is_le())?,
            Cond::In(list) => any_of(list, values, budget)?,
            Cond::Nin(list) => !any_of(list, values, budget)?,
            Cond::Exists(wanted) => values.is_empty() != *wanted,
            Cond::Regex(re) => any_scalar(values, budget, |v| {
                v.as_str().is_some_and(|s| re.is_match(s))
            })?,
            Cond::Size(n) => values
                .iter()
                .any(|v| v.as_array().is_some_and(|a| a.len() == *n)),
            Cond::All(list) => {
                if list.is_empty() {
                    return Ok(false);
                }
                for q in list {
                    if !eq_matches(values, q, budget)? {
                        return Ok(false);
                    }
                }
                true
            }
            Cond::ElemMatch(m) => {
                for items in values.iter().filter_map(|v| v.as_array()) {
                    for item in items {
                        let hit = match m {
                            ElemMatch::Query(filter) => {
                                item.is_object() && filter.matches(item, budget)?
                            }
                            ElemMatch::Operators(conds) => all_conds(conds, &[item], budget)?,
                        };
                        if hit {
                            return Ok(true);
                        }
                    }
                }
                false
            }
            Cond::Not(conds) => !all_conds(conds, values, budget)?,
        })
    }
}

fn all_conds(conds: &[Cond], values: &[&Value], budget: &Budget) -> Result<bool, QueryError> {
    for c in conds {
        if !c.matches(values, budget)? {
            return Ok(false);
        }
    }
    Ok(true)
}

/// `$in`: whether any listed value matches.
fn any_of(list: &[Value], values: &[&Value], budget: &Budget) -> Result<bool, QueryError> {
    for q in list {
        if eq_matches(values, q, budget)? {
            return Ok(true);
        }
    }
    Ok(false)
}

/// `$gt` and friends only compare values of one type bracket.
fn same_bracket(a: &Value, b: &Value) -> bool {
    let (x, y) = (bracket(a), bracket(b));
    x == y && x != Bracket::Null
}

/// Whether any value, or any element of an array value, passes; each
/// value tested is charged to `budget`.
fn any_scalar(
    values: &[&Value],
    budget: &Budget,
    test: impl Fn(&Value) -> bool,
) -> Result<bool, QueryError> {
    for v in values {
        budget.charge(1)?;
        if test(v) {
            return Ok(true);
        }
        if let Value::Array(items) = v {
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
/// a missing field.
fn eq_matches(values: &[&Value], q: &Value, budget: &Budget) -> Result<bool, QueryError> {
    if q.is_null() && values.is_empty() {
        return Ok(true);
    }
    any_scalar(values, budget, |v| equal(v, q))
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
