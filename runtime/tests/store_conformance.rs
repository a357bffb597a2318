//! One conformance suite for the document store, run against every backend:
//! the embedded SQLite store always, MongoDB when `KILN_TEST_MONGODB_URI` is
//! set (CI points it at a wire-protocol stand-in).

use std::collections::BTreeSet;
use std::sync::Arc;

use kiln::store::{Documents, FindOptions, StoreError, StoreLimits, app_namespace};
use serde_json::{Value, json};

/// A fresh store and a unique app name (MongoDB runs share a server).
struct Fixture {
    docs: Documents,
    app: String,
    /// The MongoDB server is the CI stand-in (`KILN_TEST_MONGODB_STANDIN=1`):
    /// cases it cannot model say so and stop.
    standin: bool,
    _dir: Option<tempfile::TempDir>,
}

fn unique_app() -> String {
    format!("t{}", rand_suffix())
}

fn rand_suffix() -> String {
    use std::time::{SystemTime, UNIX_EPOCH};
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{:x}{:x}", nanos, std::process::id())
}

async fn sqlite() -> Option<Fixture> {
    let dir = tempfile::tempdir().unwrap();
    let store =
        kiln::store::sqlite::SqliteStore::open(dir.path(), std::time::Duration::from_secs(5))
            .unwrap();
    Some(Fixture {
        docs: Documents::new(Arc::new(store), StoreLimits { max_results: 50 }),
        app: unique_app(),
        standin: false,
        _dir: Some(dir),
    })
}

async fn mongodb() -> Option<Fixture> {
    let Ok(uri) = std::env::var("KILN_TEST_MONGODB_URI") else {
        eprintln!("KILN_TEST_MONGODB_URI is not set: skipping the MongoDB run");
        return None;
    };
    let store = kiln::store::mongo::MongoStore::connect(&uri, std::time::Duration::from_secs(5))
        .await
        .unwrap();
    Some(Fixture {
        docs: Documents::new(Arc::new(store), StoreLimits { max_results: 50 }),
        app: unique_app(),
        standin: std::env::var("KILN_TEST_MONGODB_STANDIN").is_ok_and(|v| v == "1"),
        _dir: None,
    })
}

impl Fixture {
    fn ns(&self, collection: &'static str) -> kiln::store::Namespace<'_> {
        app_namespace(&self.app, collection).unwrap()
    }

    async fn ids(&self, collection: &'static str, filter: Value) -> BTreeSet<String> {
        let page = self
            .docs
            .find(self.ns(collection), &filter, FindOptions::default())
            .await
            .unwrap_or_else(|e| panic!("{filter}: {e}"));
        page.documents
            .iter()
            .map(|d| d["_id"].as_str().unwrap().to_string())
            .collect()
    }

    /// True (after saying so) when this case needs a real MongoDB server.
    fn needs_real_server(&self, why: &str) -> bool {
        if self.standin {
            eprintln!("needs a real MongoDB server, skipped on the stand-in: {why}");
        }
        self.standin
    }

    async fn one(&self, collection: &'static str, id: &str) -> Value {
        self.docs
            .get(self.ns(collection), id)
            .await
            .unwrap()
            .expect("the document exists")
    }
}

fn set(ids: &[&str]) -> BTreeSet<String> {
    ids.iter().map(|s| s.to_string()).collect()
}

async fn inserts_and_gets_documents_with_string_ids(f: Fixture) {
    let ns = f.ns("things");
    let ids = f
        .docs
        .insert(ns, vec![json!({"n": 1}), json!({"_id": "mine", "n": 2})])
        .await
        .unwrap();
    assert_eq!(ids[1], "mine");
    assert_eq!(ids[0].len(), 24, "a generated id is 24 hex digits");
    assert_eq!(
        f.one("things", &ids[0]).await,
        json!({"_id": ids[0], "n": 1})
    );
    let dup = f
        .docs
        .insert(ns, vec![json!({"_id": "new"}), json!({"_id": "mine"})])
        .await;
    assert!(matches!(dup, Err(StoreError::Conflict(_))), "{dup:?}");
    assert!(
        f.docs.get(ns, "new").await.unwrap().is_none(),
        "insert-many is all or nothing"
    );
    assert!(f.docs.get(ns, "absent").await.unwrap().is_none());
}

async fn filters_with_every_operator_of_the_subset(f: Fixture) {
    let ns = f.ns("people");
    f.docs
        .insert(
            ns,
            vec![
                json!({"_id": "ann", "age": 31, "name": "Ann", "tags": ["a", "b"], "addr": {"city": "Oslo"}, "scores": [{"k": "x", "v": 5}], "at": {"$date": "2024-01-01T00:00:00Z"}}),
                json!({"_id": "bob", "age": 25.5, "name": "bob", "tags": ["b"], "addr": {"city": "Rome"}, "scores": [{"k": "x", "v": 9}], "at": {"$date": "2024-06-01T00:00:00Z"}}),
                json!({"_id": "cid", "age": "40", "name": "Cid\nline", "tags": [], "addr": null}),
                json!({"_id": "dee", "name": "Dee"}),
            ],
        )
        .await
        .unwrap();
    let cases = [
        (json!({}), vec!["ann", "bob", "cid", "dee"]),
        (json!({"addr.city": "Oslo"}), vec!["ann"]),
        (json!({"tags": "b"}), vec!["ann", "bob"]),
        (json!({"tags": ["b"]}), vec!["bob"]),
        (json!({"age": {"$eq": 31}}), vec!["ann"]),
        (json!({"age": {"$ne": 31}}), vec!["bob", "cid", "dee"]),
        (json!({"age": {"$gt": 25.5}}), vec!["ann"]),
        (json!({"age": {"$gte": 25.5}}), vec!["ann", "bob"]),
        (json!({"age": {"$lt": 31}}), vec!["bob"]),
        (json!({"age": {"$lte": 31}}), vec!["ann", "bob"]),
        (json!({"age": {"$gt": "3"}}), vec!["cid"]),
        (json!({"age": {"$in": [31, "40"]}}), vec!["ann", "cid"]),
        (json!({"age": {"$nin": [31, "40"]}}), vec!["bob", "dee"]),
        (json!({"age": {"$exists": false}}), vec!["dee"]),
        (json!({"addr": null}), vec!["cid", "dee"]),
        (
            json!({"$and": [{"tags": "b"}, {"age": {"$lt": 30}}]}),
            vec!["bob"],
        ),
        (
            json!({"$or": [{"name": "Dee"}, {"age": 31}]}),
            vec!["ann", "dee"],
        ),
        (
            json!({"$nor": [{"tags": "b"}, {"name": "Dee"}]}),
            vec!["cid"],
        ),
        (
            json!({"age": {"$not": {"$gt": 30}}}),
            vec!["bob", "cid", "dee"],
        ),
        (json!({"name": {"$regex": "^b"}}), vec!["bob"]),
        (
            json!({"name": {"$regex": "^b", "$options": "i"}}),
            vec!["bob"],
        ),
        (
            json!({"name": {"$regex": "^line", "$options": "m"}}),
            vec!["cid"],
        ),
        (
            json!({"name": {"$regex": "d.l", "$options": "s"}}),
            vec!["cid"],
        ),
        (json!({"tags": {"$size": 0}}), vec!["cid"]),
        (json!({"tags": {"$all": ["b", "a"]}}), vec!["ann"]),
        (
            json!({"scores": {"$elemMatch": {"k": "x", "v": {"$gt": 6}}}}),
            vec!["bob"],
        ),
        (
            json!({"at": {"$lt": {"$date": "2024-03-01T00:00:00Z"}}}),
            vec!["ann"],
        ),
        (
            json!({"at": {"$gte": {"$date": "2024-01-01T00:00:00+00:00"}}}),
            vec!["ann", "bob"],
        ),
    ];
    for (filter, expected) in cases {
        assert_eq!(
            f.ids("people", filter.clone()).await,
            set(&expected),
            "{filter}"
        );
    }
    for bad in [
        json!({"$where": "x"}),
        json!({"a": {"$type": 2}}),
        json!({"a": {"$regex": "("}}),
        json!([1]),
    ] {
        let err = f.docs.find(ns, &bad, FindOptions::default()).await;
        assert!(
            matches!(err, Err(StoreError::InvalidInput(_))),
            "{bad}: {err:?}"
        );
    }
}

async fn applies_every_update_operator(f: Fixture) {
    let ns = f.ns("items");
    f.docs
        .insert(ns, vec![json!({"_id": "i", "v": ["a"], "n": 1, "lo": 5, "hi": 5, "old": 1, "gone": 1, "t": ["a"], "s": [1, 5, 8], "o": [{"q": 1}, {"q": 7}]})])
        .await
        .unwrap();
    let outcome = f
        .docs
        .update(
            ns,
            &json!({"_id": "i"}),
            &json!({
                "$set": {"a.b": "x"}, "$unset": {"gone": ""}, "$inc": {"n": 2},
                "$min": {"lo": 3}, "$max": {"hi": 3}, "$push": {"t": {"$each": ["b", "c"]}},
                "$addToSet": {"u": {"$each": [1, 2]}, "v": "a"}, "$pull": {"s": {"$gte": 5}, "o": {"q": {"$lt": 5}}},
                "$rename": {"old": "new"}, "$currentDate": {"at": true}, "$setOnInsert": {"never": 1},
            }),
            false,
            false,
        )
        .await
        .unwrap();
    assert_eq!((outcome.matched, outcome.modified), (1, 1));
    let doc = f.one("items", "i").await;
    let mut expected = json!({"_id": "i", "v": ["a"], "n": 3, "lo": 3, "hi": 5, "t": ["a", "b", "c"], "s": [1], "o": [{"q": 7}], "a": {"b": "x"}, "u": [1, 2], "new": 1});
    let at = doc["at"].clone();
    assert!(
        at["$date"].as_str().is_some_and(|d| d.starts_with("20")),
        "{at}"
    );
    expected["at"] = at;
    let sorted = |v: &Value| {
        v.as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect::<std::collections::BTreeMap<_, _>>()
    };
    assert_eq!(sorted(&doc), sorted(&expected));

    let err = f
        .docs
        .update(ns, &json!({}), &json!({"$bit": {"n": 1}}), false, false)
        .await;
    assert!(
        matches!(&err, Err(StoreError::InvalidInput(m)) if m.contains("$bit")),
        "{err:?}"
    );
}

async fn multiplies_adds_to_sets_once_and_refuses_type_errors(f: Fixture) {
    if f.needs_real_server("mongomock has no $mul, keeps repeats within $addToSet $each, and reports a type error as UnknownError") {
        return;
    }
    let ns = f.ns("m");
    f.docs
        .insert(ns, vec![json!({"_id": "m", "f": 2, "i": 3})])
        .await
        .unwrap();
    f.docs
        .update(ns, &json!({}), &json!({"$mul": {"f": 1.5, "i": 2, "none": 4}, "$addToSet": {"u": {"$each": [1, 1, 2]}}}), false, false)
        .await
        .unwrap();
    let doc = f.one("m", "m").await;
    assert_eq!(
        (doc["f"].as_f64(), doc["i"].as_i64(), doc["none"].as_i64()),
        (Some(3.0), Some(6), Some(0))
    );
    assert_eq!(doc["u"], json!([1, 2]));

    let err = f
        .docs
        .update(ns, &json!({}), &json!({"$inc": {"u": 1}}), false, false)
        .await;
    assert!(matches!(err, Err(StoreError::InvalidInput(_))), "{err:?}");
    assert_eq!(
        f.one("m", "m").await["u"],
        json!([1, 2]),
        "a failed update writes nothing"
    );
}

async fn updates_many_and_upserts(f: Fixture) {
    let ns = f.ns("c");
    f.docs
        .insert(
            ns,
            vec![
                json!({"_id": "1", "k": "a"}),
                json!({"_id": "2", "k": "a"}),
                json!({"_id": "3", "k": "b"}),
            ],
        )
        .await
        .unwrap();
    let one = f
        .docs
        .update(
            ns,
            &json!({"k": "a"}),
            &json!({"$set": {"x": 1}}),
            false,
            false,
        )
        .await
        .unwrap();
    assert_eq!((one.matched, one.modified), (1, 1));
    let many = f
        .docs
        .update(
            ns,
            &json!({"k": "a"}),
            &json!({"$set": {"x": 1}}),
            false,
            true,
        )
        .await
        .unwrap();
    assert_eq!((many.matched, many.modified), (2, 1));
    let up = f
        .docs
        .update(
            ns,
            &json!({"k": "z", "n": 5}),
            &json!({"$inc": {"c": 1}, "$setOnInsert": {"s": true}}),
            true,
            false,
        )
        .await
        .unwrap();
    let new_id = up.upserted_id.expect("upserted");
    let doc = f.one("c", &new_id).await;
    assert_eq!(
        (
            doc["k"].clone(),
            doc["n"].clone(),
            doc["c"].clone(),
            doc["s"].clone()
        ),
        (json!("z"), json!(5), json!(1), json!(true))
    );

    let replaced = f
        .docs
        .replace(ns, &json!({"_id": "3"}), json!({"k": "r"}), false)
        .await
        .unwrap();
    assert_eq!(replaced.matched, 1);
    assert_eq!(f.one("c", "3").await, json!({"_id": "3", "k": "r"}));
    let replaced = f
        .docs
        .replace(ns, &json!({"k": "none"}), json!({"k": "fresh"}), true)
        .await
        .unwrap();
    assert!(replaced.upserted_id.is_some());

    let before = f
        .docs
        .find_one_and_update(
            ns,
            &json!({"_id": "1"}),
            &json!({"$inc": {"x": 10}}),
            false,
            false,
        )
        .await
        .unwrap();
    assert_eq!(before.unwrap()["x"], 1);
    let after = f
        .docs
        .find_one_and_update(
            ns,
            &json!({"_id": "1"}),
            &json!({"$inc": {"x": 10}}),
            true,
            false,
        )
        .await
        .unwrap();
    assert_eq!(after.unwrap()["x"], 21);
    let created = f
        .docs
        .find_one_and_update(
            ns,
            &json!({"_id": "9"}),
            &json!({"$set": {"y": 1}}),
            true,
            true,
        )
        .await
        .unwrap();
    assert_eq!(created.unwrap(), json!({"_id": "9", "y": 1}));
    let nothing = f
        .docs
        .find_one_and_update(
            ns,
            &json!({"_id": "none"}),
            &json!({"$set": {"y": 1}}),
            true,
            false,
        )
        .await
        .unwrap();
    assert!(nothing.is_none());

    assert_eq!(f.docs.count(ns, &json!({"k": "a"})).await.unwrap(), 2);
    assert_eq!(
        f.docs.delete(ns, &json!({"k": "a"}), false).await.unwrap(),
        1
    );
    assert_eq!(f.docs.delete(ns, &json!({}), true).await.unwrap(), 5);
    assert_eq!(f.docs.count(ns, &json!({})).await.unwrap(), 0);
}

async fn sorts_mixed_types_and_projects(f: Fixture) {
    let ns = f.ns("mixed");
    f.docs
        .insert(
            ns,
            vec![
                json!({"_id": "s", "v": "text", "x": 1, "y": 2}),
                json!({"_id": "n", "v": 3, "x": 1, "y": 2}),
                json!({"_id": "m"}),
                json!({"_id": "b", "v": false}),
                json!({"_id": "d", "v": {"$date": "2024-01-01T00:00:00Z"}}),
                json!({"_id": "f", "v": 2.5}),
            ],
        )
        .await
        .unwrap();
    let page = f
        .docs
        .find(
            ns,
            &json!({}),
            FindOptions {
                sort: Some(json!({"v": 1})),
                projection: Some(json!({"v": 1})),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let ids: Vec<&str> = page
        .documents
        .iter()
        .map(|d| d["_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["m", "f", "n", "s", "b", "d"]);
    assert_eq!(page.documents[3], json!({"_id": "s", "v": "text"}));
    // Dates come back in one spelling: UTC with milliseconds.
    assert_eq!(
        page.documents[5],
        json!({"_id": "d", "v": {"$date": "2024-01-01T00:00:00.000Z"}})
    );
    let page = f
        .docs
        .find(
            ns,
            &json!({"_id": "s"}),
            FindOptions {
                projection: Some(json!({"_id": 0, "v": 0})),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(page.documents, vec![json!({"x": 1, "y": 2})]);
    let page = f
        .docs
        .find(
            ns,
            &json!({}),
            FindOptions {
                sort: Some(json!({"v": -1})),
                skip: Some(1),
                limit: Some(2),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let ids: Vec<&str> = page
        .documents
        .iter()
        .map(|d| d["_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["b", "s"]);
}

async fn reads_past_the_result_limit_only_with_a_cursor(f: Fixture) {
    let ns = f.ns("many");
    let docs = (0..120)
        .map(|i| json!({"_id": format!("{i:03}"), "i": i}))
        .collect();
    f.docs.insert(ns, docs).await.unwrap();
    let err = f.docs.find(ns, &json!({}), FindOptions::default()).await;
    assert!(matches!(err, Err(StoreError::LimitExceeded(_))), "{err:?}");
    let mut seen = Vec::new();
    let mut cursor = None;
    loop {
        let options = FindOptions {
            sort: Some(json!({"i": -1})),
            batch_size: Some(50),
            cursor: cursor.take(),
            ..Default::default()
        };
        let page = f.docs.find(ns, &json!({}), options).await.unwrap();
        seen.extend(page.documents.iter().map(|d| d["i"].as_i64().unwrap()));
        match page.cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    assert_eq!(
        seen,
        (0..120).rev().collect::<Vec<_>>(),
        "three batches, in order, nothing twice"
    );
    let other = FindOptions {
        batch_size: Some(50),
        cursor: Some("bm9wZQ".into()),
        ..Default::default()
    };
    assert!(matches!(
        f.docs.find(ns, &json!({}), other).await,
        Err(StoreError::InvalidInput(_))
    ));
}

async fn unique_indexes_refuse_duplicates(f: Fixture) {
    let ns = f.ns("users");
    f.docs
        .create_index(ns, &json!({"email": 1}), true)
        .await
        .unwrap();
    f.docs
        .create_index(ns, &json!({"email": 1}), true)
        .await
        .unwrap();
    f.docs
        .create_index(ns, &json!({"team": 1, "rank": -1}), false)
        .await
        .unwrap();
    f.docs
        .insert(
            ns,
            vec![
                json!({"_id": "a", "email": "a@x"}),
                json!({"_id": "b", "email": "b@x"}),
            ],
        )
        .await
        .unwrap();
    let dup = f.docs.insert(ns, vec![json!({"email": "a@x"})]).await;
    assert!(matches!(dup, Err(StoreError::Conflict(_))), "{dup:?}");
    let dup = f
        .docs
        .update(
            ns,
            &json!({"_id": "b"}),
            &json!({"$set": {"email": "a@x"}}),
            false,
            false,
        )
        .await;
    assert!(matches!(dup, Err(StoreError::Conflict(_))), "{dup:?}");
    assert_eq!(f.one("users", "b").await["email"], "b@x");
    assert_eq!(f.ids("users", json!({"email": "a@x"})).await, set(&["a"]));
    let clash = f
        .docs
        .create_index(f.ns("users"), &json!({"team": 1}), true)
        .await;
    assert!(
        matches!(clash, Err(StoreError::Conflict(_))),
        "two documents lack `team`: {clash:?}"
    );
}

async fn apps_cannot_see_each_others_collections(f: Fixture) {
    let other = unique_app() + "x";
    let mine = app_namespace(&f.app, "shared").unwrap();
    let theirs = app_namespace(&other, "shared").unwrap();
    f.docs
        .insert(mine, vec![json!({"_id": "1"})])
        .await
        .unwrap();
    assert_eq!(f.docs.count(theirs, &json!({})).await.unwrap(), 0);
    assert_eq!(f.docs.count(mine, &json!({})).await.unwrap(), 1);
    for bad in [
        "",
        "_kiln",
        "a.b",
        "../x",
        "x y",
        "système",
        &"c".repeat(65),
    ] {
        assert!(
            matches!(app_namespace(&f.app, bad), Err(StoreError::InvalidInput(_))),
            "{bad}"
        );
    }
    f.docs.drop_collection(mine).await.unwrap();
    assert_eq!(f.docs.count(mine, &json!({})).await.unwrap(), 0);
}

async fn concurrent_increments_are_exact(f: Fixture) {
    let ns_app = f.app.clone();
    f.docs
        .insert(f.ns("counters"), vec![json!({"_id": "c", "n": 0})])
        .await
        .unwrap();
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let docs = f.docs.clone();
            let app = ns_app.clone();
            tokio::spawn(async move {
                for _ in 0..25 {
                    let ns = app_namespace(&app, "counters").unwrap();
                    docs.update(
                        ns,
                        &json!({"_id": "c"}),
                        &json!({"$inc": {"n": 1}}),
                        false,
                        false,
                    )
                    .await
                    .unwrap();
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(f.one("counters", "c").await["n"], 200);
}

async fn refuses_bad_documents(f: Fixture) {
    let ns = f.ns("bad");
    let mut deep = json!(1);
    for _ in 0..101 {
        deep = json!({ "d": deep });
    }
    for doc in [
        json!({"$x": 1}),
        json!({"a.b": 1}),
        json!({"_id": 7}),
        json!("text"),
        deep,
        json!({"at": {"$date": "nope"}}),
    ] {
        let err = f.docs.insert(ns, vec![doc.clone()]).await;
        assert!(
            matches!(err, Err(StoreError::InvalidInput(_))),
            "{doc}: {err:?}"
        );
    }
    assert_eq!(f.docs.count(ns, &json!({})).await.unwrap(), 0);
}

/// The scheduler's leases rely on this: an upsert whose filter does not
/// match a document with that `_id` inserts it, and one that collides with an
/// existing `_id` is a conflict that changes nothing.
async fn an_upsert_onto_a_taken_id_is_a_conflict(f: Fixture) {
    let ns = f.ns("locks");
    let take = |holder: &str, now: u64| {
        let filter = json!({"_id": "lock", "$or": [{"until": {"$lt": now}}, {"holder": holder}]});
        let update = json!({"$set": {"until": now + 100, "holder": holder}});
        (filter, update)
    };
    let (filter, update) = take("a", 1000);
    f.docs
        .update(ns, &filter, &update, true, false)
        .await
        .unwrap();
    let (filter, update) = take("b", 1050);
    let err = f
        .docs
        .update(ns, &filter, &update, true, false)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");
    assert_eq!(
        f.docs.get(ns, "lock").await.unwrap().unwrap()["holder"],
        "a"
    );
    // The holder renews; after the lease anyone takes it.
    let (filter, update) = take("a", 1060);
    f.docs
        .update(ns, &filter, &update, true, false)
        .await
        .unwrap();
    let (filter, update) = take("b", 2000);
    f.docs
        .update(ns, &filter, &update, true, false)
        .await
        .unwrap();
    assert_eq!(
        f.docs.get(ns, "lock").await.unwrap().unwrap()["holder"],
        "b"
    );
    // `$max` keeps the larger value, inserting when absent.
    let state = |v: u64| json!({"$max": {"last": v}});
    for v in [5, 3, 9] {
        f.docs
            .update(ns, &json!({"_id": "state"}), &state(v), true, false)
            .await
            .unwrap();
    }
    assert_eq!(f.docs.get(ns, "state").await.unwrap().unwrap()["last"], 9);
}

async fn integer_overflow_is_refused_and_writes_nothing(f: Fixture) {
    if f.needs_real_server("mongomock's integers are Python's, which never overflow") {
        return;
    }
    let ns = f.ns("numbers");
    f.docs
        .insert(ns, vec![json!({"_id": "n", "i": i64::MAX, "j": 5})])
        .await
        .unwrap();
    for update in [json!({"$inc": {"i": 1}}), json!({"$mul": {"i": 2}})] {
        let err = f
            .docs
            .update(ns, &json!({"_id": "n"}), &update, false, false)
            .await
            .unwrap_err();
        assert!(
            matches!(err, StoreError::InvalidInput(_)),
            "{update}: {err:?}"
        );
    }
    assert_eq!(
        f.one("numbers", "n").await,
        json!({"_id": "n", "i": i64::MAX, "j": 5})
    );
}

async fn replace_upserts_with_the_filters_id_kept_first(f: Fixture) {
    let ns = f.ns("replaced");
    let outcome = f
        .docs
        .replace(ns, &json!({"_id": "wanted"}), json!({"b": 2}), true)
        .await
        .unwrap();
    assert_eq!(outcome.upserted_id.as_deref(), Some("wanted"));
    let doc = f.one("replaced", "wanted").await;
    assert_eq!(doc, json!({"_id": "wanted", "b": 2}));
    assert_eq!(doc.as_object().unwrap().keys().next().unwrap(), "_id");
    f.docs
        .replace(ns, &json!({"b": 2}), json!({"c": 3}), false)
        .await
        .unwrap();
    let doc = f.one("replaced", "wanted").await;
    assert_eq!(
        doc.as_object().unwrap().keys().collect::<Vec<_>>(),
        ["_id", "c"]
    );
    if f.needs_real_server("mongomock puts an upserted _id after the filter's fields") {
        return;
    }
    let upserted = f
        .docs
        .update(
            ns,
            &json!({"k": 1}),
            &json!({"$set": {"v": 2}}),
            true,
            false,
        )
        .await
        .unwrap()
        .upserted_id
        .unwrap();
    let doc = f.docs.get(ns, &upserted).await.unwrap().unwrap();
    assert_eq!(doc.as_object().unwrap().keys().next().unwrap(), "_id");
}

async fn null_queries_match_missing_fields_through_arrays_of_documents(f: Fixture) {
    if f.needs_real_server("mongomock does not treat `$gte: null` as null equality") {
        return;
    }
    let ns = f.ns("nulls");
    f.docs
        .insert(
            ns,
            vec![
                json!({"_id": "mixed", "arr": [{"w": 1}, {"v": 2}]}),
                json!({"_id": "all", "arr": [{"w": 1}, {"w": 2}]}),
                json!({"_id": "null", "arr": [{"w": null}]}),
                json!({"_id": "none"}),
            ],
        )
        .await
        .unwrap();
    // The same with an index on the path (the embedded store reads it).
    for indexed in [false, true] {
        if indexed {
            f.docs
                .create_index(ns, &json!({"arr.w": 1}), false)
                .await
                .unwrap();
        }
        assert_eq!(
            f.ids("nulls", json!({"arr.w": null})).await,
            set(&["mixed", "null", "none"])
        );
        assert_eq!(
            f.ids("nulls", json!({"arr.w": {"$in": [null]}})).await,
            set(&["mixed", "null", "none"])
        );
        assert_eq!(
            f.ids("nulls", json!({"arr.w": {"$ne": null}})).await,
            set(&["all"])
        );
        assert_eq!(
            f.ids("nulls", json!({"arr.w": {"$gte": null}})).await,
            set(&["mixed", "null", "none"])
        );
    }
}

async fn empty_arrays_sort_first_and_projections_skip_scalar_parents(f: Fixture) {
    let ns = f.ns("shapes");
    f.docs
        .insert(
            ns,
            vec![
                json!({"_id": "a", "v": 1, "o": 42}),
                json!({"_id": "b", "v": []}),
                json!({"_id": "c", "v": null, "o": {"x": 1}}),
            ],
        )
        .await
        .unwrap();
    let sorted = |direction: i32| FindOptions {
        sort: Some(json!({"v": direction})),
        ..FindOptions::default()
    };
    let ids = |docs: Vec<Value>| {
        docs.iter()
            .map(|d| d["_id"].as_str().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    let up = f
        .docs
        .find(ns, &json!({}), sorted(1))
        .await
        .unwrap()
        .documents;
    assert_eq!(ids(up), ["b", "c", "a"]);
    let down = f
        .docs
        .find(ns, &json!({}), sorted(-1))
        .await
        .unwrap()
        .documents;
    assert_eq!(ids(down), ["a", "c", "b"]);
    if f.needs_real_server("mongomock projects a path through a scalar as an empty document") {
        return;
    }
    let projected = f
        .docs
        .find(
            ns,
            &json!({"_id": "a"}),
            FindOptions {
                projection: Some(json!({"o.x": 1})),
                ..FindOptions::default()
            },
        )
        .await
        .unwrap()
        .documents;
    assert_eq!(projected, vec![json!({"_id": "a"})]);
}

async fn dates_push_as_values_and_all_takes_elem_match(f: Fixture) {
    let ns = f.ns("pushes");
    let date = json!({"$date": "2024-01-01T00:00:00.000Z"});
    f.docs
        .insert(
            ns,
            vec![json!({"_id": "p", "s": [{"k": 1, "v": 5}, {"k": 2, "v": 9}]})],
        )
        .await
        .unwrap();
    f.docs
        .update(
            ns,
            &json!({"_id": "p"}),
            &json!({"$push": {"d": date.clone()}, "$addToSet": {"e": date.clone()}}),
            false,
            false,
        )
        .await
        .unwrap();
    let doc = f.one("pushes", "p").await;
    assert_eq!(
        (&doc["d"], &doc["e"]),
        (&json!([date.clone()]), &json!([date]))
    );
    if f.needs_real_server("mongomock has no $all of $elemMatch") {
        return;
    }
    let both =
        json!({"s": {"$all": [{"$elemMatch": {"k": 1}}, {"$elemMatch": {"v": {"$gt": 8}}}]}});
    assert_eq!(f.ids("pushes", both).await, set(&["p"]));
    let one_element = json!({"s": {"$all": [{"$elemMatch": {"k": 1, "v": 9}}]}});
    assert!(f.ids("pushes", one_element).await.is_empty());
}

async fn elem_match_mixed_keys_and_exact_numbers(f: Fixture) {
    let ns = f.ns("exact");
    f.docs
        .insert(
            ns,
            vec![
                json!({"_id": "nested", "a": [[6]], "s": [1]}),
                json!({"_id": "flat", "a": [1, 6], "s": [1, 2]}),
                json!({"_id": "big", "n": i64::MAX}),
                json!({"_id": "two63", "n": 9223372036854775808.0}),
            ],
        )
        .await
        .unwrap();
    assert_eq!(
        f.ids("exact", json!({"n": 9223372036854775808.0})).await,
        set(&["two63"])
    );
    assert_eq!(
        f.ids("exact", json!({"n": {"$lt": 9223372036854775808.0}}))
            .await,
        set(&["big"])
    );
    assert_eq!(
        f.ids("exact", json!({"s": {"$size": 2.0}})).await,
        set(&["flat"])
    );
    for mixed in [
        json!({"a": {"b": 1, "$gt": 0}}),
        json!({"a": {"$gt": 0, "b": 1}}),
    ] {
        let err = f
            .docs
            .find(ns, &mixed, FindOptions::default())
            .await
            .unwrap_err();
        assert!(
            matches!(err, StoreError::InvalidInput(_)),
            "{mixed}: {err:?}"
        );
    }
    if f.needs_real_server("mongomock searches nested arrays inside $elemMatch") {
        return;
    }
    assert_eq!(
        f.ids("exact", json!({"a": {"$elemMatch": {"$gt": 5}}}))
            .await,
        set(&["flat"])
    );
}

async fn a_swap_writes_only_over_the_document_it_was_given(f: Fixture) {
    let ns = f.ns("swapped");
    let first = json!({"_id": "s", "n": 1, "at": {"$date": "2024-01-01T00:00:00Z"}, "tags": ["a"]});
    let written = f
        .docs
        .swap(ns, "s", None, Some(first.clone()))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (written.before, written.after.clone()),
        (None, Some(first.clone()))
    );
    let again = f.docs.swap(ns, "s", None, Some(first.clone())).await;
    assert!(matches!(again, Err(StoreError::Conflict(_))), "{again:?}");
    let second =
        json!({"_id": "s", "n": 2, "at": {"$date": "2024-01-01T00:00:00Z"}, "tags": ["a"]});
    let stale = json!({"_id": "s", "n": 0, "at": {"$date": "2024-01-01T00:00:00Z"}, "tags": ["a"]});
    assert_eq!(
        f.docs
            .swap(ns, "s", Some(stale.clone()), Some(second.clone()))
            .await
            .unwrap(),
        None,
        "a stale before writes nothing"
    );
    assert_eq!(f.one("swapped", "s").await["n"], json!(1));
    let written = f
        .docs
        .swap(ns, "s", Some(first.clone()), Some(second.clone()))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(written.before, Some(first.clone()));
    assert_eq!(f.one("swapped", "s").await["n"], json!(2));
    assert_eq!(
        f.docs.swap(ns, "s", Some(first), None).await.unwrap(),
        None,
        "nor deletes"
    );
    assert!(
        f.docs
            .swap(ns, "s", Some(second), None)
            .await
            .unwrap()
            .is_some()
    );
    assert!(f.docs.get(ns, "s").await.unwrap().is_none());
}

macro_rules! conformance {
    ($backend:ident: $($case:ident),* $(,)?) => {
        mod $backend {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    if let Some(fixture) = super::$backend().await {
                        super::$case(fixture).await;
                    }
                }
            )*
        }
    };
}

macro_rules! every_backend {
    ($($case:ident),* $(,)?) => {
        conformance!(sqlite: $($case),*);
        conformance!(mongodb: $($case),*);
    };
}

every_backend!(
    inserts_and_gets_documents_with_string_ids,
    filters_with_every_operator_of_the_subset,
    applies_every_update_operator,
    multiplies_adds_to_sets_once_and_refuses_type_errors,
    updates_many_and_upserts,
    sorts_mixed_types_and_projects,
    reads_past_the_result_limit_only_with_a_cursor,
    unique_indexes_refuse_duplicates,
    apps_cannot_see_each_others_collections,
    concurrent_increments_are_exact,
    refuses_bad_documents,
    an_upsert_onto_a_taken_id_is_a_conflict,
    integer_overflow_is_refused_and_writes_nothing,
    replace_upserts_with_the_filters_id_kept_first,
    null_queries_match_missing_fields_through_arrays_of_documents,
    empty_arrays_sort_first_and_projections_skip_scalar_parents,
    dates_push_as_values_and_all_takes_elem_match,
    elem_match_mixed_keys_and_exact_numbers,
    a_swap_writes_only_over_the_document_it_was_given,
);
