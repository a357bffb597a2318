//! Measures the embedded document store with 100,000 documents: insert
//! throughput, indexed find-by-field latency, and the cost of one database
//! call through the Wasm boundary against the same call made natively.
//! Run by `bench/run`, which reads the JSON this prints on stdout.
//!
//! Usage: bench-database <db-loop.wasm>

use std::sync::Arc;
use std::time::{Duration, Instant};

use kiln::store::sqlite::SqliteStore;
use kiln::store::{Documents, FindOptions, StoreLimits, app_namespace};
use serde_json::json;

const DOCUMENTS: usize = 100_000;
const CUSTOMERS: usize = 10_000;
const SINGLE_INSERTS: usize = 2_000;
const FINDS: usize = 5_000;
/// Native and guest calls alternate over this many rounds; the medians count.
const ROUNDS: usize = 5;
const CALLS_PER_ROUND: u32 = 2_000;

#[tokio::main]
async fn main() {
    kiln::install_crypto_provider();
    let Some(component) = std::env::args().nth(1) else {
        eprintln!("usage: bench-database <db-loop.wasm>");
        std::process::exit(2);
    };
    let data = tempfile::tempdir().unwrap();
    let store =
        Arc::new(SqliteStore::open(&data.path().join("db"), Duration::from_secs(30)).unwrap());
    let docs = Arc::new(Documents::new(store, StoreLimits::default()));
    let ns = app_namespace("bench", "orders").unwrap();
    let order = |i: usize| json!({"_id": format!("o{i}"), "customer": format!("c{}", i % CUSTOMERS), "total": i, "items": ["a", "b"]});

    // Inserts: batches of 1,000 (one transaction each), then single inserts (one commit, one fsync each).
    let started = Instant::now();
    for batch in 0..(DOCUMENTS / 1000) {
        docs.insert(ns, (batch * 1000..(batch + 1) * 1000).map(order).collect())
            .await
            .unwrap();
    }
    let batched = DOCUMENTS as f64 / started.elapsed().as_secs_f64();
    eprintln!("batched inserts: {batched:.0} docs/s");
    docs.create_index(ns, &json!({"customer": 1}), false)
        .await
        .unwrap();
    let started = Instant::now();
    for i in 0..SINGLE_INSERTS {
        docs.insert(ns, vec![order(DOCUMENTS + i)]).await.unwrap();
    }
    let single = SINGLE_INSERTS as f64 / started.elapsed().as_secs_f64();
    eprintln!("single inserts: {single:.0} docs/s");

    // Indexed finds by a random customer (10 or 11 matches each).
    let mut latencies = Vec::with_capacity(FINDS);
    for _ in 0..FINDS {
        let key = format!("c{}", rand::random_range(0..CUSTOMERS));
        let started = Instant::now();
        let page = docs
            .find(ns, &json!({"customer": key}), limit_10())
            .await
            .unwrap();
        latencies.push(started.elapsed());
        assert_eq!(page.documents.len(), 10);
    }
    latencies.sort();
    let p50 = latencies[FINDS / 2];
    let p99 = latencies[FINDS * 99 / 100];
    eprintln!("indexed finds: p50 {p50:?}, p99 {p99:?}");

    // The same find and get, natively and from a guest, alternating. The
    // native calls run on a runtime worker, as a guest's calls do: a future
    // on the main thread is woken differently when the blocking pool answers.
    let guest = Guest::start(data.path(), &component).await;
    let mut per_call: [Vec<Duration>; 4] = Default::default();
    for round in 0..ROUNDS {
        per_call[0].push(
            tokio::spawn(native_per_call(docs.clone(), "find"))
                .await
                .unwrap(),
        );
        per_call[1].push(guest.per_call("find", "c7").await);
        per_call[2].push(
            tokio::spawn(native_per_call(docs.clone(), "get"))
                .await
                .unwrap(),
        );
        per_call[3].push(guest.per_call("get", "o7").await);
        eprintln!(
            "round {}: find native {:?} guest {:?}; get native {:?} guest {:?}",
            round + 1,
            per_call[0][round],
            per_call[1][round],
            per_call[2][round],
            per_call[3][round]
        );
    }
    guest.server.shutdown().await;
    let [native_find, wasm_find, native_get, wasm_get] = per_call.map(median_us);
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    let results = json!({
        "insert_batched_docs_per_s": batched,
        "insert_single_docs_per_s": single,
        "find_p50_us": us(p50),
        "find_p99_us": us(p99),
        "native_find_us": native_find,
        "wasm_find_us": wasm_find,
        "native_get_us": native_get,
        "wasm_get_us": wasm_get,
        "documents": DOCUMENTS,
        "customers": CUSTOMERS,
    });
    println!("{results}");
}

fn limit_10() -> FindOptions {
    FindOptions {
        limit: Some(10),
        ..Default::default()
    }
}

fn median_us(mut values: Vec<Duration>) -> f64 {
    values.sort();
    values[values.len() / 2].as_secs_f64() * 1e6
}

async fn native_per_call(docs: Arc<Documents>, op: &'static str) -> Duration {
    let ns = app_namespace("bench", "orders").unwrap();
    let started = Instant::now();
    for _ in 0..CALLS_PER_ROUND {
        match op {
            "get" => assert!(docs.get(ns, "o7").await.unwrap().is_some()),
            _ => {
                let page = docs
                    .find(ns, &json!({"customer": "c7"}), limit_10())
                    .await
                    .unwrap();
                assert_eq!(page.documents.len(), 10);
            }
        }
    }
    started.elapsed() / CALLS_PER_ROUND
}

/// A Kiln server in this process serving the db-loop component, which times
/// a loop of calls from inside the guest.
struct Guest {
    server: kiln::server::RunningServer,
}

impl Guest {
    async fn start(data_dir: &std::path::Path, component: &str) -> Guest {
        let settings = kiln::server::settings::Settings {
            listen: "127.0.0.1:0".parse().unwrap(),
            data_dir: data_dir.to_path_buf(),
            cache_dir: None,
            admin_key: Some("bench".into()),
            max_instances: 10,
            mongodb_uri: None,
            blobs: None,
            limits: kiln::server::settings::ServerLimits::for_instances(10),
            app_domain: None,
            auth_internal_hosts: Vec::new(),
            shutdown_grace: std::time::Duration::from_secs(30),
            // db-loop is small: it compiles in process either way.
            compiler: kiln::engine::compiler::Compiler::InProcess,
        };
        let server = kiln::server::start(settings).await.unwrap();
        let bytes = bytes::Bytes::from(std::fs::read(component).unwrap());
        let digest = server.apps.artifacts().put_component(bytes).await.unwrap();
        let manifest = "[functions.loop]\ncomponent = \"db-loop.wasm\"\nlimits = { timeout = \"120s\" }\n[[routes]]\npath = \"/loop\"\nfunction = \"loop\"\n";
        server
            .apps
            .deploy(
                "bench",
                manifest.into(),
                [("loop".to_string(), digest)].into(),
            )
            .await
            .unwrap();
        Guest { server }
    }

    async fn per_call(&self, op: &str, key: &str) -> Duration {
        let url = format!(
            "http://{}/bench/loop?op={op}&n={CALLS_PER_ROUND}&key={key}",
            self.server.addr
        );
        let answer: serde_json::Value = reqwest::get(&url).await.unwrap().json().await.unwrap();
        assert!(answer["found"].as_u64().unwrap() > 0, "{answer}");
        Duration::from_nanos(answer["nanos"].as_u64().unwrap() / u64::from(CALLS_PER_ROUND))
    }
}
