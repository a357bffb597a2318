//! The client data API (`/APP/_kiln/data/...`) end to end, on SQLite and on
//! the MongoDB stand-in: each rule kind allowing and refusing, hidden and
//! server-set fields, queries that try to reach past the list rule, writes
//! that would move a document out of reach, and the write hooks.

use kiln_tests::{Server, call, error_code, examples};
use reqwest::Method;
use serde_json::{Value, json};

const MANIFEST: &str = r#"
[functions.probe]
component = "probe.wasm"
limits = { timeout = "2s" }

[[routes]]
path = "/probe/:what"
function = "probe"

# Owner-only: each user lists, reads and changes only their own notes.
[collections.notes]
list = { filter = { owner = "@user.id" } }
get = { filter = { owner = "@user.id" } }
create = "user"
update = { filter = { owner = "@user.id" } }
delete = { filter = { owner = "@user.id" } }
hidden = ["secret"]
on_create = { owner = "@user.id", createdAt = "@now" }
required = ["title"]
before_write = "probe"
after_write = "probe"
retries = 2
retry_backoff = "100ms"

# Public read of published posts, written by the role `editor`.
[collections.posts]
list = { filter = { published = true } }
get = "public"
create = "role:editor"
update = "role:editor"

# A function decides each read.
[collections.shared]
get = "function:probe"

# Declared without rules: no client reaches it.
[collections.locked]
hidden = ["x"]
"#;

struct User {
    id: String,
    token: String,
}

async fn sign_up(server: &Server, app: &str, email: &str) -> User {
    let body = json!({"email": email, "password": "correct horse battery"});
    let (status, tokens) = call(
        server,
        Method::POST,
        &format!("/{app}/_kiln/auth/signup"),
        None,
        Some(body),
    )
    .await;
    assert_eq!(status, 201, "{tokens}");
    User {
        id: tokens["user"]["id"].as_str().unwrap().to_string(),
        token: tokens["access_token"].as_str().unwrap().to_string(),
    }
}

/// A data call of `app` as `who` (none: anonymous).
async fn data(
    server: &Server,
    app: &str,
    method: Method,
    path: &str,
    who: Option<&User>,
    body: Option<Value>,
) -> (u16, Value) {
    call(
        server,
        method,
        &format!("/{app}/_kiln/data/{path}"),
        who.map(|u| u.token.as_str()),
        body,
    )
    .await
}

fn query(filter: Value) -> String {
    form_urlencoded::byte_serialize(filter.to_string().as_bytes()).collect()
}

/// Runs every rule and field check on one server; `app` is unique per run.
async fn rules_hold(server: &Server, app: &str) {
    server
        .deploy_ok(app, MANIFEST, &[("probe", &examples().js_probe)])
        .await;
    let ada = sign_up(server, app, "ada@example.com").await;
    let bob = sign_up(server, app, "bob@example.com").await;

    // Create: signed-in only; owner and createdAt filled by the server.
    let (status, body) = data(
        server,
        app,
        Method::POST,
        "notes",
        None,
        Some(json!({"title": "x"})),
    )
    .await;
    assert_eq!(
        (status, error_code(&body)),
        (401, "sign_in_required"),
        "{body}"
    );
    let (status, body) = data(
        server,
        app,
        Method::POST,
        "notes",
        Some(&ada),
        Some(json!({"title": "Mine"})),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let note = body["document"].clone();
    let id = note["_id"].as_str().unwrap().to_string();
    assert_eq!(note["owner"], json!(ada.id));
    assert!(note["createdAt"]["$date"].is_string(), "{note}");
    assert_eq!(
        note["slug"],
        json!("mine"),
        "the before hook changed the document"
    );
    for forged in [
        json!({"title": "t", "owner": bob.id}),
        json!({"title": "t", "createdAt": 1}),
    ] {
        let (status, body) =
            data(server, app, Method::POST, "notes", Some(&ada), Some(forged)).await;
        assert_eq!(
            (status, error_code(&body)),
            (400, "field_not_settable"),
            "{body}"
        );
    }
    let (status, body) = data(
        server,
        app,
        Method::POST,
        "notes",
        Some(&ada),
        Some(json!({"title": "t", "secret": 1})),
    )
    .await;
    assert_eq!(
        (status, error_code(&body)),
        (400, "field_not_settable"),
        "{body}"
    );
    let (status, body) = data(
        server,
        app,
        Method::POST,
        "notes",
        Some(&ada),
        Some(json!({"body": "no title"})),
    )
    .await;
    assert_eq!(
        (status, error_code(&body)),
        (400, "required_field"),
        "{body}"
    );
    data(
        server,
        app,
        Method::POST,
        "notes",
        Some(&bob),
        Some(json!({"title": "Bob's"})),
    )
    .await;

    // A function writes a hidden field; no answer ever shows it.
    let patched = server
        .admin(
            Method::PATCH,
            &format!("/admin/v1/apps/{app}/data/notes/{id}"),
        )
        .json(&json!({"$set": {"secret": "s3cret"}}))
        .send()
        .await
        .unwrap();
    let (status, body) = kiln_tests::json_of(patched).await;
    assert_eq!(status, 200, "{body}");
    let (status, got) = data(
        server,
        app,
        Method::GET,
        &format!("notes/{id}"),
        Some(&ada),
        None,
    )
    .await;
    assert_eq!(status, 200, "{got}");
    assert!(got.get("secret").is_none(), "{got}");
    let (_, page) = data(server, app, Method::GET, "notes", Some(&ada), None).await;
    assert_eq!(page["documents"].as_array().unwrap().len(), 1, "{page}");
    assert!(!page.to_string().contains("s3cret"), "{page}");

    // Get: another's note is as missing as a missing one.
    let (status, body) = data(
        server,
        app,
        Method::GET,
        &format!("notes/{id}"),
        Some(&bob),
        None,
    )
    .await;
    assert_eq!(
        (status, error_code(&body)),
        (404, "document_not_found"),
        "{body}"
    );
    let (status, body) = data(
        server,
        app,
        Method::GET,
        "notes/nosuchnote",
        Some(&bob),
        None,
    )
    .await;
    assert_eq!(
        (status, error_code(&body)),
        (404, "document_not_found"),
        "{body}"
    );

    // No filter, sort or projection reaches past the list rule or into hidden fields.
    for filter in [
        json!({"$or": [{"owner": ada.id}, {"owner": {"$ne": "x"}}]}),
        json!({"$nor": [{"owner": bob.id}]}),
        json!({"owner": ada.id}),
        json!({"owner.0": ada.id}),
        json!({"owner": {"$in": [ada.id, bob.id]}}),
        json!({"$and": [{"owner": {"$exists": true}}]}),
    ] {
        let (status, page) = data(
            server,
            app,
            Method::GET,
            &format!("notes?filter={}", query(filter.clone())),
            Some(&bob),
            None,
        )
        .await;
        assert_eq!(status, 200, "{filter}: {page}");
        let docs = page["documents"].as_array().unwrap();
        assert!(
            docs.iter().all(|d| d["owner"] == json!(bob.id)),
            "{filter}: {page}"
        );
        let (_, count) = data(
            server,
            app,
            Method::GET,
            &format!("notes?count=true&filter={}", query(filter.clone())),
            Some(&bob),
            None,
        )
        .await;
        assert!(count["count"].as_u64().unwrap() <= 1, "{filter}: {count}");
    }
    for (param, value) in [
        ("filter", json!({"secret": "s3cret"})),
        ("filter", json!({"$or": [{"secret": {"$exists": true}}]})),
        ("sort", json!({"secret": 1})),
        ("fields", json!({"secret": 1})),
    ] {
        let (status, body) = data(
            server,
            app,
            Method::GET,
            &format!("notes?{param}={}", query(value)),
            Some(&ada),
            None,
        )
        .await;
        assert_eq!(
            (status, error_code(&body)),
            (400, "hidden_field"),
            "{param}: {body}"
        );
    }
    for (path, code) in [
        (
            format!("notes?filter={}", query(json!({"$where": "1"}))),
            "invalid_query",
        ),
        ("notes?filter=%5B1%5D".to_string(), "invalid_query"),
        ("notes?limit=100000".to_string(), "invalid_query"),
        ("notes?what=1".to_string(), "invalid_query"),
        ("notes/bad%20id".to_string(), "invalid_document_id"),
        ("nosuch".to_string(), "collection_not_found"),
    ] {
        let (status, body) = data(server, app, Method::GET, &path, Some(&ada), None).await;
        assert_eq!(error_code(&body), code, "{path}: {status} {body}");
    }

    // Update: within reach only, and never out of it.
    let (status, body) = data(
        server,
        app,
        Method::PATCH,
        &format!("notes/{id}"),
        Some(&bob),
        Some(json!({"$set": {"title": "pwned"}})),
    )
    .await;
    assert_eq!(
        (status, error_code(&body)),
        (404, "document_not_found"),
        "{body}"
    );
    let (status, body) = data(
        server,
        app,
        Method::PATCH,
        &format!("notes/{id}"),
        Some(&ada),
        Some(json!({"$set": {"owner": bob.id}})),
    )
    .await;
    assert_eq!(
        (status, error_code(&body)),
        (400, "field_not_settable"),
        "{body}"
    );
    let (status, body) = data(
        server,
        app,
        Method::PATCH,
        &format!("notes/{id}"),
        Some(&ada),
        Some(json!({"$rename": {"title": "owner"}})),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = data(
        server,
        app,
        Method::PATCH,
        &format!("notes/{id}"),
        Some(&ada),
        Some(json!({"$set": {"body": "more"}})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["document"]["body"], json!("more"));
    assert!(body["document"].get("secret").is_none(), "{body}");
    let (status, body) = data(
        server,
        app,
        Method::PUT,
        &format!("notes/{id}"),
        Some(&ada),
        Some(json!({"title": "Replaced"})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["document"]["owner"],
        json!(ada.id),
        "server-set fields survive a replace"
    );
    let stored: Value = server
        .admin(
            Method::GET,
            &format!("/admin/v1/apps/{app}/data/notes/{id}"),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        stored["secret"],
        json!("s3cret"),
        "the admin sees hidden fields; the replace kept it"
    );

    // The before hook refuses, fails and times out: nothing is written.
    let (status, body) = data(
        server,
        app,
        Method::POST,
        "notes",
        Some(&ada),
        Some(json!({"title": "refuse"})),
    )
    .await;
    assert_eq!(
        (status, error_code(&body), body["error"]["reason"].as_str()),
        (400, "write_invalid", Some("title_taken")),
        "{body}"
    );
    for title in ["trap", "spin"] {
        let (status, body) = data(
            server,
            app,
            Method::POST,
            "notes",
            Some(&ada),
            Some(json!({"title": title})),
        )
        .await;
        assert_eq!(
            (status, error_code(&body)),
            (500, "write_hook_failed"),
            "{title}: {body}"
        );
    }
    let (_, count) = data(
        server,
        app,
        Method::GET,
        "notes?count=true",
        Some(&ada),
        None,
    )
    .await;
    assert_eq!(count["count"], json!(1), "{count}");

    // Role and public rules.
    let (status, body) = data(
        server,
        app,
        Method::POST,
        "posts",
        Some(&bob),
        Some(json!({"title": "p", "published": true})),
    )
    .await;
    assert_eq!((status, error_code(&body)), (403, "missing_role"), "{body}");
    let set_roles = server
        .admin(
            Method::PUT,
            &format!("/admin/v1/apps/{app}/users/{}/roles", bob.id),
        )
        .json(&json!({"roles": ["editor"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(set_roles.status(), 200);
    for (title, published) in [("out", true), ("draft", false)] {
        let (status, body) = data(
            server,
            app,
            Method::POST,
            "posts",
            Some(&bob),
            Some(json!({"title": title, "published": published})),
        )
        .await;
        assert_eq!(status, 201, "{body}");
    }
    let (status, page) = data(server, app, Method::GET, "posts", None, None).await;
    assert_eq!(status, 200, "{page}");
    let titles: Vec<_> = page["documents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["title"].clone())
        .collect();
    assert_eq!(
        titles,
        [json!("out")],
        "anonymous callers list published posts only"
    );
    let (status, body) = data(
        server,
        app,
        Method::DELETE,
        &format!("posts/{}", "x"),
        Some(&bob),
        None,
    )
    .await;
    assert_eq!(
        (status, error_code(&body)),
        (404, "document_not_found"),
        "{body}"
    );

    // A function rule; a collection without rules.
    server
        .admin(Method::POST, &format!("/admin/v1/apps/{app}/data/shared"))
        .json(&json!({"_id": "open", "shared": true}))
        .send()
        .await
        .unwrap();
    server
        .admin(Method::POST, &format!("/admin/v1/apps/{app}/data/shared"))
        .json(&json!({"_id": "closed", "shared": false}))
        .send()
        .await
        .unwrap();
    let (status, _) = data(server, app, Method::GET, "shared/open", None, None).await;
    assert_eq!(status, 200);
    let (status, body) = data(server, app, Method::GET, "shared/closed", None, None).await;
    assert_eq!(
        (status, error_code(&body)),
        (404, "document_not_found"),
        "{body}"
    );
    let (status, body) = data(server, app, Method::GET, "locked", Some(&ada), None).await;
    assert_eq!(
        (status, error_code(&body)),
        (403, "data_access_denied"),
        "{body}"
    );

    // Delete: the owner only; the before hook may refuse.
    let (status, _) = data(
        server,
        app,
        Method::DELETE,
        &format!("notes/{id}"),
        Some(&bob),
        None,
    )
    .await;
    assert_eq!(status, 404);
    let (status, body) = data(
        server,
        app,
        Method::DELETE,
        &format!("notes/{id}"),
        Some(&ada),
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, _) = data(
        server,
        app,
        Method::GET,
        &format!("notes/{id}"),
        Some(&ada),
        None,
    )
    .await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn rules_and_fields_hold_on_sqlite() {
    let server = Server::start();
    rules_hold(&server, "notes").await;
}

#[tokio::test]
async fn rules_and_fields_hold_on_mongodb() {
    let Ok(uri) = std::env::var("KILN_TEST_MONGODB_URI") else {
        eprintln!("KILN_TEST_MONGODB_URI is not set: skipping the MongoDB run");
        return;
    };
    let server = Server::start_with_env(&[("KILN_MONGODB_URI", &uri)]);
    rules_hold(&server, &format!("notes{}", std::process::id())).await;
}

/// Waits until the admin API shows the mark the after hook writes.
async fn mark(server: &Server, app: &str, id: &str, seconds: u64) -> Value {
    mark_in(server, app, "marks", id, seconds).await
}

/// Waits until the admin API shows document `id` of `collection`.
async fn mark_in(server: &Server, app: &str, collection: &str, id: &str, seconds: u64) -> Value {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(seconds);
    loop {
        let response = server
            .admin(
                Method::GET,
                &format!("/admin/v1/apps/{app}/data/{collection}/{id}"),
            )
            .send()
            .await
            .unwrap();
        if response.status() == 200 {
            return response.json().await.unwrap();
        }
        if std::time::Instant::now() >= deadline {
            let runs = server
                .admin(Method::GET, &format!("/admin/v1/apps/{app}/runs"))
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            panic!(
                "no `{id}` in `{collection}` after {seconds} s; runs: {runs}\n{}",
                server.log()
            );
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn the_after_hook_runs_after_the_write_is_retried_and_recorded() {
    let server = Server::start();
    server
        .deploy_ok("hooked", MANIFEST, &[("probe", &examples().js_probe)])
        .await;
    let ada = sign_up(&server, "hooked", "ada@example.com").await;
    let (status, body) = data(
        &server,
        "hooked",
        Method::POST,
        "notes",
        Some(&ada),
        Some(json!({"title": "Hello"})),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let id = body["document"]["_id"].as_str().unwrap();
    let marked = mark(&server, "hooked", &format!("create-{id}"), 10).await;
    assert_eq!(marked["after"]["title"], json!("Hello"));
    assert_eq!(marked["before"], Value::Null);
    assert_eq!(marked["user"], json!(ada.id));

    // The first attempt fails; the retry runs; both are in the run history.
    let (_, body) = data(
        &server,
        "hooked",
        Method::POST,
        "notes",
        Some(&ada),
        Some(json!({"title": "flaky"})),
    )
    .await;
    let flaky = body["document"]["_id"].as_str().unwrap().to_string();
    mark(&server, "hooked", &format!("create-{flaky}"), 10).await;
    let runs: Value = server
        .admin(Method::GET, "/admin/v1/apps/hooked/runs")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let attempts: Vec<(u64, String)> = runs["runs"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["trigger"] == json!("after_write:notes") && r["status"] != json!("running"))
        .filter_map(|r| Some((r["attempt"].as_u64()?, r["status"].as_str()?.to_string())))
        .collect();
    assert!(attempts.contains(&(1, "failed".into())), "{runs}");
    assert!(
        attempts.iter().filter(|(_, s)| s == "succeeded").count() >= 2,
        "{runs}"
    );
}

#[tokio::test]
async fn an_after_hook_cut_off_by_a_kill_runs_after_the_restart() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_in_with_env(dir.path(), &[]);
    server
        .deploy_ok("crashy", MANIFEST, &[("probe", &examples().js_probe)])
        .await;
    let ada = sign_up(&server, "crashy", "ada@example.com").await;
    let (status, body) = data(
        &server,
        "crashy",
        Method::POST,
        "notes",
        Some(&ada),
        Some(json!({"title": "slow"})),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let id = body["document"]["_id"].as_str().unwrap().to_string();
    // The hook runs for 1.5 s before it writes its mark: kill -9 inside it.
    tokio::time::sleep(std::time::Duration::from_millis(700)).await;
    server.kill();
    let again = Server::start_in_with_env(dir.path(), &[]);
    let marked = mark(&again, "crashy", &format!("create-{id}"), 30).await;
    assert_eq!(marked["after"]["title"], json!("slow"));
}

const KINDS: &str = r#"
[functions.probe]
component = "probe.wasm"

# Teams through roles, with a lock only an update's filter reads.
[collections.team]
list = { filter = { team = { "$in" = "@user.roles" } } }
get = { filter = { team = { "$in" = "@user.roles" } } }
create = { filter = { team = { "$in" = "@user.roles" } } }
update = { filter = { team = { "$in" = "@user.roles" }, locked = { "$ne" = true } } }
delete = "role:admin"

[collections.secure]
list = "mfa"
create = "mfa"

# The function decides every action.
[collections.ruled]
list = "function:probe"
get = "function:probe"
create = "function:probe"
update = "function:probe"
delete = "function:probe"

# `@new`: the owner never changes, and the status stays in its set.
[collections.stamped]
create = "user"
update = { filter = { owner = "@new.owner", status = { "$in" = ["open", "done"] } } }
"#;

#[tokio::test]
async fn each_rule_kind_allows_and_refuses_each_action_on_sqlite() {
    each_rule_kind(&Server::start(), "kinds").await;
}

#[tokio::test]
async fn each_rule_kind_allows_and_refuses_each_action_on_mongodb() {
    let Ok(uri) = std::env::var("KILN_TEST_MONGODB_URI") else {
        eprintln!("KILN_TEST_MONGODB_URI is not set: skipping the MongoDB run");
        return;
    };
    let server = Server::start_with_env(&[("KILN_MONGODB_URI", &uri)]);
    each_rule_kind(&server, &format!("kinds{}", std::process::id())).await;
}

async fn each_rule_kind(server: &Server, app: &str) {
    server
        .deploy_ok(app, KINDS, &[("probe", &examples().js_probe)])
        .await;
    let ada = sign_up(&server, app, "ada@example.com").await;
    let bob = sign_up(&server, app, "bob@example.com").await;
    let roles = |user: &User, roles: Value| {
        server
            .admin(
                Method::PUT,
                &format!("/admin/v1/apps/{app}/users/{}/roles", user.id),
            )
            .json(&json!({ "roles": roles }))
            .send()
    };
    assert_eq!(
        roles(&ada, json!(["red", "admin", "reader"]))
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(roles(&bob, json!(["blue"])).await.unwrap().status(), 200);

    // Filter rule on roles: create, list, get, update within the team only.
    let (status, body) = data(
        &server,
        app,
        Method::POST,
        "team",
        Some(&ada),
        Some(json!({"_id": "r1", "team": "red"})),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = data(
        &server,
        app,
        Method::POST,
        "team",
        Some(&bob),
        Some(json!({"_id": "r2", "team": "red"})),
    )
    .await;
    assert_eq!(
        (status, error_code(&body)),
        (403, "data_access_denied"),
        "{body}"
    );
    let (status, body) = data(
        &server,
        app,
        Method::POST,
        "team",
        None,
        Some(json!({"team": "red"})),
    )
    .await;
    assert_eq!(
        (status, error_code(&body)),
        (401, "sign_in_required"),
        "{body}"
    );
    data(
        &server,
        app,
        Method::POST,
        "team",
        Some(&bob),
        Some(json!({"_id": "b1", "team": "blue"})),
    )
    .await;
    let (_, page) = data(&server, app, Method::GET, "team", Some(&bob), None).await;
    assert_eq!(
        page["documents"],
        json!([{"_id": "b1", "team": "blue"}]),
        "{page}"
    );
    let (status, _) = data(&server, app, Method::GET, "team/r1", Some(&bob), None).await;
    assert_eq!(status, 404);
    // An update that would carry the document out of the team is refused.
    let (status, body) = data(
        &server,
        app,
        Method::PATCH,
        "team/r1",
        Some(&ada),
        Some(json!({"$set": {"team": "blue"}})),
    )
    .await;
    assert_eq!(
        (status, error_code(&body)),
        (403, "write_out_of_reach"),
        "{body}"
    );
    let (status, body) = data(
        &server,
        app,
        Method::PATCH,
        "team/r1",
        Some(&ada),
        Some(json!({"$set": {"locked": true}})),
    )
    .await;
    assert_eq!(
        (status, error_code(&body)),
        (403, "write_out_of_reach"),
        "locking moves it out of reach: {body}"
    );
    let (status, _) = data(
        &server,
        app,
        Method::PATCH,
        "team/r1",
        Some(&ada),
        Some(json!({"$set": {"n": 1}})),
    )
    .await;
    assert_eq!(status, 200);
    // Role rule on delete.
    let (status, body) = data(&server, app, Method::DELETE, "team/b1", Some(&bob), None).await;
    assert_eq!((status, error_code(&body)), (403, "missing_role"), "{body}");
    let (status, _) = data(&server, app, Method::DELETE, "team/b1", Some(&ada), None).await;
    assert_eq!(status, 200);

    // mfa: a session without the second factor is refused.
    let (status, body) = data(&server, app, Method::GET, "secure", Some(&ada), None).await;
    assert_eq!(
        (status, error_code(&body)),
        (403, "second_factor_required"),
        "{body}"
    );
    let (status, body) = data(&server, app, Method::GET, "secure/x", Some(&ada), None).await;
    assert_eq!(
        (status, error_code(&body)),
        (403, "data_access_denied"),
        "no get rule: {body}"
    );
    // The session that enrols a second factor passes it.
    let (status, enrolment) = call(
        server,
        Method::POST,
        &format!("/{app}/_kiln/auth/mfa/totp"),
        Some(&ada.token),
        None,
    )
    .await;
    assert_eq!(status, 200, "{enrolment}");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let code = totp_rs::Builder::new()
        .with_secret(
            totp_rs::Secret::try_from_base32(enrolment["secret"].as_str().unwrap()).unwrap(),
        )
        .build()
        .unwrap()
        .generate(now)
        .to_string();
    let (status, body) = call(
        server,
        Method::POST,
        &format!("/{app}/_kiln/auth/mfa/totp/confirm"),
        Some(&ada.token),
        Some(json!({ "code": code })),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = data(
        &server,
        app,
        Method::POST,
        "secure",
        Some(&ada),
        Some(json!({"_id": "m"})),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let (status, page) = data(&server, app, Method::GET, "secure", Some(&ada), None).await;
    assert_eq!(
        (status, page["documents"].as_array().map(Vec::len)),
        (200, Some(1)),
        "{page}"
    );

    // function: rules, each action.
    let (status, _) = data(&server, app, Method::GET, "ruled", Some(&ada), None).await;
    assert_eq!(status, 200, "a reader lists");
    let (status, body) = data(&server, app, Method::GET, "ruled", Some(&bob), None).await;
    assert_eq!(
        (status, error_code(&body)),
        (403, "data_access_denied"),
        "{body}"
    );
    let (status, body) = data(
        &server,
        app,
        Method::POST,
        "ruled",
        Some(&bob),
        Some(json!({"_id": "no"})),
    )
    .await;
    assert_eq!(
        (status, error_code(&body)),
        (403, "data_access_denied"),
        "{body}"
    );
    let (status, _) = data(
        &server,
        app,
        Method::POST,
        "ruled",
        Some(&bob),
        Some(json!({"_id": "yes", "ok": true})),
    )
    .await;
    assert_eq!(status, 201);
    let (status, body) = data(
        &server,
        app,
        Method::PATCH,
        "ruled/yes",
        Some(&bob),
        Some(json!({"$set": {"ok": false}})),
    )
    .await;
    assert_eq!(
        (status, error_code(&body)),
        (404, "document_not_found"),
        "{body}"
    );
    let (status, _) = data(
        &server,
        app,
        Method::PATCH,
        "ruled/yes",
        Some(&bob),
        Some(json!({"$set": {"n": 1}})),
    )
    .await;
    assert_eq!(status, 200);
    let (status, _) = data(&server, app, Method::GET, "ruled/yes", Some(&bob), None).await;
    assert_eq!(status, 404, "get allows shared documents and editors only");
    let (status, _) = data(&server, app, Method::DELETE, "ruled/yes", Some(&bob), None).await;
    assert_eq!(status, 200);

    // @new: the owner is the stored one, the status stays in its set.
    let (status, body) = data(
        &server,
        app,
        Method::POST,
        "stamped",
        Some(&ada),
        Some(json!({"_id": "s", "owner": "ada", "status": "open"})),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let (status, _) = data(
        &server,
        app,
        Method::PATCH,
        "stamped/s",
        Some(&ada),
        Some(json!({"$set": {"status": "done"}})),
    )
    .await;
    assert_eq!(status, 200);
    let (status, body) = data(
        &server,
        app,
        Method::PATCH,
        "stamped/s",
        Some(&ada),
        Some(json!({"$set": {"owner": "bob"}})),
    )
    .await;
    assert_eq!(status, 404, "the stored owner is not the new one: {body}");
    let (status, body) = data(
        &server,
        app,
        Method::PATCH,
        "stamped/s",
        Some(&ada),
        Some(json!({"$set": {"status": "lost"}})),
    )
    .await;
    assert_eq!(
        (status, error_code(&body)),
        (403, "write_out_of_reach"),
        "{body}"
    );
    let (status, body) = data(&server, app, Method::GET, "stamped", Some(&ada), None).await;
    assert_eq!(
        (status, error_code(&body)),
        (403, "data_access_denied"),
        "no list rule: {body}"
    );
}

/// Runs `kiln data ARGS --app APP` against the server.
fn kiln_data(server: &Server, args: &[&str]) -> std::process::Output {
    kiln_tests::clean_command(kiln_tests::kiln_binary())
        .arg("data")
        .args(args)
        .env("KILN_SERVER", &server.url)
        .env("KILN_ADMIN_KEY", kiln_tests::ADMIN_KEY)
        .output()
        .unwrap()
}

#[tokio::test]
async fn kiln_data_lists_gets_puts_and_removes_past_the_rules() {
    let server = Server::start();
    server
        .deploy_ok("ops", MANIFEST, &[("probe", &examples().js_probe)])
        .await;
    let stdout = |o: &std::process::Output| String::from_utf8_lossy(&o.stdout).to_string();
    let put = kiln_data(
        &server,
        &[
            "put",
            "--app",
            "ops",
            "locked",
            r#"{"_id": "a", "x": "hidden to clients", "n": 1}"#,
        ],
    );
    assert!(put.status.success(), "{put:?}");
    let put = kiln_data(
        &server,
        &[
            "put",
            "--app",
            "ops",
            "locked",
            "--id",
            "a",
            r#"{"x": "mended", "n": 2}"#,
        ],
    );
    assert!(put.status.success(), "{put:?}");
    let got = kiln_data(&server, &["get", "--app", "ops", "locked", "a"]);
    let doc: Value = serde_json::from_str(stdout(&got).trim()).unwrap();
    assert_eq!(doc, json!({"_id": "a", "x": "mended", "n": 2}));
    kiln_data(
        &server,
        &["put", "--app", "ops", "locked", r#"{"_id": "b", "n": 3}"#],
    );
    let listed = kiln_data(
        &server,
        &[
            "list",
            "--app",
            "ops",
            "locked",
            "--filter",
            r#"{"n": {"$gte": 2}}"#,
            "--sort",
            r#"{"n": -1}"#,
        ],
    );
    let ids: Vec<String> = stdout(&listed)
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["_id"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(ids, ["b", "a"]);
    // Clients still reach nothing there.
    let (status, _) = data(&server, "ops", Method::GET, "locked/a", None, None).await;
    assert_eq!(status, 403);
    let rm = kiln_data(&server, &["rm", "--app", "ops", "locked", "a"]);
    assert!(rm.status.success(), "{rm:?}");
    let gone = kiln_data(&server, &["get", "--app", "ops", "locked", "a"]);
    assert!(!gone.status.success());
    let stderr = String::from_utf8_lossy(&gone.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("no document"), "{stderr}");
    let bad = kiln_data(
        &server,
        &["list", "--app", "ops", "locked", "--filter", "{nope"],
    );
    assert!(
        !bad.status.success()
            && String::from_utf8_lossy(&bad.stderr).contains("--filter is not JSON")
    );
}

#[tokio::test]
async fn rust_hooks_change_refuse_and_follow_writes() {
    let server = Server::start();
    let manifest = r#"
[functions.todos]
component = "todo_api.wasm"

[collections.todos]
list = "user"
create = "user"
update = "user"
before_write = "todos"
after_write = "todos"
"#;
    server
        .deploy_ok("rusty", manifest, &[("todos", &examples().todo_api)])
        .await;
    let ada = sign_up(&server, "rusty", "ada@example.com").await;
    let (status, body) = data(
        &server,
        "rusty",
        Method::POST,
        "todos",
        Some(&ada),
        Some(json!({"title": "  spaced  "})),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(
        body["document"]["title"],
        json!("spaced"),
        "the Rust before hook trimmed it"
    );
    let (status, body) = data(
        &server,
        "rusty",
        Method::POST,
        "todos",
        Some(&ada),
        Some(json!({"title": "   "})),
    )
    .await;
    assert_eq!(
        (status, error_code(&body), body["error"]["reason"].as_str()),
        (400, "write_invalid", Some("empty_title")),
        "{body}"
    );
    let log = mark_in(&server, "rusty", "todo_log", "create", 10).await;
    assert_eq!(log["writes"], json!(1), "{log}");
}

#[tokio::test]
async fn a_function_writes_through_the_hooks_only_when_it_asks_and_never_from_a_hook() {
    let server = Server::start();
    server
        .deploy_ok("fnhooks", MANIFEST, &[("probe", &examples().js_probe)])
        .await;
    let (status, body) = call(&server, Method::GET, "/fnhooks/probe/hooked", None, None).await;
    assert_eq!(status, 200, "{body}");
    // The before hook ran: slug set; rules and server-set fields do not apply.
    assert_eq!(body["created"]["slug"], json!("hooked"), "{body}");
    assert_eq!(body["created"]["owner"], json!("a function"), "{body}");
    assert_eq!(body["updated"]["slug"], json!("rehooked"), "{body}");
    assert_eq!(body["refused"]["code"], json!("invalid-input"), "{body}");
    assert!(
        body["refused"]["message"]
            .as_str()
            .unwrap()
            .contains("title_taken"),
        "{body}"
    );
    let id = body["created"]["_id"].as_str().unwrap();
    // The after hook ran for the hooked writes, not for the plain insert.
    let created = mark(&server, "fnhooks", &format!("create-{id}"), 10).await;
    assert_eq!(created["user"], Value::Null);
    mark(&server, "fnhooks", &format!("update-{id}"), 10).await;
    let plain = body["plain"].as_str().unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let none = server
        .admin(
            Method::GET,
            &format!("/admin/v1/apps/fnhooks/data/marks/create-{plain}"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(none.status(), 404, "a plain insert calls no hook");

    // A hook's own hooked write is refused, so hooks cannot loop.
    let ada = sign_up(&server, "fnhooks", "ada@example.com").await;
    let (status, body) = data(
        &server,
        "fnhooks",
        Method::POST,
        "notes",
        Some(&ada),
        Some(json!({"title": "nested"})),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let nested_id = body["document"]["_id"].as_str().unwrap();
    let marked = mark(&server, "fnhooks", &format!("create-{nested_id}"), 10).await;
    assert_eq!(marked["nested"], json!("permission-denied"), "{marked}");
}

#[tokio::test]
async fn bad_declarations_and_bad_input_are_refused_and_change_nothing() {
    let server = Server::start();
    let probe = [("probe", examples().js_probe.as_path())];
    for (declaration, names) in [
        (
            "[collections.notes]\nlist = { filter = { owner = \"@user.name\" } }",
            "collections.notes.list",
        ),
        (
            "[collections.notes]\nupdate = { filter = { a = { \"$where\" = \"1\" } } }",
            "collections.notes.update",
        ),
        (
            "[collections.notes]\nhidden = [\"pin\"]\nrequired = [\"pin\"]",
            "collections.notes.required",
        ),
        (
            "[collections.notes]\nbefore_write = \"nobody\"",
            "collections.notes.before_write",
        ),
    ] {
        let manifest = format!("[functions.probe]\ncomponent = \"probe.wasm\"\n\n{declaration}\n");
        let (status, body) = server.deploy("refused", &manifest, &probe).await;
        assert_eq!(
            (status, error_code(&body)),
            (400, "invalid_manifest"),
            "{body}"
        );
        assert!(
            body["error"]["message"].as_str().unwrap().contains(names),
            "{body}"
        );
    }
    // A hook naming a function without an HTTP handler is refused too.
    let no_handler = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(no_handler.path(), wat::parse_str("(component)").unwrap()).unwrap();
    let (status, body) = server
        .deploy(
            "refused",
            "[functions.quiet]\ncomponent = \"quiet.wasm\"\n\n[collections.notes]\nafter_write = \"quiet\"\n",
            &[("quiet", no_handler.path())],
        )
        .await;
    assert_eq!(
        (status, error_code(&body)),
        (400, "missing_export"),
        "{body}"
    );
    assert!(
        body.to_string()
            .contains("a collection's hook asks it: collections.notes.after_write"),
        "{body}"
    );

    server.deploy_ok("input", MANIFEST, &probe).await;
    let ada = sign_up(&server, "input", "ada@example.com").await;
    let big = "x".repeat(1024 * 1024 + 1);
    let (status, body) = data(
        &server,
        "input",
        Method::POST,
        "notes",
        Some(&ada),
        Some(json!({"title": big})),
    )
    .await;
    assert_eq!((status, error_code(&body)), (400, "invalid_body"), "{body}");
    let (status, body) = data(
        &server,
        "input",
        Method::POST,
        "notes",
        Some(&ada),
        Some(json!([1])),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = data(
        &server,
        "input",
        Method::POST,
        "notes",
        Some(&ada),
        Some(json!({"_id": "a b", "title": "t"})),
    )
    .await;
    assert_eq!(
        (status, error_code(&body)),
        (400, "invalid_document_id"),
        "{body}"
    );
    let (status, body) = data(
        &server,
        "input",
        Method::PATCH,
        "notes/whatever",
        Some(&ada),
        Some(json!({"$where": "1"})),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    let text = server
        .client
        .post(format!("{}/input/_kiln/data/notes", server.url))
        .bearer_auth(&ada.token)
        .header("content-type", "text/plain")
        .body("{\"title\": \"t\"}")
        .send()
        .await
        .unwrap();
    assert_eq!(text.status(), 415);
    let (_, count) = data(
        &server,
        "input",
        Method::GET,
        "notes?count=true",
        Some(&ada),
        None,
    )
    .await;
    assert_eq!(count["count"], json!(0), "nothing was written: {count}");
}
