//! What is particular to the embedded store: it uses its indexes (a find on
//! an indexed field reads a key range instead of scanning the collection),
//! a call stops at its time budget, and concurrent writes share commits.

use std::sync::Arc;

use kiln::store::sqlite::SqliteStore;
use kiln::store::{Documents, FindOptions, StoreLimits, app_namespace};
use serde_json::json;

#[tokio::test]
async fn a_find_on_an_indexed_field_searches_the_index_instead_of_scanning() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open(dir.path(), std::time::Duration::from_secs(5)).unwrap());
    let docs = Documents::new(store.clone(), StoreLimits::default());
    let ns = app_namespace("shop", "orders").unwrap();
    let orders = (0..500)
        .map(|i| json!({"customer": format!("c{}", i % 50), "total": i}))
        .collect();
    docs.insert(ns, orders).await.unwrap();

    assert_eq!(
        store.explain(ns, &json!({"customer": "c7"})).await.unwrap(),
        None,
        "no index yet: a scan"
    );
    docs.create_index(ns, &json!({"customer": 1}), false)
        .await
        .unwrap();
    docs.create_index(ns, &json!({"total": 1}), false)
        .await
        .unwrap();

    for filter in [
        json!({"customer": "c7"}),
        json!({"customer": {"$in": ["c1", "c2"]}}),
        json!({"total": {"$gte": 10, "$lt": 20}}),
    ] {
        let plan = store
            .explain(ns, &filter)
            .await
            .unwrap()
            .expect("an index plan");
        let text = plan.join("\n");
        assert!(
            text.contains(
                "SEARCH e USING PRIMARY KEY (collection=? AND name=? AND key>? AND key<?)"
            ),
            "{filter}: {text}"
        );
        assert!(
            text.contains("SEARCH d USING PRIMARY KEY (collection=? AND id=?)"),
            "{filter}: {text}"
        );
        assert!(!text.contains("SCAN"), "{filter}: {text}");
    }
    let page = docs
        .find(ns, &json!({"customer": "c7"}), FindOptions::default())
        .await
        .unwrap();
    assert_eq!(page.documents.len(), 10);
    let page = docs
        .find(
            ns,
            &json!({"total": {"$gte": 10, "$lt": 20}}),
            FindOptions::default(),
        )
        .await
        .unwrap();
    assert_eq!(page.documents.len(), 10);
}

#[tokio::test]
async fn a_query_past_its_time_budget_is_limit_exceeded() {
    let dir = tempfile::tempdir().unwrap();
    let open = |budget_ms| {
        let store = SqliteStore::open(dir.path(), std::time::Duration::from_millis(budget_ms));
        Documents::new(Arc::new(store.unwrap()), StoreLimits::default())
    };
    // Filled with a roomy budget (inserts on a loaded machine can pass 1 ms),
    // then queried through a store with a 1 ms budget on the same files.
    let filling = open(10_000);
    let ns = app_namespace("shop", "big").unwrap();
    for batch in 0..20 {
        let chunk = (0..1000)
            .map(|i| json!({"n": batch * 1000 + i, "pad": "x".repeat(200)}))
            .collect();
        filling.insert(ns, chunk).await.unwrap();
    }
    let docs = open(1);
    // An unindexed regex over 20,000 documents takes longer than 1 ms.
    let err = docs.count(ns, &json!({"pad": {"$regex": "y$"}})).await;
    assert!(
        matches!(err, Err(kiln::store::StoreError::LimitExceeded(_))),
        "{err:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writes_share_commits_and_each_stands_alone() {
    let dir = tempfile::tempdir().unwrap();
    let open = || {
        let store =
            Arc::new(SqliteStore::open(dir.path(), std::time::Duration::from_secs(5)).unwrap());
        (store.clone(), Documents::new(store, StoreLimits::default()))
    };
    let (store, docs) = open();
    let ns = app_namespace("shop", "orders").unwrap();
    docs.insert(ns, vec![json!({"_id": "taken"})])
        .await
        .unwrap();
    let before = store.groups_committed("shop");
    // 200 writers at once; every tenth asks for an id already taken.
    let writes: Vec<_> = (0..200)
        .map(|i| {
            let docs = docs.clone();
            tokio::spawn(async move {
                let id = if i % 10 == 0 {
                    "taken".to_string()
                } else {
                    format!("o{i}")
                };
                docs.insert(ns, vec![json!({"_id": id, "n": i})]).await
            })
        })
        .collect();
    let mut written = 0;
    for write in writes {
        match write.await.unwrap() {
            Ok(_) => written += 1,
            Err(kiln::store::StoreError::Conflict(_)) => {}
            Err(other) => panic!("{other}"),
        }
    }
    assert_eq!(
        written, 180,
        "a refused write leaves its group's others standing"
    );
    let commits = store.groups_committed("shop") - before;
    assert!(
        commits < 180,
        "180 writes took {commits} commits: none shared one"
    );
    // Every acknowledged write is there after the store is opened again.
    drop((store, docs));
    let (_, docs) = open();
    let count = docs.count(ns, &json!({})).await.unwrap();
    assert_eq!(count, 181);
}
