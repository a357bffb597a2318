//! Deploys through the admin API: validation, atomic switch, versions,
//! rollback, restart, and the admin key.

use std::path::Path;
use std::time::Duration;

use futures::StreamExt;
use kiln_tests::{ADMIN_KEY, Server, error_code, examples, json_of};
use reqwest::Method;

fn hello_manifest(greeting: &str) -> String {
    format!(
        r#"
[variables]
greeting = "{greeting}"

[functions.hello]
source = "hello-rust"

[[routes]]
path = "/hello/:name"
methods = ["GET"]
function = "hello"
"#
    )
}

async fn message(server: &Server, path: &str) -> String {
    let (status, body) = json_of(server.get(path).send().await.unwrap()).await;
    assert_eq!(status, 200, "{body}");
    body["message"].as_str().unwrap().to_string()
}

async fn version_count(server: &Server, app: &str) -> usize {
    let (status, body) = json_of(
        server
            .admin(Method::GET, &format!("/admin/v1/apps/{app}/deployments"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    body["versions"].as_array().unwrap().len()
}

/// A temporary file holding `bytes`.
fn temp_file(bytes: &[u8]) -> tempfile::NamedTempFile {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), bytes).unwrap();
    file
}

#[tokio::test]
async fn the_admin_api_needs_the_admin_key() {
    let server = Server::start();
    for (method, path) in [
        (Method::GET, "/admin/v1/apps"),
        (Method::POST, "/admin/v1/apps/x/deployments"),
        (Method::PUT, "/admin/v1/components/sha256:00"),
    ] {
        let url = format!("{}{path}", server.url);
        let missing = server
            .client
            .request(method.clone(), &url)
            .send()
            .await
            .unwrap();
        let (status, body) = json_of(missing).await;
        assert_eq!((status, error_code(&body)), (401, "unauthorized"), "{path}");
        let wrong = server
            .client
            .request(method, &url)
            .bearer_auth("not-the-key")
            .send()
            .await
            .unwrap();
        assert_eq!(wrong.status(), 401, "{path}");
    }
}

#[tokio::test]
async fn invalid_deploys_get_400_naming_the_problem_and_change_nothing() {
    let server = Server::start();
    let hello = &examples().hello;
    server
        .deploy_ok("shop", &hello_manifest("Hi"), &[("hello", hello)])
        .await;

    let not_wasm = temp_file(b"this is not a component");
    let (status, body) = server
        .deploy(
            "shop",
            &hello_manifest("Bad"),
            &[("hello", not_wasm.path())],
        )
        .await;
    assert_eq!(
        (status, error_code(&body)),
        (400, "invalid_component"),
        "{body}"
    );
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("function `hello`")
    );

    // A large one is compiled by a child process: refused the same way,
    // with wasmtime's reason, not as a failed compiler.
    let large_not_wasm = temp_file(&vec![b'x'; 2 * 1024 * 1024]);
    let (status, body) = server
        .deploy(
            "shop",
            &hello_manifest("Bad"),
            &[("hello", large_not_wasm.path())],
        )
        .await;
    assert_eq!(
        (status, error_code(&body)),
        (400, "invalid_component"),
        "{body}"
    );
    let reason = body["error"]["message"].as_str().unwrap();
    assert!(reason.contains("function `hello`"), "{reason}");
    assert!(!reason.contains("compiler process"), "{reason}");

    let foreign_import = wat::parse_str(
        r#"(component (import "example:unknown/thing@1.0.0" (instance (export "f" (func)))))"#,
    )
    .unwrap();
    let foreign = temp_file(&foreign_import);
    let (status, body) = server
        .deploy("shop", &hello_manifest("Bad"), &[("hello", foreign.path())])
        .await;
    assert_eq!(
        (status, error_code(&body)),
        (400, "unsatisfied_import"),
        "{body}"
    );
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("example:unknown/thing@1.0.0"),
        "{body}"
    );

    let no_handler = temp_file(&wat::parse_str("(component)").unwrap());
    let (status, body) = server
        .deploy(
            "shop",
            &hello_manifest("Bad"),
            &[("hello", no_handler.path())],
        )
        .await;
    assert_eq!(
        (status, error_code(&body)),
        (400, "missing_export"),
        "{body}"
    );

    let bad_route = hello_manifest("Bad").replace("/hello/:name", "/hello/:");
    let (status, body) = server.deploy("shop", &bad_route, &[("hello", hello)]).await;
    assert_eq!(
        (status, error_code(&body)),
        (400, "invalid_routes"),
        "{body}"
    );

    let colliding = format!(
        "{}\n[[routes]]\npath = \"/hello/:other\"\nfunction = \"hello\"\n",
        hello_manifest("Bad")
    );
    let (status, body) = server.deploy("shop", &colliding, &[("hello", hello)]).await;
    assert_eq!(
        (status, error_code(&body)),
        (400, "invalid_routes"),
        "{body}"
    );

    let unknown_function =
        hello_manifest("Bad").replace("function = \"hello\"", "function = \"nope\"");
    let (status, body) = server
        .deploy("shop", &unknown_function, &[("hello", hello)])
        .await;
    assert_eq!(
        (status, error_code(&body)),
        (400, "invalid_manifest"),
        "{body}"
    );
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("routes[0].function")
    );

    let (status, body) = server
        .deploy("Shop!", &hello_manifest("Bad"), &[("hello", hello)])
        .await;
    assert_eq!(
        (status, error_code(&body)),
        (400, "invalid_app_name"),
        "{body}"
    );

    assert_eq!(
        message(&server, "/shop/hello/x").await,
        "Hi, x!",
        "the live version is untouched"
    );
    assert_eq!(
        version_count(&server, "shop").await,
        1,
        "no version was recorded"
    );
}

#[tokio::test]
async fn an_upload_whose_digest_does_not_match_is_refused() {
    let server = Server::start();
    let wrong = format!("sha256:{}", "0".repeat(64));
    let response = server
        .admin(Method::PUT, &format!("/admin/v1/components/{wrong}"))
        .body("bytes")
        .send()
        .await
        .unwrap();
    let (status, body) = json_of(response).await;
    assert_eq!((status, error_code(&body)), (400, "digest_mismatch"));
}

#[tokio::test]
async fn versions_are_kept_and_rollback_switches_back() {
    let server = Server::start();
    let hello = &examples().hello;
    assert_eq!(
        server
            .deploy_ok("shop", &hello_manifest("One"), &[("hello", hello)])
            .await,
        1
    );
    assert_eq!(
        server
            .deploy_ok("shop", &hello_manifest("Two"), &[("hello", hello)])
            .await,
        2
    );
    assert_eq!(message(&server, "/shop/hello/x").await, "Two, x!");

    let response = server
        .admin(Method::POST, "/admin/v1/apps/shop/rollback")
        .json(&serde_json::json!({ "version": 1 }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(message(&server, "/shop/hello/x").await, "One, x!");

    let (_, body) = json_of(
        server
            .admin(Method::GET, "/admin/v1/apps/shop/deployments")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(body["live"], 1);
    assert_eq!(body["versions"].as_array().unwrap().len(), 2);

    let response = server
        .admin(Method::POST, "/admin/v1/apps/shop/rollback")
        .json(&serde_json::json!({ "version": 9 }))
        .send()
        .await
        .unwrap();
    let (status, body) = json_of(response).await;
    assert_eq!((status, error_code(&body)), (404, "version_not_found"));
}

#[tokio::test]
async fn in_flight_requests_finish_on_the_version_they_started_on() {
    let server = Server::start();
    let ex = examples();
    let echo_manifest =
        "[functions.echo]\nsource = \"echo\"\n[[routes]]\npath = \"/echo\"\nfunction = \"echo\"\n";
    server
        .deploy_ok("app", echo_manifest, &[("echo", &ex.echo)])
        .await;

    // A request that streams its body slowly, across the switch.
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(1);
    let body = reqwest::Body::wrap_stream(tokio_stream_from(rx));
    let in_flight = tokio::spawn(server.post("/app/echo").body(body).send());
    tx.send(Ok(b"before ".to_vec())).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;

    // The new version has no /echo route at all.
    server
        .deploy_ok("app", &hello_manifest("New"), &[("hello", &ex.hello)])
        .await;
    assert_eq!(server.get("/app/echo").send().await.unwrap().status(), 404);

    tx.send(Ok(b"after".to_vec())).await.unwrap();
    drop(tx);
    let response = in_flight.await.unwrap().unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), "before after");
}

fn tokio_stream_from<T: Send + 'static>(
    mut rx: tokio::sync::mpsc::Receiver<T>,
) -> impl futures::Stream<Item = T> + Send + 'static {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

fn cached_artifacts(cache: &Path) -> Vec<(std::path::PathBuf, std::time::SystemTime)> {
    let mut found = Vec::new();
    for engine_dir in std::fs::read_dir(cache).unwrap() {
        for file in std::fs::read_dir(engine_dir.unwrap().path()).unwrap() {
            let file = file.unwrap();
            found.push((file.path(), file.metadata().unwrap().modified().unwrap()));
        }
    }
    found.sort();
    found
}

#[tokio::test]
async fn deployments_survive_a_crash_and_a_restart_does_not_recompile() {
    let data = tempfile::tempdir().unwrap();
    let server = Server::start_in(data.path(), Some(ADMIN_KEY), false);
    server
        .deploy_ok(
            "shop",
            &hello_manifest("Kept"),
            &[("hello", &examples().hello)],
        )
        .await;
    let before = cached_artifacts(&data.path().join("cache"));
    assert_eq!(before.len(), 1, "one compiled artifact: {before:?}");
    server.kill();

    let server = Server::start_in(data.path(), Some(ADMIN_KEY), false);
    assert_eq!(message(&server, "/shop/hello/x").await, "Kept, x!");
    assert_eq!(
        cached_artifacts(&data.path().join("cache")),
        before,
        "the artifact was not rewritten"
    );
}

#[tokio::test]
async fn a_generated_admin_key_is_stored_owner_only_and_found_by_kiln_deploy() {
    use std::os::unix::fs::PermissionsExt;
    let data = tempfile::tempdir().unwrap();
    let server = Server::start_in(data.path(), None, true);
    let key_file = data.path().join("admin-key");
    let mode = std::fs::metadata(&key_file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let key = std::fs::read_to_string(&key_file).unwrap();
    assert!(key.len() >= 32);
    let response = server
        .client
        .get(format!("{}/admin/v1/apps", server.url))
        .bearer_auth(key.trim())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);

    examples(); // builds the examples, so `kiln deploy` only finds them up to date
    let output = std::process::Command::new(kiln_tests::kiln_binary())
        .arg("deploy")
        .arg(kiln_tests::workspace().join("functions-examples"))
        .args(["--server", &server.url, "--data-dir"])
        .arg(data.path())
        .env_remove("KILN_ADMIN_KEY")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(String::from_utf8_lossy(&output.stdout).contains("deployed examples version 1"));
    assert_eq!(message(&server, "/examples/hello/cli").await, "Hello, cli!");
    let mut body = server
        .get("/examples/hello-js/cli")
        .send()
        .await
        .unwrap()
        .bytes_stream();
    assert!(body.next().await.is_some());
}

#[tokio::test]
async fn a_function_whose_component_is_lost_answers_503_and_the_others_serve() {
    let data = tempfile::tempdir().unwrap();
    let server = Server::start_in(data.path(), Some(ADMIN_KEY), false);
    server
        .deploy_ok(
            "shop",
            &hello_manifest("Kept"),
            &[("hello", &examples().hello)],
        )
        .await;
    server
        .deploy_ok(
            "plain",
            "[functions.plain]\ncomponent = \"plain.wasm\"\n[[routes]]\npath = \"/*rest\"\nfunction = \"plain\"\n",
            &[("plain", &examples().plain)],
        )
        .await;
    server.kill();
    // Components load on their first request: losing one (compiled and
    // uploaded) shows there, not at start.
    use sha2::Digest;
    let digest = hex::encode(sha2::Sha256::digest(
        std::fs::read(&examples().hello).unwrap(),
    ));
    std::fs::remove_dir_all(data.path().join("cache")).unwrap();
    std::fs::remove_file(
        data.path()
            .join(format!("objects/components/sha256-{digest}.wasm")),
    )
    .unwrap();

    let server = Server::start_in(data.path(), Some(ADMIN_KEY), false);
    let (status, body) = json_of(server.get("/shop/hello/x").send().await.unwrap()).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(error_code(&body), "function_unavailable");
    assert!(
        server.log().contains("was not uploaded"),
        "{}",
        server.log()
    );
    let plain = server.get("/plain/anything").send().await.unwrap();
    assert_eq!(plain.status(), 200);
}
