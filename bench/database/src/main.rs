//! Measures the embedded document store with 100,000 documents: insert
//! throughput, indexed find-by-field latency, and the cost of one database
//! call through the Wasm boundary against the same call made natively.
//!
//! Usage: bench-database <db-loop.wasm> <results.md>

use std::sync::Arc;
use std::time::{Duration, Instant};

use kiln::store::sqlite::SqliteStore;
use kiln::store::{Documents, FindOptions, StoreLimits, app_namespace};
use serde_json::json;

const DOCUMENTS: usize = 100_000;
const CUSTOMERS: usize = 10_000;
const SINGLE_INSERTS: usize = 2_000;
const FINDS: usize = 5_000;
const BOUNDARY_CALLS: u32 = 5_000;

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (component, results) = (&args[1], &args[2]);
    let data = tempfile::tempdir().unwrap();
    let store =
        Arc::new(SqliteStore::open(&data.path().join("db"), Duration::from_secs(30)).unwrap());
    let docs = Documents::new(store, StoreLimits::default());
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
            .find(
                ns,
                &json!({"customer": key}),
                FindOptions {
                    limit: Some(10),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        latencies.push(started.elapsed());
        assert_eq!(page.documents.len(), 10);
    }
    latencies.sort();
    let p50 = latencies[FINDS / 2];
    let p99 = latencies[FINDS * 99 / 100];
    eprintln!("indexed finds: p50 {p50:?}, p99 {p99:?}");

    // The same find and get, natively and from a guest, over one key.
    let native_find = native_per_call(&docs, "find").await;
    let native_get = native_per_call(&docs, "get").await;
    eprintln!("native calls: find {native_find:?}, get {native_get:?}");
    drop(docs);
    let (wasm_find, wasm_get) = through_wasm(data.path(), component).await;

    let ratio = |w: Duration, n: Duration| w.as_secs_f64() / n.as_secs_f64();
    let over = |w: Duration, n: Duration| w.as_secs_f64() * 1e6 - n.as_secs_f64() * 1e6;
    let us = |d: Duration| format!("{:.1} µs", d.as_secs_f64() * 1e6);
    let table = format!(
        "# Embedded document store benchmark\n\n\
         {DOCUMENTS} documents; one index on `customer` ({CUSTOMERS} values). Measured by `bench/run-database` \
         on {} ({} cores), {}; release build, WAL with `synchronous = FULL`.\n\n\
         | measure | value |\n| --- | --- |\n\
         | insert throughput, batches of 1,000 | {batched:.0} docs/s |\n\
         | insert throughput, one document per call (fsync per commit) | {single:.0} docs/s |\n\
         | indexed find by field (10 results), p50 | {} |\n\
         | indexed find by field (10 results), p99 | {} |\n\
         | find (indexed, 10 results), native call | {} |\n\
         | find (indexed, 10 results), through the Wasm boundary | {} ({:.2}x, +{:.1} µs) |\n\
         | get by `_id`, native call | {} |\n\
         | get by `_id`, through the Wasm boundary | {} ({:.2}x, +{:.1} µs) |\n\n\
         Target (performance issue): through the boundary within 1.3x of native plus a fixed overhead under 20 µs per call.\n",
        machine(),
        std::thread::available_parallelism().map_or(1, |n| n.get()),
        command_output("date", &["-u", "+%Y-%m-%d"]),
        us(p50),
        us(p99),
        us(native_find),
        us(wasm_find),
        ratio(wasm_find, native_find),
        over(wasm_find, native_find),
        us(native_get),
        us(wasm_get),
        ratio(wasm_get, native_get),
        over(wasm_get, native_get),
    );
    std::fs::write(results, &table).unwrap();
    print!("{table}");
}

fn machine() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines().find_map(|l| {
                l.strip_prefix("model name")
                    .map(|m| m.trim_start_matches([' ', '\t', ':']).to_string())
            })
        })
        .unwrap_or_else(|| "an unknown CPU".into())
}

fn command_output(command: &str, args: &[&str]) -> String {
    std::process::Command::new(command)
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

async fn native_per_call(docs: &Documents, op: &str) -> Duration {
    let ns = app_namespace("bench", "orders").unwrap();
    let started = Instant::now();
    for _ in 0..BOUNDARY_CALLS {
        match op {
            "get" => assert!(docs.get(ns, "o7").await.unwrap().is_some()),
            _ => {
                let page = docs
                    .find(
                        ns,
                        &json!({"customer": "c7"}),
                        FindOptions {
                            limit: Some(10),
                            ..Default::default()
                        },
                    )
                    .await
                    .unwrap();
                assert_eq!(page.documents.len(), 10);
            }
        }
    }
    started.elapsed() / BOUNDARY_CALLS
}

/// Per-call time measured inside a guest that loops over the same call.
async fn through_wasm(data_dir: &std::path::Path, component: &str) -> (Duration, Duration) {
    let settings = kiln::server::settings::Settings {
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: data_dir.to_path_buf(),
        cache_dir: None,
        admin_key: Some("bench".into()),
        max_instances: 10,
        mongodb_uri: None,
    };
    let server = kiln::server::start(settings).await.unwrap();
    eprintln!("server started on {}", server.addr);
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
    eprintln!("deployed the db-loop component");
    let mut per_call = Vec::new();
    for (op, key) in [("find", "c7"), ("get", "o7")] {
        let url = format!(
            "http://{}/bench/loop?op={op}&n={BOUNDARY_CALLS}&key={key}",
            server.addr
        );
        let answer: serde_json::Value = reqwest::get(&url).await.unwrap().json().await.unwrap();
        assert!(answer["found"].as_u64().unwrap() > 0, "{answer}");
        per_call.push(Duration::from_nanos(
            answer["nanos"].as_u64().unwrap() / u64::from(BOUNDARY_CALLS),
        ));
    }
    server.shutdown().await;
    (per_call[0], per_call[1])
}
