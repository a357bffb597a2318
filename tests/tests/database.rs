//! The database capability end to end: the todo API (Rust) and notes (JS)
//! examples, isolation between apps, bad input from a function, concurrent
//! increments, and durability across `kill -9`.

use std::collections::BTreeSet;

use kiln_tests::{ADMIN_KEY, Server, TODO_MANIFEST, error_code, examples, json_of};
use serde_json::json;

async fn todo_server() -> Server {
    let server = Server::start();
    server
        .deploy_ok("todo", TODO_MANIFEST, &[("todos", &examples().todo_api)])
        .await;
    server
}

#[tokio::test]
async fn the_todo_api_creates_reads_updates_and_deletes() {
    let server = todo_server().await;
    let (status, todo) = json_of(
        server
            .post("/todo/todos")
            .json(&json!({"title": " write tests "}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 201, "{todo}");
    assert_eq!(todo["title"], "write tests");
    assert_eq!(todo["done"], false);
    assert!(
        todo["created"]["$date"]
            .as_str()
            .is_some_and(|d| d.ends_with('Z')),
        "{todo}"
    );
    let id = todo["_id"].as_str().unwrap().to_string();

    let (status, second) = json_of(
        server
            .post("/todo/todos")
            .json(&json!({"title": "ship", "done": true}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 201, "{second}");

    let (status, got) = json_of(
        server
            .get(&format!("/todo/todos/{id}"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((status, got.clone()), (200, todo.clone()));

    let patch = server
        .client
        .patch(format!("{}/todo/todos/{id}", server.url))
        .json(&json!({"done": true}))
        .send();
    let (status, patched) = json_of(patch.await.unwrap()).await;
    assert_eq!(
        (status, patched["done"].clone()),
        (200, json!(true)),
        "{patched}"
    );

    let (_, all) = json_of(server.get("/todo/todos").send().await.unwrap()).await;
    assert_eq!(all.as_array().unwrap().len(), 2);
    assert_eq!(all[0]["_id"], json!(id), "oldest first");
    let (_, open) = json_of(server.get("/todo/todos?done=false").send().await.unwrap()).await;
    assert_eq!(open, json!([]));

    let delete = server
        .client
        .delete(format!("{}/todo/todos/{id}", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(delete.status(), 204);
    let (status, body) = json_of(
        server
            .get(&format!("/todo/todos/{id}"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((status, error_code(&body)), (404, "not_found"));
    let delete = server
        .client
        .delete(format!("{}/todo/todos/{id}", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(delete.status(), 404);
}

#[tokio::test]
async fn the_todo_api_validates_its_input() {
    let server = todo_server().await;
    for (body, code) in [
        (json!({"title": ""}), "invalid_title"),
        (json!({"title": "x".repeat(201)}), "invalid_title"),
        (json!({"done": true}), "invalid_title"),
        (json!({"title": "a", "owner": "me"}), "invalid_body"),
        (json!({"title": 5}), "invalid_body"),
    ] {
        let (status, answer) =
            json_of(server.post("/todo/todos").json(&body).send().await.unwrap()).await;
        assert_eq!((status, error_code(&answer)), (400, code), "{body}");
    }
    let (_, all) = json_of(server.get("/todo/todos").send().await.unwrap()).await;
    assert_eq!(all, json!([]), "nothing was written");
}

#[tokio::test]
async fn apps_see_only_their_own_data() {
    let server = todo_server().await;
    server
        .deploy_ok("other", TODO_MANIFEST, &[("todos", &examples().todo_api)])
        .await;
    let (status, _) = json_of(
        server
            .post("/todo/todos")
            .json(&json!({"title": "mine"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 201);
    let (_, theirs) = json_of(server.get("/other/todos").send().await.unwrap()).await;
    assert_eq!(theirs, json!([]));
    let (_, mine) = json_of(server.get("/todo/todos").send().await.unwrap()).await;
    assert_eq!(mine.as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn a_javascript_function_uses_the_database() {
    let server = Server::start();
    let manifest = "[functions.notes]\nsource = \"notes-js/index.js\"\n[[routes]]\npath = \"/notes\"\nfunction = \"notes\"\n";
    server
        .deploy_ok("js", manifest, &[("notes", &examples().notes_js)])
        .await;
    for text in ["first", "second"] {
        let (status, note) = json_of(
            server
                .post("/js/notes")
                .json(&json!({"text": text}))
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(status, 201, "{note}");
        assert_eq!(note["_id"].as_str().map(str::len), Some(24));
    }
    let (status, notes) = json_of(server.get("/js/notes").send().await.unwrap()).await;
    assert_eq!(status, 200, "{notes}");
    let texts: Vec<&str> = notes
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["text"].as_str().unwrap())
        .collect();
    assert_eq!(texts, ["first", "second"]);
    let (status, body) = json_of(
        server
            .post("/js/notes")
            .json(&json!({"text": ""}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((status, error_code(&body)), (400, "invalid_text"));
}

const PROBE_MANIFEST: &str = r#"
[functions.probe]
component = "misbehave.wasm"
limits = { memory_mb = 256 }

[[routes]]
path = "/*rest"
function = "probe"
"#;

#[tokio::test]
async fn bad_input_from_a_function_gets_typed_errors_and_writes_nothing() {
    let server = Server::start();
    server
        .deploy_ok("probe", PROBE_MANIFEST, &[("probe", &examples().misbehave)])
        .await;
    let (status, kinds) = json_of(server.get("/probe/db-errors").send().await.unwrap()).await;
    assert_eq!(status, 200, "{kinds}");
    let kinds: std::collections::BTreeMap<String, String> = kinds
        .as_array()
        .unwrap()
        .iter()
        .map(|pair| {
            (
                pair[0].as_str().unwrap().into(),
                pair[1].as_str().unwrap().into(),
            )
        })
        .collect();
    for (case, expected) in [
        ("not-json", "invalid-input"),
        ("not-an-object", "invalid-input"),
        ("dollar-field", "invalid-input"),
        ("deep", "invalid-input"),
        ("huge", "limit-exceeded"),
        ("platform-collection", "invalid-input"),
        ("path-collection", "invalid-input"),
        ("where", "invalid-input"),
        ("half-bad-batch", "invalid-input"),
        ("count-after", "ok 0"),
    ] {
        assert_eq!(kinds[case], expected, "{case}");
    }
    let (status, _) = json_of(server.get("/probe/ok").send().await.unwrap()).await;
    assert_eq!(status, 200, "the server keeps serving");
    assert!(!server.log().contains("panicked"), "{}", server.log());
}

#[tokio::test]
async fn concurrent_increments_through_functions_are_exact() {
    let server = Server::start();
    server
        .deploy_ok("probe", PROBE_MANIFEST, &[("probe", &examples().misbehave)])
        .await;
    let requests: Vec<_> = (0..60).map(|_| server.get("/probe/incr").send()).collect();
    let mut counts = BTreeSet::new();
    for response in futures::future::join_all(requests).await {
        let (status, doc) = json_of(response.unwrap()).await;
        assert_eq!(status, 200, "{doc}");
        counts.insert(doc["n"].as_i64().unwrap());
    }
    assert_eq!(
        counts,
        (1..=60).collect::<BTreeSet<i64>>(),
        "every increment saw its own count"
    );
}

#[tokio::test]
async fn writes_that_succeeded_survive_kill_9() {
    let data = tempfile::tempdir().unwrap();
    let server = Server::start_in(data.path(), Some(ADMIN_KEY), true);
    server
        .deploy_ok("todo", TODO_MANIFEST, &[("todos", &examples().todo_api)])
        .await;
    let url = server.url.clone();
    let client = server.client.clone();
    let writer = tokio::spawn(async move {
        let mut acknowledged = Vec::new();
        for i in 0.. {
            let sent = client
                .post(format!("{url}/todo/todos"))
                .json(&json!({"title": format!("t{i}")}))
                .send()
                .await;
            match sent {
                Ok(r) if r.status() == 201 => {
                    let body: serde_json::Value = r.json().await.unwrap();
                    acknowledged.push(body["_id"].as_str().unwrap().to_string());
                }
                _ => break,
            }
        }
        acknowledged
    });
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    server.kill();
    let acknowledged = writer.await.unwrap();
    assert!(
        acknowledged.len() > 10,
        "only {} writes before the kill",
        acknowledged.len()
    );

    let server = Server::start_in(data.path(), Some(ADMIN_KEY), true);
    let (status, all) = json_of(server.get("/todo/todos").send().await.unwrap()).await;
    assert_eq!(status, 200, "{all}");
    let stored: BTreeSet<String> = all
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["_id"].as_str().unwrap().to_string())
        .collect();
    let missing: Vec<_> = acknowledged
        .iter()
        .filter(|id| !stored.contains(*id))
        .collect();
    assert!(
        missing.is_empty(),
        "{} acknowledged writes lost: {missing:?}",
        missing.len()
    );
}

#[tokio::test]
async fn the_todo_api_and_deployments_work_the_same_on_mongodb() {
    let Ok(uri) = std::env::var("KILN_TEST_MONGODB_URI") else {
        eprintln!("KILN_TEST_MONGODB_URI is not set: skipping the MongoDB run");
        return;
    };
    let server = Server::start_with_env(&[("KILN_MONGODB_URI", &uri)]);
    // App names are unique per run: the MongoDB server outlives it.
    let app = format!("todo{}", std::process::id());
    server
        .deploy_ok(&app, TODO_MANIFEST, &[("todos", &examples().todo_api)])
        .await;
    let (status, todo) = json_of(
        server
            .post(&format!("/{app}/todos"))
            .json(&json!({"title": "on mongo"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 201, "{todo}");
    let id = todo["_id"].as_str().unwrap();
    let (status, got) = json_of(
        server
            .get(&format!("/{app}/todos/{id}"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (status, got),
        (200, todo.clone()),
        "dates and ids read back as written"
    );
    let patch = server
        .client
        .patch(format!("{}/{app}/todos/{id}", server.url))
        .json(&json!({"done": true}))
        .send();
    let (status, patched) = json_of(patch.await.unwrap()).await;
    assert_eq!(
        (status, patched["done"].clone()),
        (200, json!(true)),
        "{patched}"
    );
    let (_, all) = json_of(server.get(&format!("/{app}/todos")).send().await.unwrap()).await;
    assert_eq!(all.as_array().unwrap().len(), 1);
    let (status, versions) = json_of(
        server
            .admin(
                reqwest::Method::GET,
                &format!("/admin/v1/apps/{app}/deployments"),
            )
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (status, versions["live"].clone()),
        (200, json!(1)),
        "deployments are platform data in MongoDB"
    );
}
