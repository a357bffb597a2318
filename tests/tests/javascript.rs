//! JavaScript and TypeScript functions written with `@kiln/sdk`, built by
//! `kiln build` and run by a real server: what the SDK hands the function
//! (Dates, numbers, error codes, cursors, the route), where errors point,
//! and the TypeScript example with an npm package.

use std::time::{Duration, Instant};

use kiln_tests::{Server, TODO_MANIFEST, error_code, examples, json_of, workspace};
use reqwest::Method;
use serde_json::{Value, json};

const PROBE_MANIFEST: &str = r#"
[variables]
greeting = "Howdy"

[functions.probe]
component = "probe.wasm"

[[routes]]
path = "/probe/:what"
function = "probe"
"#;

async fn probe_server() -> Server {
    let server = Server::start();
    server
        .deploy_ok("js", PROBE_MANIFEST, &[("probe", &examples().js_probe)])
        .await;
    server
}

async fn probe(server: &Server, what: &str) -> Value {
    let (status, body) = json_of(
        server
            .get(&format!("/js/probe/{what}"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{what}: {body}");
    body
}

/// The 1-based line of the probe's source that contains `needle`.
fn probe_line(needle: &str) -> usize {
    let source = std::fs::read_to_string(workspace().join("tests/apps/js/probe/index.js")).unwrap();
    source
        .lines()
        .position(|line| line.contains(needle))
        .unwrap_or_else(|| panic!("`{needle}` is not in the probe"))
        + 1
}

#[tokio::test]
async fn dates_go_in_and_come_out_as_dates_and_numbers_as_numbers() {
    let server = probe_server().await;
    let body = probe(&server, "dates").await;
    assert_eq!(
        body,
        json!({
            "get": true,
            "iso": "2026-01-02T03:04:05.678Z",
            "found": 1,
            "later": "2026-01-02T03:04:06.678Z",
            "n": 7,
            "nType": "number",
            "count": 1,
        })
    );
}

#[tokio::test]
async fn a_js_function_stores_reads_lists_and_deletes_files() {
    let server = probe_server().await;
    let body = probe(&server, "files").await;
    assert_eq!(
        body,
        json!({
            "size": 13,
            "sizeType": "number",
            "contentType": "text/plain",
            "modifiedIsDate": true,
            "text": "hello from js",
            "sameEtag": true,
            "missing": null,
            "copiedBytes": 13,
            "pages": [["notes/a.txt"], ["notes/b.txt"], null],
            "bad": {"isKilnError": true, "code": "invalid-input"},
            "deleted": [true, false],
        })
    );
}

#[tokio::test]
async fn a_js_function_streams_files_in_and_out() {
    let server = probe_server().await;
    let body = probe(&server, "stream").await;
    assert_eq!(
        body,
        json!({
            "size": 3_000_004,
            "readerSize": 3_000_004,
            "contentType": "application/x-test",
            "total": 3_000_004,
            "manyChunks": true,
            "mismatches": 0,
            "tail": "tail",
            "ranged": [250, 0, 1],
            "conflict": "conflict",
            "over": "limit-exceeded",
            "cappedLeft": null,
        })
    );
    // A reader handed to a Response streams the file to the client.
    let answer = server.get("/js/probe/serve").send().await.unwrap();
    assert_eq!(answer.status(), 200);
    assert_eq!(answer.headers()["content-type"], "application/x-test");
    let bytes = answer.bytes().await.unwrap();
    assert_eq!(bytes.len(), 3_000_004);
    assert_eq!(&bytes[..3], &[0, 1, 2]);
    assert_eq!(&bytes[bytes.len() - 4..], b"tail");
}

/// componentize-js 0.23 never frees the buffers of a host call's lists
/// (ComponentizeJS#330), so what a JS function streams stays in its
/// instance's memory until the invocation ends. This pins the README's
/// statement: past `memory_mb` the function traps cleanly, nothing is
/// stored, and the server goes on. When the dependency is fixed this test
/// fails, and the README's limit can go.
#[tokio::test]
async fn a_js_function_streaming_past_its_memory_traps_and_stores_nothing() {
    let server = Server::start();
    let manifest = PROBE_MANIFEST.replace(
        "component = \"probe.wasm\"",
        "component = \"probe.wasm\"\nlimits = { memory_mb = 48, timeout = \"60s\" }",
    );
    server
        .deploy_ok("js", &manifest, &[("probe", &examples().js_probe)])
        .await;
    let (status, body) = json_of(
        server
            .get("/js/probe/passthrough?mib=16")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{body}\n{}", server.log());
    assert_eq!(body["size"], 16 * 1024 * 1024);
    let (status, body) = json_of(
        server
            .get("/js/probe/passthrough?mib=96")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((status, error_code(&body)), (500, "function_trapped"));
    let (status, body) = json_of(
        server
            .get("/js/probe/passthrough?head")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["stored"]["size"],
        16 * 1024 * 1024,
        "the trapped write left the earlier file as it was: {body}"
    );
}

#[tokio::test]
async fn a_failed_call_is_a_kiln_error_with_a_code() {
    let server = probe_server().await;
    let body = probe(&server, "conflict").await;
    assert_eq!(body["caught"], true, "{body}");
    assert_eq!(body["isKilnError"], true, "{body}");
    assert_eq!(body["name"], "KilnError", "{body}");
    assert_eq!(body["code"], "conflict", "{body}");
    let message = body["message"].as_str().unwrap();
    assert!(message.starts_with("users.insert: "), "{message}");
    assert!(message.contains("email"), "{message}");
    let body = probe(&server, "invalid").await;
    assert_eq!(
        body,
        json!({"caught": true, "isKilnError": true, "code": "invalid-input"})
    );
}

#[tokio::test]
async fn a_find_is_iterated_past_one_page_through_the_cursor() {
    let server = probe_server().await;
    let body = probe(&server, "cursor").await;
    assert_eq!(
        body,
        json!({
            "seen": 250,
            "ordered": true,
            "sizes": [100, 100, 40],
            "skipped": [{"i": 244}, {"i": 243}, {"i": 242}],
            "count": 250,
        })
    );
}

#[tokio::test]
async fn the_handler_gets_the_route_the_request_id_and_the_variables() {
    let server = probe_server().await;
    let response = server.get("/js/probe/context").send().await.unwrap();
    let request_id = response.headers()["kiln-request-id"]
        .to_str()
        .unwrap()
        .to_string();
    let (status, body) = json_of(response).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        json!({
            "params": {"what": "context"},
            "route": "/probe/:what",
            "requestId": request_id,
            "greeting": "Howdy",
            "keys": ["greeting"],
        })
    );
}

#[tokio::test]
async fn an_uncaught_exception_is_a_500_logged_at_the_users_source_line() {
    let server = probe_server().await;
    let response = server.get("/js/probe/throws").send().await.unwrap();
    let request_id = response.headers()["kiln-request-id"]
        .to_str()
        .unwrap()
        .to_string();
    let (status, body) = json_of(response).await;
    assert_eq!(
        (status, error_code(&body)),
        (500, "function_error"),
        "{body}"
    );
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains(&request_id),
        "{body}"
    );
    let thrown = format!(
        "throwSomething@probe/index.js:{}:",
        probe_line("throw new Error('thrown on purpose')")
    );
    let called = format!("throws@probe/index.js:{}:", probe_line("throwSomething();"));
    let started = Instant::now();
    let log = loop {
        let log = server.log();
        if log.contains("thrown on purpose") || started.elapsed() > Duration::from_secs(5) {
            break log;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let line = log
        .lines()
        .find(|l| l.contains("thrown on purpose"))
        .unwrap_or_else(|| panic!("no log line for the exception:\n{log}"));
    assert!(line.contains("Error: thrown on purpose"), "{line}");
    assert!(line.contains(&thrown), "`{thrown}` not in {line}");
    assert!(line.contains(&called), "`{called}` not in {line}");
    assert!(line.contains(&request_id), "{line}");
    // Nothing in it points at the bundle the source was compiled into.
    assert!(
        !line.contains("initializer.js") && !line.contains("probe.js:"),
        "{line}"
    );
}

#[tokio::test]
async fn a_scheduled_handler_throwing_an_error_fails_the_run_with_its_stack() {
    let server = probe_server().await;
    for when in ["delay", "date"] {
        let (status, body) = json_of(
            server
                .post("/js/probe/job")
                .json(&json!({ "when": when }))
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        let id = body["id"].as_str().unwrap().to_string();
        let started = Instant::now();
        let run = loop {
            let (status, body) = json_of(
                server
                    .admin(Method::GET, &format!("/admin/v1/apps/js/runs?trigger={id}"))
                    .send()
                    .await
                    .unwrap(),
            )
            .await;
            assert_eq!(status, 200, "{body}");
            let failed = body["runs"]
                .as_array()
                .unwrap()
                .iter()
                .find(|r| r["status"] == "failed")
                .cloned();
            if let Some(run) = failed {
                break run;
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "no failed run: {body}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let error = run["error"].as_str().unwrap();
        assert!(
            error.starts_with(
                "Error: job failed on purpose; the payload's date came back as a Date\n"
            ),
            "{error}"
        );
        let at = format!(
            "scheduled@probe/index.js:{}:",
            probe_line("throw new Error(`job failed")
        );
        assert!(error.contains(&at), "`{at}` not in {error}");
    }
}

#[tokio::test]
async fn the_typescript_example_validates_with_zod_and_keeps_todos() {
    let server = Server::start();
    server
        .deploy_ok("ts", TODO_MANIFEST, &[("todos", &examples().todos_ts)])
        .await;
    let post = |body: Value| server.post("/ts/todos").json(&body).send();

    // zod's verdicts, as the example words them.
    let (status, body) = json_of(post(json!({"title": "   "})).await.unwrap()).await;
    assert_eq!(
        (status, error_code(&body)),
        (400, "invalid_input"),
        "{body}"
    );
    assert_eq!(
        body["error"]["message"],
        "title: a title is 1 to 200 characters"
    );
    let (status, body) = json_of(post(json!({"title": "x", "owner": "me"})).await.unwrap()).await;
    assert_eq!(
        (status, error_code(&body)),
        (400, "invalid_input"),
        "{body}"
    );
    let (status, body) = json_of(post(json!({"title": 5})).await.unwrap()).await;
    assert_eq!(
        (status, error_code(&body)),
        (400, "invalid_input"),
        "{body}"
    );

    let (status, first) = json_of(post(json!({"title": "  write tests "})).await.unwrap()).await;
    assert_eq!(status, 201, "{first}");
    assert_eq!(first["title"], "write tests");
    assert_eq!(first["done"], false);
    let created = first["created"].as_str().unwrap();
    assert!(created.ends_with('Z') && created.len() == 24, "{first}");
    let id = first["_id"].as_str().unwrap();
    let (status, second) =
        json_of(post(json!({"title": "ship", "done": true})).await.unwrap()).await;
    assert_eq!(status, 201, "{second}");

    let (_, all) = json_of(server.get("/ts/todos").send().await.unwrap()).await;
    assert_eq!(all, json!([first, second]));
    let (_, done) = json_of(server.get("/ts/todos?done=true").send().await.unwrap()).await;
    assert_eq!(done, json!([second]));
    let (status, body) = json_of(server.get("/ts/todos?done=maybe").send().await.unwrap()).await;
    assert_eq!((status, error_code(&body)), (400, "invalid_query"));

    let (status, patched) = json_of(
        server
            .client
            .patch(format!("{}/ts/todos/{id}", server.url))
            .json(&json!({"done": true}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{patched}");
    assert_eq!(patched["done"], true);
    assert_eq!(
        patched["created"], first["created"],
        "the Date survived the update"
    );
    let (status, body) = json_of(
        server
            .client
            .patch(format!("{}/ts/todos/{id}", server.url))
            .json(&json!({}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (status, error_code(&body)),
        (400, "invalid_input"),
        "{body}"
    );

    let (status, got) = json_of(server.get(&format!("/ts/todos/{id}")).send().await.unwrap()).await;
    assert_eq!((status, got), (200, patched));
    let status = server
        .delete(&format!("/ts/todos/{id}"))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 204);
    let (status, body) =
        json_of(server.get(&format!("/ts/todos/{id}")).send().await.unwrap()).await;
    assert_eq!((status, error_code(&body)), (404, "not_found"));
}

#[tokio::test]
async fn the_notes_example_reads_every_page_and_keeps_dates() {
    let server = Server::start();
    let manifest = "[functions.notes]\ncomponent = \"notes.wasm\"\n[[routes]]\npath = \"/notes\"\nfunction = \"notes\"\n";
    server
        .deploy_ok("js", manifest, &[("notes", &examples().notes_js)])
        .await;
    let mut posted = Vec::new();
    for i in 0..130 {
        let (status, note) = json_of(
            server
                .post("/js/notes")
                .json(&json!({"text": format!("note {i}")}))
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(status, 201, "{note}");
        posted.push(note);
    }
    // More than one page of the SDK's default 100: the cursor was followed,
    // and each stored Date came back a Date, serialised as it went in.
    let (status, notes) = json_of(server.get("/js/notes").send().await.unwrap()).await;
    assert_eq!(status, 200);
    // Oldest first; notes of the same millisecond by `_id`.
    let key = |n: &Value| {
        (
            n["at"].as_str().unwrap().to_string(),
            n["_id"].as_str().unwrap().to_string(),
        )
    };
    posted.sort_by_key(key);
    assert_eq!(notes, json!(posted));
}

/// A large component answers from quick (Winch) code right after its
/// deploy; the optimized code replaces it in the background without a
/// failed request, and is what the compile cache holds for a restart.
#[tokio::test]
async fn a_js_function_serves_at_once_and_its_optimized_code_swaps_in_without_a_failed_request() {
    // Its own compile cache: the shared one may already hold the probe.
    let data = tempfile::tempdir().unwrap();
    let server = Server::start_in(data.path(), Some(kiln_tests::ADMIN_KEY), false);
    let deployed = Instant::now();
    server
        .deploy_ok("js", PROBE_MANIFEST, &[("probe", &examples().js_probe)])
        .await;
    let mut answered = 0;
    let swapped = loop {
        let (status, body) = json_of(server.get("/js/probe/context").send().await.unwrap()).await;
        assert_eq!(status, 200, "request {answered}: {body}");
        answered += 1;
        if server
            .log()
            .contains("optimized code replaced the quick code")
        {
            break true;
        }
        if deployed.elapsed() > Duration::from_secs(120) {
            break false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(swapped, "no upgrade within 120 s:\n{}", server.log());
    assert!(answered > 1, "the quick code answered before the swap");
    // The compile cache holds the optimized code: a restart loads it and
    // compiles nothing.
    let status = server.terminate();
    assert!(status.success());
    let server = Server::start_in(data.path(), Some(kiln_tests::ADMIN_KEY), false);
    let (status, body) = json_of(server.get("/js/probe/context").send().await.unwrap()).await;
    assert_eq!(status, 200, "{body}");
    assert!(
        !server.log().contains("optimized code replaced"),
        "{}",
        server.log()
    );
}

#[tokio::test]
async fn a_js_function_reads_the_verified_caller_and_manages_users() {
    let server = Server::start();
    let manifest = format!(
        "{PROBE_MANIFEST}\n[auth]\nargon2 = {{ memory_kib = 64, iterations = 1, parallelism = 1 }}\n"
    );
    server
        .deploy_ok("js", &manifest, &[("probe", &examples().js_probe)])
        .await;
    let (status, tokens) = json_of(
        server
            .post("/js/_kiln/auth/signup")
            .json(&json!({"email": "ada@example.com", "password": "correct horse battery", "data": {"n": 1}}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 201, "{tokens}");
    assert_eq!(probe(&server, "whoami").await, json!({"caller": null}));
    let (status, body) = json_of(
        server
            .get("/js/probe/whoami")
            .bearer_auth(tokens["access_token"].as_str().unwrap())
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let caller = &body["caller"];
    assert_eq!(caller["user"]["email"], "ada@example.com");
    assert_eq!(caller["user"]["data"], json!({"n": 1}));
    assert_eq!(caller["sessionId"], tokens["session_id"]);
    assert_eq!(caller["mfa"], false);
    assert_eq!(caller["createdAtIsDate"], true);
    assert_eq!(body["sameUser"], true);
    assert_eq!(
        body["conflict"],
        json!({"isKilnError": true, "code": "conflict"})
    );
    assert_eq!(
        body["created"],
        json!({"data": {"by": "js"}, "roles": ["editor"], "anonymous": false})
    );
}
