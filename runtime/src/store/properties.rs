//! Property tests of the query code: random and adversarial documents,
//! filters, updates and sorts from the documented subset, each case under a
//! wall-clock cap, checking invariants that hold in MongoDB.

use std::time::{Duration, Instant};

use proptest::prelude::*;
use serde_json::{Map, Value, json};

use super::keys::index_keys;
use super::query::value::{compare, is_date};
use super::query::{Budget, Filter, Projection, QueryError, Sort, Update, check_document};

/// No single case may take longer than this, whatever the input.
const CAP: Duration = Duration::from_millis(500);

fn budget() -> Budget {
    Budget::of(Duration::from_secs(5))
}

/// Field names that make paths collide often: words and array indexes.
fn field() -> impl Strategy<Value = String> {
    prop_oneof![Just("a"), Just("b"), Just("c"), Just("0"), Just("1")].prop_map(String::from)
}

fn path() -> impl Strategy<Value = String> {
    prop::collection::vec(field(), 1..5).prop_map(|parts| parts.join("."))
}

fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        (-3i64..4).prop_map(Value::from),
        prop_oneof![Just(i64::MAX), Just(i64::MIN), Just(1i64 << 53)].prop_map(Value::from),
        prop_oneof![
            Just(0.5f64),
            Just(-2.5),
            Just(1e300),
            Just(9.223372036854776e18)
        ]
        .prop_map(Value::from),
        "[a-c]{0,2}".prop_map(Value::from),
        (0i64..3).prop_map(|d| json!({"$date": format!("2024-01-0{}T00:00:00Z", d + 1)})),
    ]
}

fn document_value() -> impl Strategy<Value = Value> {
    scalar().prop_recursive(5, 40, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(field(), inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn document() -> impl Strategy<Value = Value> {
    prop::collection::btree_map(field(), document_value(), 0..4)
        .prop_map(|m| Value::Object(m.into_iter().collect()))
}

fn condition() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        scalar(),
        scalar().prop_map(|v| json!({"$eq": v})),
        scalar().prop_map(|v| json!({"$ne": v})),
        scalar().prop_map(|v| json!({"$gt": v})),
        scalar().prop_map(|v| json!({"$gte": v})),
        scalar().prop_map(|v| json!({"$lt": v})),
        scalar().prop_map(|v| json!({"$lte": v})),
        prop::collection::vec(scalar(), 0..4).prop_map(|v| json!({"$in": v})),
        prop::collection::vec(scalar(), 0..4).prop_map(|v| json!({"$nin": v})),
        prop::collection::vec(scalar(), 0..3).prop_map(|v| json!({"$all": v})),
        any::<bool>().prop_map(|b| json!({"$exists": b})),
        (0u64..3).prop_map(|n| json!({"$size": n})),
    ];
    leaf.prop_recursive(2, 8, 2, |inner| {
        prop_oneof![
            inner.clone().prop_filter_map("an operator document", |c| {
                let is_ops = c
                    .as_object()
                    .is_some_and(|m| m.keys().all(|k| k.starts_with("$")));
                is_ops.then(|| json!({"$not": c}))
            }),
            (field(), inner).prop_map(|(f, c)| json!({"$elemMatch": {f: c}})),
        ]
    })
}

fn filter() -> impl Strategy<Value = Value> {
    let field_filter = prop::collection::btree_map(path(), condition(), 0..3)
        .prop_map(|m| Value::Object(m.into_iter().collect()));
    field_filter.prop_recursive(2, 12, 3, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 1..3).prop_map(|v| json!({"$and": v})),
            prop::collection::vec(inner.clone(), 1..3).prop_map(|v| json!({"$or": v})),
            prop::collection::vec(inner, 1..3).prop_map(|v| json!({"$nor": v})),
        ]
    })
}

fn update() -> impl Strategy<Value = Value> {
    let op = prop_oneof![
        (path(), document_value()).prop_map(|(p, v)| ("$set", p, v)),
        path().prop_map(|p| ("$unset", p, json!(""))),
        (
            path(),
            prop_oneof![
                (-3i64..4).prop_map(Value::from),
                Just(json!(i64::MAX)),
                Just(json!(1e308))
            ]
        )
            .prop_map(|(p, v)| ("$inc", p, v)),
        (
            path(),
            prop_oneof![(-3i64..4).prop_map(Value::from), Just(json!(1e308))]
        )
            .prop_map(|(p, v)| ("$mul", p, v)),
        (path(), scalar()).prop_map(|(p, v)| ("$min", p, v)),
        (path(), scalar()).prop_map(|(p, v)| ("$max", p, v)),
        (path(), scalar()).prop_map(|(p, v)| ("$push", p, v)),
        (path(), scalar()).prop_map(|(p, v)| ("$addToSet", p, v)),
        (path(), scalar()).prop_map(|(p, v)| ("$pull", p, v)),
        (path(), path()).prop_map(|(p, to)| ("$rename", p, Value::from(to))),
    ];
    prop::collection::vec(op, 1..4).prop_map(|ops| {
        let mut update = Map::new();
        for (name, path, arg) in ops {
            let fields = update
                .entry(name.to_string())
                .or_insert_with(|| Value::Object(Map::new()));
            fields.as_object_mut().expect("an object").insert(path, arg);
        }
        Value::Object(update)
    })
}

/// An element of an array sorted by `arr.k`: a document with `k`, one
/// without it, or not a document at all (a scalar or a date).
fn sort_element() -> impl Strategy<Value = Value> {
    prop_oneof![
        scalar().prop_map(|k| json!({"k": k})),
        scalar().prop_map(|v| json!({"v": v})),
        scalar(),
    ]
}

/// MongoDB's sort key of `{arr: elements}` by `arr.k`: each element gives
/// its `k`, or null when it has none (not a document, or no field), and
/// the key is the least (ascending) or greatest (descending) of them.
fn reference_sort_key(elements: &[Value], ascending: bool) -> Value {
    let values = elements.iter().map(|e| match e.get("k") {
        Some(k) if !is_date(e) => k.clone(),
        _ => Value::Null,
    });
    let pick = if ascending {
        values.min_by(|a, b| compare(a, b))
    } else {
        values.max_by(|a, b| compare(a, b))
    };
    pick.unwrap_or(Value::Null)
}

fn matches(filter: &Filter, doc: &Value) -> Result<bool, TestCaseError> {
    filter
        .matches(doc, &budget())
        .map_err(|e| TestCaseError::fail(format!("matching failed: {e}")))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn a_filter_and_its_nor_partition_every_document(f in filter(), docs in prop::collection::vec(document(), 1..6)) {
        let started = Instant::now();
        if let (Ok(filter), Ok(negated)) = (Filter::parse(&f), Filter::parse(&json!({"$nor": [f]}))) {
            for doc in &docs {
                prop_assert_ne!(matches(&filter, doc)?, matches(&negated, doc)?, "{} on {}", f, doc);
            }
        }
        prop_assert!(started.elapsed() < CAP, "took {:?}", started.elapsed());
    }

    #[test]
    fn null_equality_is_in_null(p in path(), doc in document()) {
        let eq = Filter::parse(&json!({ &p: null })).unwrap();
        let within = Filter::parse(&json!({ &p: {"$in": [null]} })).unwrap();
        prop_assert_eq!(matches(&eq, &doc)?, matches(&within, &doc)?, "{} on {}", p, doc);
    }

    #[test]
    fn a_failed_update_leaves_the_document_unchanged(u in update(), doc in document()) {
        let started = Instant::now();
        if let Ok(update) = Update::parse(&u) {
            let mut updated = doc.clone();
            match update.apply(&mut updated, false, 0, &budget()) {
                Err(_) => prop_assert_eq!(updated.to_string(), doc.to_string()),
                Ok(changed) => prop_assert_eq!(changed, updated != doc),
            }
        }
        prop_assert!(started.elapsed() < CAP, "took {:?}", started.elapsed());
    }

    #[test]
    fn documents_read_back_equal_to_what_was_written(doc in document()) {
        if check_document(&doc).is_ok() {
            let text = doc.to_string();
            let back: Value = serde_json::from_str(&text).unwrap();
            prop_assert_eq!(back, doc);
        }
    }

    #[test]
    fn sort_is_a_total_order(p in path(), ascending in any::<bool>(), docs in prop::collection::vec(document(), 3..8)) {
        let sort = Sort::parse(&json!({ &p: if ascending { 1 } else { -1 } })).unwrap();
        let docs: Vec<Value> = docs
            .into_iter()
            .enumerate()
            .map(|(i, mut d)| { d["_id"] = json!(format!("{i}")); d })
            .collect();
        let keys: Vec<_> = docs.iter().map(|d| sort.key(d, &budget()).unwrap()).collect();
        for a in &keys {
            prop_assert_eq!(sort.compare(a, a), std::cmp::Ordering::Equal);
            for b in &keys {
                prop_assert_eq!(sort.compare(a, b), sort.compare(b, a).reverse());
                for c in &keys {
                    if sort.compare(a, b).is_le() && sort.compare(b, c).is_le() {
                        prop_assert!(sort.compare(a, c).is_le());
                    }
                }
            }
        }
    }

    #[test]
    fn sort_order_agrees_with_the_comparison_operators(v in scalar(), w in scalar()) {
        use super::query::value::{bracket, Bracket};
        let sort = Sort::parse(&json!({"x": 1})).unwrap();
        let (a, b) = (json!({"_id": "1", "x": v}), json!({"_id": "1", "x": w}));
        let order = sort.compare(&sort.key(&a, &budget()).unwrap(), &sort.key(&b, &budget()).unwrap());
        if bracket(&v) == bracket(&w) && bracket(&v) != Bracket::Null {
            for (op, holds) in [("$lt", order.is_lt()), ("$lte", order.is_le()), ("$gt", order.is_gt()), ("$gte", order.is_ge())] {
                let filter = Filter::parse(&json!({"x": { op: w.clone() }})).unwrap();
                prop_assert_eq!(matches(&filter, &a)?, holds, "{} {} {}", v, op, w);
            }
            let equal = Filter::parse(&json!({"x": {"$eq": w.clone()}})).unwrap();
            prop_assert_eq!(matches(&equal, &a)?, order.is_eq(), "{} == {}", v, w);
        }
    }

    #[test]
    fn elements_lacking_a_sorted_path_sort_as_null_as_in_mongodb(
        a in prop::collection::vec(sort_element(), 0..4),
        b in prop::collection::vec(sort_element(), 0..4),
        ascending in any::<bool>(),
    ) {
        let sort = Sort::parse(&json!({"arr.k": if ascending { 1 } else { -1 }})).unwrap();
        let (x, y) = (json!({"_id": "1", "arr": a}), json!({"_id": "2", "arr": b}));
        let order = sort.compare(&sort.key(&x, &budget()).unwrap(), &sort.key(&y, &budget()).unwrap());
        let expected = compare(&reference_sort_key(&a, ascending), &reference_sort_key(&b, ascending));
        let expected = if ascending { expected } else { expected.reverse() };
        let expected = expected.then(std::cmp::Ordering::Less);
        prop_assert_eq!(order, expected, "{} vs {}", x, y);
    }

    #[test]
    fn a_projection_through_a_date_or_a_scalar_leaves_the_field_out(v in scalar(), w in scalar()) {
        let projection = Projection::parse(&json!({"o.x": 1})).unwrap();
        prop_assert_eq!(projection.apply(&json!({"_id": "1", "o": v})), json!({"_id": "1"}));
        // In an array, such elements are left out and documents keep `x`.
        let doc = json!({"_id": "1", "o": [v, {"x": w, "y": 1}]});
        prop_assert_eq!(projection.apply(&doc), json!({"_id": "1", "o": [{"x": w}]}));
    }

    #[test]
    fn index_keys_stay_within_their_caps(doc in document(), paths in prop::collection::vec(path(), 1..4)) {
        let started = Instant::now();
        match index_keys(&doc, &paths, &budget()) {
            Ok(keys) => prop_assert!(keys.len() <= super::keys::MAX_KEYS_PER_DOCUMENT),
            Err(QueryError::OverBudget(_)) => {}
            Err(other) => prop_assert!(false, "{}", other),
        }
        prop_assert!(started.elapsed() < CAP, "took {:?}", started.elapsed());
    }
}

/// `[{"0": [{"0": ...}]}]` `depth` levels deep under `a`.
fn nested_by_index(depth: usize) -> Value {
    let mut nested = json!(1);
    for _ in 0..depth {
        nested = json!([{ "0": nested }]);
    }
    json!({ "a": nested })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Adversarial shapes: paths of indexes through documents nested by
    /// index, wide `$in` lists against wide arrays, many-path updates.
    #[test]
    fn adversarial_input_is_answered_within_the_cap(
        depth in 1usize..48,
        parts in 1usize..120,
        width in 1usize..3000,
    ) {
        let started = Instant::now();
        let doc = nested_by_index(depth);
        let path = format!("a{}", ".0".repeat(parts));
        let filter = Filter::parse(&json!({ &path: 1 })).unwrap();
        let _ = filter.matches(&doc, &budget());
        let wide: Vec<i64> = (0..width as i64).collect();
        let listed: Vec<i64> = (width as i64..2 * width as i64).collect();
        let filter = Filter::parse(&json!({"l": {"$in": listed.clone()}, "m": {"$all": listed}})).unwrap();
        let _ = filter.matches(&json!({"l": wide, "m": wide}), &budget());
        let fields: Map<String, Value> = (0..width).map(|i| (format!("f{i}.g"), json!(i))).collect();
        let _ = Update::parse(&json!({"$set": fields}));
        let _ = index_keys(&json!({"a": wide, "b": wide, "c": wide}), &["a".into(), "b".into(), "c".into()], &budget());
        prop_assert!(started.elapsed() < Duration::from_secs(2), "took {:?}", started.elapsed());
    }
}

#[test]
fn stored_documents_read_back_as_written() {
    use std::sync::Arc;

    use super::query::value::canonicalize_dates;
    use super::sqlite::SqliteStore;
    use super::{Documents, StoreLimits, app_namespace};

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path(), Duration::from_secs(5)).unwrap();
    let documents = Documents::new(Arc::new(store), StoreLimits::default());
    let ns = app_namespace("props", "docs").unwrap();
    let config = ProptestConfig {
        cases: 64,
        ..ProptestConfig::default()
    };
    let mut runner = proptest::test_runner::TestRunner::new(config);
    runner
        .run(&document(), |doc| {
            let mut expected = doc.clone();
            canonicalize_dates(&mut expected);
            let stored = runtime.block_on(async {
                let id = documents.insert(ns, vec![doc]).await.unwrap().remove(0);
                documents.get(ns, &id).await.unwrap().unwrap()
            });
            let mut stored = stored;
            stored.as_object_mut().unwrap().shift_remove("_id");
            prop_assert_eq!(stored, expected);
            Ok(())
        })
        .unwrap();
}
