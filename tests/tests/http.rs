//! The HTTP trigger end to end: the examples, streaming, and every error
//! the server answers itself.

use std::time::{Duration, Instant};

use futures::StreamExt;
use kiln_tests::{Server, error_code, examples, json_of};

const EXAMPLES_MANIFEST: &str = r#"
[variables]
greeting = "Howdy"

[functions.hello]
source = "hello-rust"

[functions.hello-js]
source = "hello-js/index.js"

[functions.echo]
source = "echo"

[functions.plain]
source = "plain-http"

[[routes]]
path = "/hello/:name"
methods = ["GET"]
function = "hello"

[[routes]]
path = "/hello-js/:name"
methods = ["GET"]
function = "hello-js"

[[routes]]
path = "/echo"
methods = ["POST", "PUT"]
function = "echo"

[[routes]]
path = "/plain/*rest"
function = "plain"
"#;

async fn examples_server() -> Server {
    examples_server_with(&[]).await
}

async fn examples_server_with(env: &[(&str, &str)]) -> Server {
    let ex = examples();
    let server = Server::start_with_env(env);
    server
        .deploy_ok(
            "examples",
            EXAMPLES_MANIFEST,
            &[
                ("hello", &ex.hello),
                ("hello-js", &ex.hello_js),
                ("echo", &ex.echo),
                ("plain", &ex.plain),
            ],
        )
        .await;
    server
}

#[tokio::test]
async fn serves_the_rust_and_js_hello_functions_with_their_config() {
    let server = examples_server().await;
    let (status, body) = json_of(server.get("/examples/hello/ada").send().await.unwrap()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["message"], "Howdy, ada!");
    assert_eq!(
        body["path"], "/hello/ada",
        "the guest sees the app-relative path"
    );

    // Parameters arrive percent-decoded once; one that is not UTF-8 then is refused.
    let (status, body) = json_of(
        server
            .get("/examples/hello/Ada%20Lovelace%2525")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["message"], "Howdy, Ada Lovelace%25!");
    let (status, body) = json_of(server.get("/examples/hello/%FF").send().await.unwrap()).await;
    assert_eq!((status, error_code(&body)), (400, "bad_request"), "{body}");

    let (status, body) =
        json_of(server.get("/examples/hello-js/grace").send().await.unwrap()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["message"], "Howdy, grace!");
    assert_eq!(body["runtime"], "js");
    let (status, body) = json_of(
        server
            .get("/examples/hello-js/Grace%20Hopper")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["message"], "Howdy, Grace Hopper!");
}

#[tokio::test]
async fn routes_by_host_name_under_the_app_domain_as_well_as_by_path_prefix() {
    let server = examples_server_with(&[("KILN_APP_DOMAIN", "kiln.test")]).await;
    let response = server
        .get("/hello/lin")
        .header("host", "examples.kiln.test")
        .send()
        .await
        .unwrap();
    let (status, body) = json_of(response).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["message"], "Howdy, lin!");
    // Under the domain, the host alone names the app: no fallback to the path.
    let response = server
        .get("/examples/hello/lin")
        .header("host", "nobody.kiln.test")
        .send()
        .await
        .unwrap();
    let (status, body) = json_of(response).await;
    assert_eq!((status, error_code(&body)), (404, "app_not_found"));
    // Another host routes by path.
    let response = server
        .get("/examples/hello/lin")
        .header("host", "examples.other.test")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn runs_a_plain_wasi_http_component_unchanged() {
    let server = examples_server().await;
    let response = server.get("/examples/plain/a/b?x=1").send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.text().await.unwrap(),
        "plain wasi:http says hi to Method::Get /plain/a/b?x=1\n"
    );
}

#[tokio::test]
async fn streams_a_request_body_back_without_buffering_it() {
    let server = examples_server().await;
    // 4 MiB sent in 64 KiB chunks with no content-length (chunked encoding).
    let chunk = vec![7u8; 64 * 1024];
    let chunks = (0..64).map(move |i| {
        let mut c = chunk.clone();
        c[0] = i as u8;
        Ok::<_, std::io::Error>(c)
    });
    let body = reqwest::Body::wrap_stream(futures::stream::iter(chunks));
    let response = server
        .post("/examples/echo")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let mut received = Vec::new();
    let mut stream = response.bytes_stream();
    while let Some(part) = stream.next().await {
        received.extend_from_slice(&part.unwrap());
    }
    assert_eq!(received.len(), 64 * 64 * 1024);
    for i in 0..64 {
        assert_eq!(received[i * 64 * 1024], i as u8, "chunk {i} out of order");
    }
}

#[tokio::test]
async fn unknown_routes_and_apps_get_404_and_wrong_methods_405_with_allow() {
    let server = examples_server().await;
    let (status, body) = json_of(server.get("/examples/nope").send().await.unwrap()).await;
    assert_eq!((status, error_code(&body)), (404, "route_not_found"));
    let (status, body) = json_of(server.get("/no-such-app/x").send().await.unwrap()).await;
    assert_eq!((status, error_code(&body)), (404, "app_not_found"));

    let response = server
        .client
        .delete(format!("{}/examples/hello/x", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["allow"], "GET");
    let (status, body) = json_of(response).await;
    assert_eq!((status, error_code(&body)), (405, "method_not_allowed"));
}

const MISBEHAVE_MANIFEST: &str = r#"
[functions.bad]
component = "misbehave.wasm"
limits = { timeout = "1s", memory_mb = 32, max_request_body = 1024, max_response_body = 1048576 }

[[routes]]
path = "/*rest"
function = "bad"
"#;

async fn misbehave_server() -> Server {
    let server = Server::start();
    server
        .deploy_ok("bad", MISBEHAVE_MANIFEST, &[("bad", &examples().misbehave)])
        .await;
    server
}

#[tokio::test]
async fn a_request_body_over_the_limit_gets_413() {
    let server = misbehave_server().await;
    let (status, body) = json_of(
        server
            .post("/bad/ok")
            .body(vec![0u8; 2048])
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((status, error_code(&body)), (413, "request_body_too_large"));

    // Without a content-length the limit is found while streaming.
    let chunks = (0..4).map(|_| Ok::<_, std::io::Error>(vec![1u8; 1000]));
    let body = reqwest::Body::wrap_stream(futures::stream::iter(chunks));
    let (status, body) = json_of(server.post("/bad/ok").body(body).send().await.unwrap()).await;
    assert_eq!((status, error_code(&body)), (413, "request_body_too_large"));

    let (status, _) = json_of(
        server
            .post("/bad/ok")
            .body(vec![0u8; 1000])
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "a body under the limit passes");
}

#[tokio::test]
async fn a_response_body_over_the_limit_is_cut_off() {
    let server = misbehave_server().await;
    let response = server.get("/bad/flood").send().await.unwrap();
    assert_eq!(response.status(), 200);
    let mut received = 0usize;
    let mut failed = false;
    let mut stream = response.bytes_stream();
    while let Some(part) = stream.next().await {
        match part {
            Ok(bytes) => received += bytes.len(),
            Err(_) => {
                failed = true;
                break;
            }
        }
    }
    assert!(failed, "the cut-off response must not look complete");
    assert!(
        received <= 1024 * 1024,
        "received {received} bytes past the 1 MiB limit"
    );
}

/// Reads a streamed body to its end: the bytes received and whether it
/// ended in an error rather than cleanly.
async fn read_to_end(response: reqwest::Response) -> (usize, bool) {
    let mut received = 0usize;
    let mut stream = response.bytes_stream();
    while let Some(part) = stream.next().await {
        match part {
            Ok(bytes) => received += bytes.len(),
            Err(_) => return (received, true),
        }
    }
    (received, false)
}

#[tokio::test]
async fn a_body_cut_by_the_deadline_or_a_trap_does_not_look_complete() {
    let server = misbehave_server().await;
    for (path, why) in [
        ("/bad/drip", "timed out"),
        ("/bad/trap-mid-body", "trapped"),
    ] {
        let response = server.get(path).send().await.unwrap();
        assert_eq!(response.status(), 200);
        let request_id = response.headers()["kiln-request-id"]
            .to_str()
            .unwrap()
            .to_string();
        let (received, failed) = read_to_end(response).await;
        assert!(received >= 64 * 1024, "{path}: only {received} bytes");
        assert!(
            failed,
            "{path}: a body cut when the function {why} ended cleanly"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        let log = server.log();
        assert!(
            log.lines()
                .any(|l| l.contains(&request_id) && l.contains("response cut off")),
            "{path}: no log line names request {request_id}"
        );
    }
    // A body the function finishes still ends cleanly.
    let (_, failed) = read_to_end(server.get("/bad/ok").send().await.unwrap()).await;
    assert!(!failed);
}

#[tokio::test]
async fn a_trap_gets_500_and_a_silent_function_gets_500() {
    let server = misbehave_server().await;
    let (status, body) = json_of(server.get("/bad/trap").send().await.unwrap()).await;
    assert_eq!((status, error_code(&body)), (500, "function_trapped"));
    let (status, body) = json_of(server.get("/bad/silent").send().await.unwrap()).await;
    assert_eq!((status, error_code(&body)), (500, "no_response"));
    let (status, _) = json_of(server.get("/bad/ok").send().await.unwrap()).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn memory_past_the_limit_gets_500_and_the_server_keeps_serving() {
    let server = misbehave_server().await;
    let response = server.get("/bad/alloc/64").send().await.unwrap();
    let request_id = response.headers()["kiln-request-id"]
        .to_str()
        .unwrap()
        .to_string();
    let (status, body) = json_of(response).await;
    assert_eq!((status, error_code(&body)), (500, "function_trapped"));
    // The log says which limit the function reached. The trap's message
    // spans lines (a backtrace); the event's fields, the request id among
    // them, follow it.
    let log = server.log();
    let trap_at = log.find("function trapped").expect("a trap logged");
    let id_at = trap_at
        + log[trap_at..]
            .find(&request_id)
            .unwrap_or_else(|| panic!("the trap logged is not {request_id}'s"));
    let event = &log[trap_at..id_at];
    assert!(
        event.contains("reached its memory limit (limits.memory_mb = 32)"),
        "{event}"
    );
    let (status, _) = json_of(server.get("/bad/alloc/8").send().await.unwrap()).await;
    assert_eq!(status, 200, "an allocation under the limit works");
    let (status, _) = json_of(server.get("/bad/ok").send().await.unwrap()).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn stuck_functions_get_504_within_their_timeout_while_others_are_served() {
    let server = misbehave_server().await;
    let started = Instant::now();
    // More stuck requests than the server has worker threads.
    let stuck: Vec<_> = (0..4)
        .map(|_| {
            let request = server.get("/bad/spin").send();
            tokio::spawn(async move { json_of(request.await.unwrap()).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(200)).await;
    for _ in 0..10 {
        let t = Instant::now();
        let (status, _) = json_of(server.get("/bad/ok").send().await.unwrap()).await;
        assert_eq!(status, 200);
        assert!(
            t.elapsed() < Duration::from_millis(900),
            "a healthy request waited {:?}",
            t.elapsed()
        );
    }
    for handle in stuck {
        let (status, body) = handle.await.unwrap();
        assert_eq!((status, error_code(&body)), (504, "timeout"));
    }
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn guest_output_is_logged_with_the_request_id() {
    let server = examples_server().await;
    let response = server.get("/examples/hello/logged").send().await.unwrap();
    let request_id = response.headers()["kiln-request-id"]
        .to_str()
        .unwrap()
        .to_string();
    assert_eq!(response.status(), 200);
    // The log line is written when the invocation ends, just after the response.
    let mut found = false;
    for _ in 0..50 {
        found = server
            .log()
            .lines()
            .any(|l| l.contains("greeting logged") && l.contains(&request_id));
        if found {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        found,
        "no log line with `greeting logged` and {request_id}:\n{}",
        server.log()
    );
}

#[tokio::test]
async fn the_sandbox_grants_only_the_configured_variables_and_no_files_or_sockets() {
    let server = Server::start();
    let manifest = format!(
        "[variables]\nregion = \"eu\"\n{}\n[functions.bad.variables]\nAPI_KEY = \"s3cret\"\n",
        MISBEHAVE_MANIFEST
    );
    server
        .deploy_ok("bad", &manifest, &[("bad", &examples().misbehave)])
        .await;
    let (status, env) = json_of(server.get("/bad/env").send().await.unwrap()).await;
    assert_eq!(status, 200);
    assert_eq!(
        env,
        serde_json::json!([["API_KEY", "s3cret"], ["region", "eu"]])
    );

    // Something is listening here, so only the sandbox can make the connect fail.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    let (status, attempts) = json_of(
        server
            .get(&format!("/bad/escape?{address}"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{attempts}");
    for attempt in attempts.as_array().unwrap() {
        let outcome = attempt[1].as_str().unwrap();
        assert!(outcome.starts_with("error"), "{attempt} should have failed");
    }
}

#[tokio::test]
async fn requests_past_max_concurrency_wait_for_a_free_instance() {
    let server = Server::start();
    let manifest = MISBEHAVE_MANIFEST.replace(
        "timeout = \"1s\",",
        "timeout = \"1s\", max_concurrency = 1,",
    );
    server
        .deploy_ok("bad", &manifest, &[("bad", &examples().misbehave)])
        .await;
    let first = tokio::spawn(server.get("/bad/spin").send());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let waited = Instant::now();
    let (status, _) = json_of(server.get("/bad/ok").send().await.unwrap()).await;
    assert_eq!(status, 200);
    assert_eq!(first.await.unwrap().unwrap().status(), 504);
    assert!(
        waited.elapsed() >= Duration::from_millis(500),
        "the second request ran beside the first ({:?})",
        waited.elapsed()
    );
}

#[tokio::test]
async fn no_state_survives_from_one_request_to_the_next() {
    let server = misbehave_server().await;
    let requests: Vec<_> = (0..64).map(|_| server.get("/bad/global").send()).collect();
    for response in futures::future::join_all(requests).await {
        let response = response.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(
            response.text().await.unwrap(),
            "1 1",
            "a global counter or heap list saw another request"
        );
    }
    // One after another, each request reuses the slot the last one left, so
    // this is the path where a used memory is reset for the next instance.
    for _ in 0..32 {
        let response = server.get("/bad/global").send().await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(
            response.text().await.unwrap(),
            "1 1",
            "a reused instance slot kept state"
        );
    }
}

/// A `kiln-request-id` header: 16 lowercase hex digits.
fn request_id_of(response: &reqwest::Response) -> String {
    let id = response
        .headers()
        .get("kiln-request-id")
        .unwrap_or_else(|| panic!("no kiln-request-id on {}", response.url()))
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        id.len() == 16 && id.bytes().all(|b| b.is_ascii_hexdigit()),
        "{id}"
    );
    id
}

#[tokio::test]
async fn the_servers_own_errors_carry_a_request_id() {
    let server = examples_server().await;
    for (path, code) in [
        ("/no-such-app/x", "app_not_found"),
        ("/examples/nope", "route_not_found"),
        ("/examples/_kiln/auth/session", "platform_route_not_found"),
        ("/admin/v1/apps", "unauthorized"),
    ] {
        let response = server.get(path).send().await.unwrap();
        request_id_of(&response);
        let (_, body) = json_of(response).await;
        assert_eq!(error_code(&body), code, "{path}: {body}");
    }
    let ok = server.get("/examples/hello/x").send().await.unwrap();
    request_id_of(&ok);
}

/// An app `shop` whose one route takes every path, served by the plain component.
async fn catch_all_shop(server: &Server) {
    let manifest = "[functions.plain]\ncomponent = \"plain.wasm\"\n[[routes]]\npath = \"/*rest\"\nfunction = \"plain\"\n";
    server
        .deploy_ok("shop", manifest, &[("plain", &examples().plain)])
        .await;
}

#[tokio::test]
async fn the_platform_namespace_is_never_an_apps_and_never_shadows_one() {
    let server = Server::start_with_env(&[("KILN_APP_DOMAIN", "kiln.test")]);
    catch_all_shop(&server).await;
    // No app route reaches /_kiln/..., not even a catch-all: the platform
    // answers, whether or not it has an endpoint there.
    for (path, code) in [
        ("/shop/_kiln", "platform_route_not_found"),
        ("/shop/_kiln/nothing/a.txt", "platform_route_not_found"),
        ("/shop/_kiln/files/a.txt", "bucket_not_found"),
    ] {
        let (status, body) = json_of(server.get(path).send().await.unwrap()).await;
        assert_eq!((status, error_code(&body)), (404, code), "{path}: {body}");
    }
    let text = server
        .get("/shop/_kilnish")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(text.contains("plain wasi:http says hi"), "{text}");
    // A manifest cannot claim the namespace, nor the admin API's name.
    let under_kiln = "[functions.plain]\ncomponent = \"plain.wasm\"\n[[routes]]\npath = \"/_kiln/auth\"\nfunction = \"plain\"\n";
    let (status, body) = server
        .deploy("other", under_kiln, &[("plain", &examples().plain)])
        .await;
    assert_eq!(
        (status, error_code(&body)),
        (400, "invalid_routes"),
        "{body}"
    );
    let (status, body) = server
        .deploy(
            "admin",
            &under_kiln.replace("/_kiln/auth", "/x"),
            &[("plain", &examples().plain)],
        )
        .await;
    assert_eq!(
        (status, error_code(&body)),
        (400, "invalid_app_name"),
        "{body}"
    );
    // The admin API never shadows an app reached by its host.
    let response = server
        .get("/admin/v1/apps")
        .header("host", "shop.kiln.test")
        .bearer_auth(kiln_tests::ADMIN_KEY)
        .send()
        .await
        .unwrap();
    let text = response.text().await.unwrap();
    assert_eq!(
        text,
        "plain wasi:http says hi to Method::Get /admin/v1/apps\n"
    );
    // The server's own host still reaches it.
    let response = server
        .get("/admin/v1/apps")
        .header("host", "kiln.test")
        .bearer_auth(kiln_tests::ADMIN_KEY)
        .send()
        .await
        .unwrap();
    let (status, body) = json_of(response).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["apps"][0]["app"], "shop");
}

#[tokio::test]
async fn app_names_in_a_host_are_not_case_sensitive() {
    let server = Server::start_with_env(&[("KILN_APP_DOMAIN", "Kiln.Test")]);
    catch_all_shop(&server).await;
    for host in ["shop.kiln.test", "SHOP.KILN.TEST", "Shop.Kiln.Test:8080"] {
        let response = server.get("/x").header("host", host).send().await.unwrap();
        assert_eq!(response.status(), 200, "{host}");
    }
}

#[tokio::test]
async fn a_catch_all_route_answers_the_apps_root_and_spins_wildcard_is_one() {
    let server = Server::start();
    catch_all_shop(&server).await;
    let spin = "[functions.plain]\ncomponent = \"plain.wasm\"\n[[routes]]\npath = \"/...\"\nfunction = \"plain\"\n";
    server
        .deploy_ok("spin", spin, &[("plain", &examples().plain)])
        .await;
    for (path, seen) in [
        ("/shop/", "/"),
        ("/shop", "/"),
        ("/shop/a/b", "/a/b"),
        ("/spin/", "/"),
        ("/spin/x?y=1", "/x?y=1"),
    ] {
        let response = server.get(path).send().await.unwrap();
        assert_eq!(response.status(), 200, "{path}");
        let text = response.text().await.unwrap();
        assert_eq!(
            text,
            format!("plain wasi:http says hi to Method::Get {seen}\n"),
            "{path}"
        );
    }
}
