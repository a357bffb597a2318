//! File storage end to end: the `files` example function on a real server,
//! whole and streamed, apps kept apart, and nodes sharing MongoDB and an S3
//! bucket (the stand-ins) with nothing else in common.

use kiln_tests::{Server, error_code, examples, json_of};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

const MANIFEST: &str = r#"
[functions.files]
component = "files.wasm"
limits = { memory_mb = 32, timeout = "60s" }

[[routes]]
path = "/files/*key"
methods = ["GET", "PUT", "DELETE"]
function = "files"

[[routes]]
path = "/meta/*key"
function = "files"

[[routes]]
path = "/generate/*key"
methods = ["POST"]
function = "files"

[[routes]]
path = "/digest/*key"
function = "files"

[[routes]]
path = "/abandon/*key"
methods = ["POST"]
function = "files"

[[routes]]
path = "/list"
function = "files"

[[routes]]
path = "/copy"
methods = ["POST"]
function = "files"
"#;

async fn deploy(server: &Server, app: &str) {
    server
        .deploy_ok(app, MANIFEST, &[("files", &examples().files)])
        .await;
}

async fn get_json(server: &Server, path: &str) -> (u16, Value) {
    json_of(server.get(path).send().await.unwrap()).await
}

async fn post_json(server: &Server, path: &str) -> (u16, Value) {
    json_of(server.post(path).send().await.unwrap()).await
}

/// SHA-256 (hex) of the first `len` bytes the `files` example generates.
fn generated_digest(start: u64, end: u64) -> String {
    let bytes: Vec<u8> = (start..end).map(|i| (i % 251) as u8).collect();
    hex::encode(Sha256::digest(&bytes))
}

#[tokio::test]
async fn a_function_stores_reads_lists_copies_and_deletes_files() {
    let server = Server::start();
    deploy(&server, "shop").await;
    deploy(&server, "other").await;
    let put = server
        .client
        .put(format!("{}/shop/files/notes/a.txt", server.url))
        .header("content-type", "text/plain; charset=utf-8")
        .body("first note")
        .send()
        .await
        .unwrap();
    let (status, meta) = json_of(put).await;
    assert_eq!(status, 200, "{meta}");
    assert_eq!(meta["size"], 10);
    assert_eq!(meta["content_type"], "text/plain; charset=utf-8");
    let body = server.get("/shop/files/notes/a.txt").send().await.unwrap();
    assert_eq!(body.text().await.unwrap(), "first note");
    let (_, head) = get_json(&server, "/shop/meta/notes/a.txt").await;
    assert_eq!(head, meta);

    // Another app has its own files under the same keys.
    let (status, body) = get_json(&server, "/other/files/notes/a.txt").await;
    assert_eq!((status, error_code(&body)), (404, "not-found"), "{body}");

    for name in ["b.txt", "c.txt"] {
        let path = format!("/shop/files/notes/{name}");
        server
            .client
            .put(format!("{}{path}", server.url))
            .body(name)
            .send()
            .await
            .unwrap();
    }
    let (_, page) = get_json(&server, "/shop/list?prefix=notes/&limit=2").await;
    assert_eq!(page["keys"], json!(["notes/a.txt", "notes/b.txt"]));
    let cursor = page["cursor"].as_str().unwrap();
    let (_, page) = get_json(
        &server,
        &format!("/shop/list?prefix=notes/&limit=2&cursor={cursor}"),
    )
    .await;
    assert_eq!(page, json!({"keys": ["notes/c.txt"], "cursor": null}));

    let (status, copied) = post_json(&server, "/shop/copy?from=notes/a.txt&to=archive/a.txt").await;
    assert_eq!((status, &copied["size"]), (200, &json!(10)), "{copied}");
    let (_, deleted) = json_of(
        server
            .delete("/shop/files/notes/a.txt")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(deleted, json!({"deleted": true}));
    let archived = server
        .get("/shop/files/archive/a.txt")
        .send()
        .await
        .unwrap();
    assert_eq!(archived.text().await.unwrap(), "first note");

    // Keys a function gives that could confuse are refused, naming the rule
    // (the route's `*key` is the path as sent, not percent-decoded).
    for bad in ["a//b", "dir/"] {
        let (status, body) = get_json(&server, &format!("/shop/meta/{bad}")).await;
        assert_eq!(
            (status, error_code(&body)),
            (400, "invalid-input"),
            "{bad}: {body}"
        );
    }
}

#[tokio::test]
async fn a_function_streams_a_file_larger_than_its_memory_through() {
    let server = Server::start();
    deploy(&server, "media").await;
    // 96 MiB through a function limited to 32 MiB of memory.
    let (status, meta) = post_json(&server, "/media/generate/big.bin?mib=96").await;
    assert_eq!(status, 200, "{meta}");
    let size = 96 * 1024 * 1024u64;
    assert_eq!(meta["size"], size);
    let (status, digest) = get_json(&server, "/media/digest/big.bin").await;
    assert_eq!(status, 200, "{digest}");
    assert_eq!(digest["bytes"], size);
    assert_eq!(digest["sha256"], generated_digest(0, size));
    let (_, part) = get_json(&server, "/media/digest/big.bin?start=1000&end=70000").await;
    assert_eq!(part["bytes"], 69000);
    assert_eq!(part["sha256"], generated_digest(1000, 70000));
}

#[tokio::test]
async fn writes_over_their_limit_or_left_unfinished_store_nothing() {
    let server = Server::start();
    deploy(&server, "media").await;
    let (status, body) = post_json(&server, "/media/generate/over.bin?mib=3&max=1048576").await;
    assert_eq!(
        (status, error_code(&body)),
        (413, "limit-exceeded"),
        "{body}"
    );
    let (status, _) = get_json(&server, "/media/meta/over.bin").await;
    assert_eq!(status, 404);
    let (status, body) = post_json(&server, "/media/abandon/left.txt").await;
    assert_eq!(status, 200, "{body}");
    let (status, _) = get_json(&server, "/media/meta/left.txt").await;
    assert_eq!(status, 404);
    // Nothing was left on disk either: the app's blob folder is empty.
    let blobs = server.data_dir.join("objects/files/media");
    let left = std::fs::read_dir(&blobs).map(|d| d.count()).unwrap_or(0);
    assert_eq!(left, 0, "blobs left in {}", blobs.display());
}

#[tokio::test]
async fn nodes_sharing_mongodb_and_a_bucket_serve_deploys_and_files_made_through_either() {
    let (Ok(mongodb), Ok(endpoint)) = (
        std::env::var("KILN_TEST_MONGODB_URI"),
        std::env::var("KILN_TEST_S3_ENDPOINT"),
    ) else {
        eprintln!("KILN_TEST_MONGODB_URI or KILN_TEST_S3_ENDPOINT is not set: skipping");
        return;
    };
    let bucket = std::env::var("KILN_TEST_S3_BUCKET").unwrap_or_else(|_| "kiln-test".into());
    let env = [
        ("KILN_MONGODB_URI", mongodb.as_str()),
        ("KILN_S3_BUCKET", bucket.as_str()),
        ("KILN_S3_ENDPOINT", endpoint.as_str()),
        ("KILN_S3_ALLOW_HTTP", "true"),
    ];
    // Unique: the stand-ins outlive the run.
    let app = format!("files{}", std::process::id());
    let first = Server::start_with_env(&env);
    let second = Server::start_with_env(&env);
    deploy(&first, &app).await;
    // The second node has its own data directory: it reads the component
    // from the bucket.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let path = format!("/{app}/files/shared.txt");
    while second
        .client
        .put(format!("{}{path}", second.url))
        .body("from the second node")
        .send()
        .await
        .unwrap()
        .status()
        != 200
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the second node never served the app"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let body = first.get(&path).send().await.unwrap().text().await.unwrap();
    assert_eq!(body, "from the second node");
    // A deploy through the second node reaches the first.
    let version = second
        .deploy_ok(
            &app,
            &MANIFEST.replace("memory_mb = 32", "memory_mb = 48"),
            &[("files", &examples().files)],
        )
        .await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let (_, listed) = json_of(
            first
                .admin(reqwest::Method::GET, "/admin/v1/apps")
                .send()
                .await
                .unwrap(),
        )
        .await;
        let live = listed["apps"]
            .as_array()
            .and_then(|apps| apps.iter().find(|a| a["app"] == app.as_str()))
            .map(|a| a["version"].clone());
        if live == Some(json!(version)) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the first node never took version {version}: {listed}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let body = first.get(&path).send().await.unwrap().text().await.unwrap();
    assert_eq!(body, "from the second node");
}
