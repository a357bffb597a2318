//! Users, sessions and tokens against a real server: the `/_kiln/auth`
//! endpoints, route policies checked before a function runs, the
//! `accounts` example reading the caller through `kiln:platform/auth`, the
//! admin API, and an attacker's set of forged and replayed tokens.

use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use kiln_tests::{ADMIN_KEY, Server, call, error_code, examples, json_of};
use reqwest::Method;
use serde_json::{Value, json};

/// Cheap argon2 so the tests do not spend their time hashing.
const MANIFEST: &str = r#"
[auth]
anonymous = true
argon2 = { memory_kib = 64, iterations = 1, parallelism = 1 }
throttle = { account_failures = 3, address_failures = 50 }
mail = { function = "accounts", link = "https://shop.example/auth?kind={kind}&token={token}" }

[functions.accounts]
component = "accounts.wasm"

[[routes]]
path = "/me"
function = "accounts"
auth = "user"

[[routes]]
path = "/whoami"
function = "accounts"

[[routes]]
path = "/staff"
function = "accounts"
auth = "role:staff"

[[routes]]
path = "/secure"
function = "accounts"
auth = "mfa"

[[routes]]
path = "/admin/users"
methods = ["POST"]
function = "accounts"
auth = "role:admin"

[[routes]]
path = "/admin/users/:id/disable"
methods = ["POST"]
function = "accounts"
auth = "role:admin"
"#;

async fn server_with(apps: &[&str]) -> Server {
    let server = Server::start();
    for app in apps {
        server
            .deploy_ok(app, MANIFEST, &[("accounts", &examples().accounts)])
            .await;
    }
    server
}

async fn sign_up(server: &Server, app: &str, email: &str) -> Value {
    let (status, body) = call(
        server,
        Method::POST,
        &format!("/{app}/_kiln/auth/signup"),
        None,
        Some(json!({"email": email, "password": "correct horse battery", "data": {"name": "Ada"}})),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    body
}

fn access(tokens: &Value) -> &str {
    tokens["access_token"].as_str().unwrap()
}

fn refresh(tokens: &Value) -> &str {
    tokens["refresh_token"].as_str().unwrap()
}

async fn me(server: &Server, app: &str, token: &str) -> (u16, Value) {
    call(
        server,
        Method::GET,
        &format!("/{app}/me"),
        Some(token),
        None,
    )
    .await
}

#[tokio::test]
async fn sign_up_sign_in_refresh_and_sign_out() {
    let server = server_with(&["shop"]).await;
    let tokens = sign_up(&server, "shop", "Ada@Example.com").await;
    assert_eq!(tokens["user"]["email"], "ada@example.com");
    assert_eq!(tokens["token_type"], "bearer");
    assert_eq!(tokens["expires_in"], 900);
    assert!(tokens["user"].get("password_hash").is_none());

    // The function reads the verified caller from the host.
    let (status, body) = me(&server, "shop", access(&tokens)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["user"]["email"], "ada@example.com");
    assert_eq!(body["user"]["data"], json!({"name": "Ada"}));
    assert_eq!(body["session_id"], tokens["session_id"]);
    // A public route sees the caller too, or null without a token.
    let (_, whoami) = call(
        &server,
        Method::GET,
        "/shop/whoami",
        Some(access(&tokens)),
        None,
    )
    .await;
    assert_eq!(whoami["user"]["id"], tokens["user"]["id"]);
    let (status, anonymous) = call(&server, Method::GET, "/shop/whoami", None, None).await;
    assert_eq!((status, anonymous), (200, Value::Null));

    // No token on a `user` route: 401 with a challenge, before any instance.
    let response = server.get("/shop/me").send().await.unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(
        response.headers()["www-authenticate"],
        "Bearer realm=\"shop\""
    );
    let (_, body) = json_of(response).await;
    assert_eq!(error_code(&body), "sign_in_required");

    // The same email again, in another case: a conflict.
    let (status, body) = call(
        &server,
        Method::POST,
        "/shop/_kiln/auth/signup",
        None,
        Some(json!({"email": "ADA@example.com", "password": "another password"})),
    )
    .await;
    assert_eq!((status, error_code(&body)), (409, "email_taken"));
    let (status, body) = call(
        &server,
        Method::POST,
        "/shop/_kiln/auth/signup",
        None,
        Some(json!({"email": "bob@example.com", "password": "short"})),
    )
    .await;
    assert_eq!((status, error_code(&body)), (400, "weak_password"));

    // Sign in, refresh (the refresh token rotates), sign out.
    let (status, second) = call(
        &server,
        Method::POST,
        "/shop/_kiln/auth/signin",
        None,
        Some(json!({"email": "ada@example.com", "password": "correct horse battery"})),
    )
    .await;
    assert_eq!(status, 200, "{second}");
    assert_ne!(second["session_id"], tokens["session_id"]);
    let (status, refreshed) = call(
        &server,
        Method::POST,
        "/shop/_kiln/auth/refresh",
        None,
        Some(json!({"refresh_token": refresh(&second)})),
    )
    .await;
    assert_eq!(status, 200, "{refreshed}");
    assert_eq!(refreshed["session_id"], second["session_id"]);
    assert_ne!(refresh(&refreshed), refresh(&second));
    assert_eq!(me(&server, "shop", access(&refreshed)).await.0, 200);

    let (status, sessions) = call(
        &server,
        Method::GET,
        "/shop/_kiln/auth/sessions",
        Some(access(&refreshed)),
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(sessions["sessions"].as_array().unwrap().len(), 2);
    let current: Vec<&Value> = sessions["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["current"] == true)
        .collect();
    assert_eq!(current[0]["id"], second["session_id"]);

    let (status, _) = call(
        &server,
        Method::POST,
        "/shop/_kiln/auth/signout",
        Some(access(&refreshed)),
        None,
    )
    .await;
    assert_eq!(status, 200);
    // Signed out: the still-unexpired access token is refused at once.
    let (status, body) = me(&server, "shop", access(&refreshed)).await;
    assert_eq!((status, error_code(&body)), (401, "invalid_token"));
    // The first session is untouched; signing out everywhere ends it.
    assert_eq!(me(&server, "shop", access(&tokens)).await.0, 200);
    let (status, body) = call(
        &server,
        Method::POST,
        "/shop/_kiln/auth/signout",
        Some(access(&tokens)),
        Some(json!({"everywhere": true})),
    )
    .await;
    assert_eq!((status, body["revoked"].as_u64()), (200, Some(1)));
    assert_eq!(me(&server, "shop", access(&tokens)).await.0, 401);
}

#[tokio::test]
async fn an_email_with_a_trailing_dot_or_another_case_is_the_same_account() {
    let server = server_with(&["shop"]).await;
    let tokens = sign_up(&server, "shop", "ada@example.com").await;
    for same in ["ada@example.com.", "ADA@EXAMPLE.COM.", "ada@Example.Com"] {
        let (status, body) = call(
            &server,
            Method::POST,
            "/shop/_kiln/auth/signup",
            None,
            Some(json!({"email": same, "password": "correct horse battery"})),
        )
        .await;
        assert_eq!((status, error_code(&body)), (409, "email_taken"), "{same}");
    }
    let (status, body) = call(
        &server,
        Method::POST,
        "/shop/_kiln/auth/signin",
        None,
        Some(json!({"email": "Ada@example.com.", "password": "correct horse battery"})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["user"]["id"], tokens["user"]["id"]);
}

#[tokio::test]
async fn json_endpoints_refuse_bodies_a_browser_may_send_cross_site() {
    let server = server_with(&["shop"]).await;
    sign_up(&server, "shop", "ada@example.com").await;
    let credentials =
        json!({"email": "ada@example.com", "password": "correct horse battery"}).to_string();
    // What a cross-site form or fetch without a preflight can send.
    for content_type in [
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
        Some("multipart/form-data; boundary=x"),
        None,
    ] {
        for path in ["/shop/_kiln/auth/signin", "/shop/_kiln/auth/signup"] {
            let mut request = server.post(path).body(credentials.clone());
            if let Some(content_type) = content_type {
                request = request.header("content-type", content_type);
            }
            let (status, body) = json_of(request.send().await.unwrap()).await;
            assert_eq!(
                (status, error_code(&body)),
                (415, "unsupported_media_type"),
                "{path} with {content_type:?}"
            );
        }
    }
    // The admin API too.
    let response = server
        .admin(Method::POST, "/admin/v1/apps/shop/deployments")
        .header("content-type", "text/plain")
        .body("{}")
        .send()
        .await
        .unwrap();
    let (status, body) = json_of(response).await;
    assert_eq!((status, error_code(&body)), (415, "unsupported_media_type"));
    // The same sign-in labelled as JSON works.
    let response = server
        .post("/shop/_kiln/auth/signin")
        .header("content-type", "application/json; charset=utf-8")
        .body(credentials)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn a_reused_refresh_token_revokes_its_session() {
    let server = server_with(&["shop"]).await;
    let tokens = sign_up(&server, "shop", "eve@example.com").await;
    let refresh_call = |token: String| {
        let server = &server;
        async move {
            call(
                server,
                Method::POST,
                "/shop/_kiln/auth/refresh",
                None,
                Some(json!({"refresh_token": token})),
            )
            .await
        }
    };
    let (status, rotated) = refresh_call(refresh(&tokens).to_string()).await;
    assert_eq!(status, 200);
    // The first token again: refused, and the whole session is revoked.
    let (status, body) = refresh_call(refresh(&tokens).to_string()).await;
    assert_eq!((status, error_code(&body)), (401, "invalid_refresh_token"));
    assert_eq!(me(&server, "shop", access(&rotated)).await.0, 401);
    let (status, _) = refresh_call(refresh(&rotated).to_string()).await;
    assert_eq!(status, 401, "the rotated-to token died with its session");
    assert!(
        server
            .log()
            .contains("a rotated refresh token was used again")
    );
    // A guessed secret for a live session is refused without revoking it.
    let live = sign_up(&server, "shop", "frank@example.com").await;
    let sid = live["session_id"].as_str().unwrap();
    let (status, _) = refresh_call(format!("{sid}.{}", "A".repeat(43))).await;
    assert_eq!(status, 401);
    assert_eq!(me(&server, "shop", access(&live)).await.0, 200);
}

#[tokio::test]
async fn unknown_emails_and_wrong_passwords_look_the_same_and_are_throttled() {
    let server = server_with(&["shop"]).await;
    sign_up(&server, "shop", "ada@example.com").await;
    let attempt = |email: &'static str, password: &'static str| {
        let server = &server;
        async move {
            let response = server
                .post("/shop/_kiln/auth/signin")
                .json(&json!({"email": email, "password": password}))
                .send()
                .await
                .unwrap();
            let retry = response.headers().get("retry-after").cloned();
            let (status, body) = json_of(response).await;
            (status, body, retry)
        }
    };
    let (s1, wrong_password, _) = attempt("ada@example.com", "not the password").await;
    let (s2, unknown_email, _) = attempt("nobody@example.com", "not the password").await;
    assert_eq!(s1, 401);
    assert_eq!((s1, &wrong_password), (s2, &unknown_email));
    assert_eq!(error_code(&wrong_password), "invalid_credentials");
    // The third failure for the account (the allowance in the manifest)
    // starts the delays: even the right password waits.
    attempt("ada@example.com", "still wrong").await;
    attempt("ada@example.com", "wrong again").await;
    let (status, body, retry) = attempt("ada@example.com", "correct horse battery").await;
    assert_eq!((status, error_code(&body)), (429, "too_many_attempts"));
    assert!(retry.is_some());
    // An unknown email is throttled the same way.
    for _ in 0..3 {
        attempt("nobody@example.com", "guess").await;
    }
    let (status, _, _) = attempt("nobody@example.com", "guess").await;
    assert_eq!(status, 429);
    // Another account is not held back.
    sign_up(&server, "shop", "bob@example.com").await;
    let (status, _, _) = attempt("bob@example.com", "correct horse battery").await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn profile_password_change_anonymous_upgrade_and_deletion() {
    let server = server_with(&["shop"]).await;
    let tokens = sign_up(&server, "shop", "ada@example.com").await;
    let (status, body) = call(
        &server,
        Method::PATCH,
        "/shop/_kiln/auth/user",
        Some(access(&tokens)),
        Some(json!({"data": {"name": "Ada L.", "plan": "pro"}})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["user"]["data"]["plan"], "pro");
    let (status, body) = call(
        &server,
        Method::PATCH,
        "/shop/_kiln/auth/user",
        Some(access(&tokens)),
        Some(json!({"data": [1]})),
    )
    .await;
    assert_eq!((status, error_code(&body)), (400, "invalid_input"));

    // A second session of the same user, then a password change: the other
    // session ends, this one stays.
    let (_, second) = call(
        &server,
        Method::POST,
        "/shop/_kiln/auth/signin",
        None,
        Some(json!({"email": "ada@example.com", "password": "correct horse battery"})),
    )
    .await;
    let (status, body) = call(
        &server,
        Method::POST,
        "/shop/_kiln/auth/password",
        Some(access(&tokens)),
        Some(json!({"current_password": "wrong", "new_password": "a new long password"})),
    )
    .await;
    assert_eq!((status, error_code(&body)), (401, "invalid_credentials"));
    let (status, _) = call(&server, Method::POST, "/shop/_kiln/auth/password", Some(access(&tokens)),
        Some(json!({"current_password": "correct horse battery", "new_password": "a new long password"}))).await;
    assert_eq!(status, 200);
    assert_eq!(me(&server, "shop", access(&second)).await.0, 401);
    assert_eq!(me(&server, "shop", access(&tokens)).await.0, 200);
    let (status, _) = call(
        &server,
        Method::POST,
        "/shop/_kiln/auth/signin",
        None,
        Some(json!({"email": "ada@example.com", "password": "a new long password"})),
    )
    .await;
    assert_eq!(status, 200);

    // Anonymous, then upgraded: the id stays.
    let (status, anon) = call(
        &server,
        Method::POST,
        "/shop/_kiln/auth/anonymous",
        None,
        Some(json!({})),
    )
    .await;
    assert_eq!(status, 201, "{anon}");
    assert_eq!(anon["user"]["anonymous"], true);
    let (status, upgraded) = call(
        &server,
        Method::POST,
        "/shop/_kiln/auth/upgrade",
        Some(access(&anon)),
        Some(json!({"email": "anon@example.com", "password": "now with a password"})),
    )
    .await;
    assert_eq!(status, 200, "{upgraded}");
    assert_eq!(upgraded["user"]["id"], anon["user"]["id"]);
    assert_eq!(upgraded["user"]["anonymous"], false);
    let (status, body) = call(
        &server,
        Method::POST,
        "/shop/_kiln/auth/upgrade",
        Some(access(&anon)),
        Some(json!({"email": "anon2@example.com", "password": "now with a password"})),
    )
    .await;
    assert_eq!((status, error_code(&body)), (403, "not_allowed"));

    // Deleting one's account needs the password; then every token is dead.
    let (status, _) = call(
        &server,
        Method::DELETE,
        "/shop/_kiln/auth/user",
        Some(access(&tokens)),
        Some(json!({"password": "nope"})),
    )
    .await;
    assert_eq!(status, 401);
    let (status, _) = call(
        &server,
        Method::DELETE,
        "/shop/_kiln/auth/user",
        Some(access(&tokens)),
        Some(json!({"password": "a new long password"})),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(me(&server, "shop", access(&tokens)).await.0, 401);
    let (status, _) = call(
        &server,
        Method::POST,
        "/shop/_kiln/auth/signin",
        None,
        Some(json!({"email": "ada@example.com", "password": "a new long password"})),
    )
    .await;
    assert_eq!(status, 401);
}

#[tokio::test]
async fn roles_are_checked_by_the_host_and_take_effect_on_the_next_request() {
    let server = server_with(&["shop"]).await;
    let tokens = sign_up(&server, "shop", "ada@example.com").await;
    let id = tokens["user"]["id"].as_str().unwrap().to_string();
    let (status, body) = call(
        &server,
        Method::GET,
        "/shop/staff",
        Some(access(&tokens)),
        None,
    )
    .await;
    assert_eq!((status, error_code(&body)), (403, "missing_role"));
    let (status, _) = call(
        &server,
        Method::POST,
        "/shop/admin/users",
        Some(access(&tokens)),
        Some(json!({"email": "new@example.com", "password": "long enough pw"})),
    )
    .await;
    assert_eq!(status, 403);

    // Roles given through the admin API apply to the same access token.
    let response = server
        .admin(
            Method::PUT,
            &format!("/admin/v1/apps/shop/users/{id}/roles"),
        )
        .json(&json!({"roles": ["staff", "admin"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let (status, body) = call(
        &server,
        Method::GET,
        "/shop/staff",
        Some(access(&tokens)),
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["user"]["roles"], json!(["admin", "staff"]));

    // A function with the admin role creates a user through kiln:platform/auth.
    let (status, created) = call(
        &server,
        Method::POST,
        "/shop/admin/users",
        Some(access(&tokens)),
        Some(json!({"email": "New@example.com", "password": "long enough pw"})),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["email"], "new@example.com");
    assert_eq!(created["data"]["created_by"], "function");
    let (status, body) = call(
        &server,
        Method::POST,
        "/shop/admin/users",
        Some(access(&tokens)),
        Some(json!({"email": "new@example.com", "password": "long enough pw"})),
    )
    .await;
    assert_eq!((status, error_code(&body)), (409, "conflict"));
    let (status, _) = call(
        &server,
        Method::POST,
        "/shop/_kiln/auth/signin",
        None,
        Some(json!({"email": "new@example.com", "password": "long enough pw"})),
    )
    .await;
    assert_eq!(status, 200);

    // The admin API lists and searches, shows sessions, and revokes.
    let (status, listed) = json_of(
        server
            .admin(Method::GET, "/admin/v1/apps/shop/users?search=NEW%40")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(listed["users"].as_array().unwrap().len(), 1);
    let (_, sessions) = json_of(
        server
            .admin(
                Method::GET,
                &format!("/admin/v1/apps/shop/users/{id}/sessions"),
            )
            .send()
            .await
            .unwrap(),
    )
    .await;
    let session = sessions["sessions"][0]["id"].as_str().unwrap().to_string();
    let response = server
        .admin(
            Method::DELETE,
            &format!("/admin/v1/apps/shop/users/{id}/sessions/{session}"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(me(&server, "shop", access(&tokens)).await.0, 401);
}

#[tokio::test]
async fn a_disabled_user_is_refused_on_the_next_request_on_every_node() {
    let data = tempfile::tempdir().unwrap();
    let first = Server::start_in(data.path(), Some(ADMIN_KEY), true);
    first
        .deploy_ok("shop", MANIFEST, &[("accounts", &examples().accounts)])
        .await;
    // The second node reads the same deployments and the same store.
    let second = Server::start_in(data.path(), Some(ADMIN_KEY), true);
    disabling_reaches_every_node(&first, &second, "shop").await;
}

#[tokio::test]
async fn a_disabled_user_is_refused_on_the_next_request_on_nodes_sharing_mongodb() {
    let Ok(uri) = std::env::var("KILN_TEST_MONGODB_URI") else {
        eprintln!("KILN_TEST_MONGODB_URI is not set: skipping the MongoDB run");
        return;
    };
    // The app name is unique because the MongoDB server outlives the run.
    let app = format!("auth{}", std::process::id());
    let first = Server::start_with_env(&[("KILN_MONGODB_URI", &uri)]);
    first
        .deploy_ok(&app, MANIFEST, &[("accounts", &examples().accounts)])
        .await;
    let second = Server::start_with_env(&[("KILN_MONGODB_URI", &uri)]);
    // Without a shared bucket each node keeps components on its own disk.
    second
        .upload(std::fs::read(&examples().accounts).unwrap())
        .await;
    disabling_reaches_every_node(&first, &second, &app).await;
    // Refresh-token reuse is caught through the shared store too.
    let tokens = sign_up(&first, &app, "reuse@example.com").await;
    let path = format!("/{app}/_kiln/auth/refresh");
    let body = json!({"refresh_token": refresh(&tokens)});
    let (status, rotated) = call(&second, Method::POST, &path, None, Some(body.clone())).await;
    assert_eq!(status, 200, "{rotated}");
    assert_eq!(
        call(&first, Method::POST, &path, None, Some(body)).await.0,
        401
    );
    assert_eq!(me(&second, &app, access(&rotated)).await.0, 401);
}

/// Signs a user in through `first`, disables them from a function on
/// `second`, and checks both nodes refuse the still-unexpired token.
async fn disabling_reaches_every_node(first: &Server, second: &Server, app: &str) {
    let tokens = sign_up(first, app, "ada@example.com").await;
    let admin = sign_up(first, app, "root@example.com").await;
    let admin_id = admin["user"]["id"].as_str().unwrap();
    let response = first
        .admin(
            Method::PUT,
            &format!("/admin/v1/apps/{app}/users/{admin_id}/roles"),
        )
        .json(&json!({"roles": ["admin"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    // Wait for the second node to load the deployment.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while me(second, app, access(&tokens)).await.0 != 200 {
        assert!(
            std::time::Instant::now() < deadline,
            "the second node never served the app"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert_eq!(me(first, app, access(&tokens)).await.0, 200);
    let id = tokens["user"]["id"].as_str().unwrap();
    let (status, body) = call(
        second,
        Method::POST,
        &format!("/{app}/admin/users/{id}/disable"),
        Some(access(&admin)),
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["disabled"], true);
    for node in [first, second] {
        let (status, body) = me(node, app, access(&tokens)).await;
        assert_eq!((status, error_code(&body)), (401, "invalid_token"));
    }
    let signin = json!({"email": "ada@example.com", "password": "correct horse battery"});
    let path = format!("/{app}/_kiln/auth/signin");
    let (status, body) = call(first, Method::POST, &path, None, Some(signin.clone())).await;
    assert_eq!((status, error_code(&body)), (403, "user_disabled"));
    // Enabled again through the admin API, the user signs in again.
    let response = first
        .admin(
            Method::POST,
            &format!("/admin/v1/apps/{app}/users/{id}/enable"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        call(second, Method::POST, &path, None, Some(signin))
            .await
            .0,
        200
    );
}

/// The server's embedded store, opened beside it the way the server opens it.
fn store(data_dir: &Path) -> kiln::store::Documents {
    let store = kiln::store::sqlite::SqliteStore::open(
        &data_dir.join("db"),
        std::time::Duration::from_secs(5),
    )
    .unwrap();
    kiln::store::Documents::new(std::sync::Arc::new(store), Default::default())
}

/// The app's current signing key, read from the server's store.
async fn signing_key(data_dir: &Path, app: &str) -> (String, EncodingKey) {
    let documents = store(data_dir);
    let keys = kiln::store::platform::signing_keys::of_app(&documents, app)
        .await
        .unwrap();
    let key = keys
        .iter()
        .rev()
        .find(|k| k.retired_ms.is_none())
        .expect("a current key");
    let der = STANDARD.decode(&key.private_key).unwrap();
    (key.id.clone(), EncodingKey::from_ed_der(&der))
}

fn forge(kid: &str, key: &EncodingKey, claims: Value) -> String {
    let header = Header {
        kid: Some(kid.to_string()),
        ..Header::new(Algorithm::EdDSA)
    };
    jsonwebtoken::encode(&header, &claims, key).unwrap()
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[tokio::test]
async fn forged_expired_and_foreign_tokens_are_refused_and_logged() {
    let server = server_with(&["shop", "other"]).await;
    let tokens = sign_up(&server, "shop", "ada@example.com").await;
    let foreign = sign_up(&server, "other", "ada@example.com").await;
    let token = access(&tokens);
    let (sub, sid) = (
        tokens["user"]["id"].as_str().unwrap(),
        tokens["session_id"].as_str().unwrap(),
    );
    let (kid, key) = signing_key(&server.data_dir, "shop").await;
    let claims = |changes: Value| {
        let mut claims = json!({"iss": "kiln:shop", "aud": "shop", "sub": sub, "sid": sid,
            "iat": now(), "nbf": now(), "exp": now() + 600});
        for (k, v) in changes.as_object().unwrap() {
            claims[k] = v.clone();
        }
        claims
    };
    // The forging works: a well-made token with the app's key is accepted.
    assert_eq!(
        me(&server, "shop", &forge(&kid, &key, claims(json!({}))))
            .await
            .0,
        200
    );

    let parts: Vec<&str> = token.split('.').collect();
    let b64 = |v: Value| URL_SAFE_NO_PAD.encode(v.to_string());
    let (_, jwks) = call(&server, Method::GET, "/shop/_kiln/auth/jwks", None, None).await;
    assert_eq!(jwks["keys"][0]["kty"], "OKP");
    assert_eq!(jwks["keys"][0]["kid"], kid.as_str());
    let public = jwks["keys"][0]["x"].as_str().unwrap().to_string();
    let hs256 = jsonwebtoken::encode(
        &Header {
            kid: Some(kid.clone()),
            ..Header::new(Algorithm::HS256)
        },
        &claims(json!({})),
        &EncodingKey::from_secret(public.as_bytes()).unwrap(),
    )
    .unwrap();
    let attacks: Vec<(&str, String)> = vec![
        (
            "alg none",
            format!("{}.{}.", b64(json!({"alg": "none", "kid": kid})), parts[1]),
        ),
        ("HS256 keyed with the public key", hs256),
        ("unknown kid", forge("not-a-key", &key, claims(json!({})))),
        (
            "expired",
            forge(
                &kid,
                &key,
                claims(json!({"exp": now() - 120, "iat": now() - 900, "nbf": now() - 900})),
            ),
        ),
        (
            "nbf in the future",
            forge(&kid, &key, claims(json!({"nbf": now() + 600}))),
        ),
        (
            "wrong iss",
            forge(&kid, &key, claims(json!({"iss": "kiln:other"}))),
        ),
        (
            "wrong aud",
            forge(&kid, &key, claims(json!({"aud": "other"}))),
        ),
        (
            "another user's session",
            forge(&kid, &key, claims(json!({"sub": "someone-else"}))),
        ),
        (
            "tampered payload",
            format!(
                "{}.{}.{}",
                parts[0],
                b64(claims(json!({"sub": "admin"}))),
                parts[2]
            ),
        ),
        ("another app's token", access(&foreign).to_string()),
        (
            "over 8 KiB",
            format!("{}.{}.{}", parts[0], "A".repeat(9000), parts[2]),
        ),
        ("malformed base64", "!!!.???.***".to_string()),
        (
            "malformed JSON",
            format!(
                "{}.{}.{}",
                URL_SAFE_NO_PAD.encode("{not json"),
                parts[1],
                parts[2]
            ),
        ),
    ];
    for (name, forged) in &attacks {
        // A public route lets the request through, as anonymous.
        let (status, whoami) = call(&server, Method::GET, "/shop/whoami", Some(forged), None).await;
        assert_eq!((status, &whoami), (200, &Value::Null), "{name}");
        let response = server
            .get("/shop/me")
            .bearer_auth(forged)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 401, "{name}");
        assert!(
            response.headers()["www-authenticate"]
                .to_str()
                .unwrap()
                .contains("invalid_token"),
            "{name}"
        );
        let (_, body) = json_of(response).await;
        assert_eq!(error_code(&body), "invalid_token", "{name}");
    }
    let refusals = server.log().matches("access token refused").count();
    assert!(
        refusals >= attacks.len(),
        "{refusals} refusals logged for {} attacks",
        attacks.len()
    );
    // The real tokens still work, on both apps.
    assert_eq!(me(&server, "shop", token).await.0, 200);
    assert_eq!(me(&server, "other", access(&foreign)).await.0, 200);
}

#[tokio::test]
async fn a_rotated_key_keeps_verifying_its_tokens_and_signs_new_ones() {
    let server = server_with(&["shop"]).await;
    let before = sign_up(&server, "shop", "ada@example.com").await;
    let response = server
        .admin(Method::POST, "/admin/v1/apps/shop/auth/keys/rotate")
        .send()
        .await
        .unwrap();
    let (status, rotated) = json_of(response).await;
    assert_eq!(status, 200, "{rotated}");
    let (_, jwks) = call(&server, Method::GET, "/shop/_kiln/auth/jwks", None, None).await;
    let kids: Vec<&str> = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap())
        .collect();
    assert_eq!(kids.len(), 2);
    assert!(kids.contains(&rotated["kid"].as_str().unwrap()));
    assert_eq!(me(&server, "shop", access(&before)).await.0, 200);
    let after = sign_up(&server, "shop", "bob@example.com").await;
    let header = jsonwebtoken::decode_header(access(&after)).unwrap();
    assert_eq!(header.kid.as_deref(), rotated["kid"].as_str());
    assert_eq!(me(&server, "shop", access(&after)).await.0, 200);
}

#[tokio::test]
async fn manifests_with_a_bad_policy_or_auth_section_are_refused() {
    let server = Server::start();
    for (manifest, field) in [
        (
            MANIFEST.replace("auth = \"user\"", "auth = \"users\""),
            "routes[0].auth",
        ),
        (
            MANIFEST.replace("memory_kib = 64", "memory_kib = 4194304"),
            "auth.argon2",
        ),
        (
            MANIFEST.replace(
                "anonymous = true",
                "anonymous = true\naccess_token_ttl = \"1s\"",
            ),
            "auth.access_token_ttl",
        ),
        (
            MANIFEST.replace("account_failures = 3", "account_failures = 0"),
            "auth.throttle",
        ),
    ] {
        let (status, body) = server
            .deploy("shop", &manifest, &[("accounts", &examples().accounts)])
            .await;
        assert_eq!(status, 400, "{body}");
        assert!(
            body["error"]["message"].as_str().unwrap().contains(field),
            "{field}: {body}"
        );
    }
}

/// The TOTP code for `secret` (base32) at `at` seconds, as an authenticator app computes it.
fn totp_code(secret: &str, at: u64) -> String {
    totp_rs::Builder::new()
        .with_secret(totp_rs::Secret::try_from_base32(secret).unwrap())
        .build()
        .unwrap()
        .generate(at)
        .to_string()
}

#[tokio::test]
async fn totp_is_required_at_sign_in_once_enrolled_and_codes_work_once() {
    let server = server_with(&["shop"]).await;
    let tokens = sign_up(&server, "shop", "ada@example.com").await;
    let before = call(
        &server,
        Method::POST,
        "/shop/_kiln/auth/signin",
        None,
        Some(json!({"email": "ada@example.com", "password": "correct horse battery"})),
    )
    .await
    .1;
    let (status, body) = call(
        &server,
        Method::GET,
        "/shop/secure",
        Some(access(&tokens)),
        None,
    )
    .await;
    assert_eq!((status, error_code(&body)), (403, "second_factor_required"));

    let (status, enrolment) = call(
        &server,
        Method::POST,
        "/shop/_kiln/auth/mfa/totp",
        Some(access(&tokens)),
        None,
    )
    .await;
    assert_eq!(status, 200, "{enrolment}");
    let secret = enrolment["secret"].as_str().unwrap().to_string();
    assert!(
        enrolment["otpauth_url"]
            .as_str()
            .unwrap()
            .starts_with("otpauth://totp/shop:ada%40example.com?"),
        "{enrolment}"
    );
    let (status, body) = call(
        &server,
        Method::POST,
        "/shop/_kiln/auth/mfa/totp/confirm",
        Some(access(&tokens)),
        Some(json!({"code": "000000"})),
    )
    .await;
    assert_eq!((status, error_code(&body)), (400, "invalid_input"));
    let (status, confirmed) = call(
        &server,
        Method::POST,
        "/shop/_kiln/auth/mfa/totp/confirm",
        Some(access(&tokens)),
        Some(json!({"code": totp_code(&secret, now())})),
    )
    .await;
    assert_eq!(status, 200, "{confirmed}");
    let recovery: Vec<String> = confirmed["recovery_codes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_string())
        .collect();
    assert_eq!(recovery.len(), 10);
    // The enrolling session passed; a session from before did not.
    assert_eq!(
        call(
            &server,
            Method::GET,
            "/shop/secure",
            Some(access(&tokens)),
            None
        )
        .await
        .0,
        200
    );
    assert_eq!(
        call(
            &server,
            Method::GET,
            "/shop/secure",
            Some(access(&before)),
            None
        )
        .await
        .0,
        403
    );

    // Signing in now yields a challenge, not tokens.
    let sign_in = || {
        call(
            &server,
            Method::POST,
            "/shop/_kiln/auth/signin",
            None,
            Some(json!({"email": "ada@example.com", "password": "correct horse battery"})),
        )
    };
    let (status, step) = sign_in().await;
    assert_eq!(status, 200);
    assert_eq!(step["mfa_required"], true);
    assert!(step.get("access_token").is_none(), "{step}");
    let challenge = step["challenge"].as_str().unwrap().to_string();
    let verify = |body: Value| {
        call(
            &server,
            Method::POST,
            "/shop/_kiln/auth/mfa/verify",
            None,
            Some(body),
        )
    };
    let (status, body) = verify(json!({"challenge": challenge, "code": "123456"})).await;
    assert_eq!((status, error_code(&body)), (403, "not_allowed"));
    // The next step's code (the confirm used this one), within the skew.
    let code = totp_code(&secret, now() + 30);
    let (status, full) = verify(json!({"challenge": challenge, "code": code})).await;
    assert_eq!(status, 200, "{full}");
    assert_eq!(
        call(
            &server,
            Method::GET,
            "/shop/secure",
            Some(access(&full)),
            None
        )
        .await
        .0,
        200
    );
    let (_, me_body) = me(&server, "shop", access(&full)).await;
    assert_eq!(me_body["mfa"], true);
    // A challenge works once; a code works once.
    let (status, _) = verify(json!({"challenge": challenge, "code": code})).await;
    assert_eq!(status, 403);
    let (_, step) = sign_in().await;
    let challenge = step["challenge"].as_str().unwrap().to_string();
    let (status, _) = verify(json!({"challenge": challenge, "code": code})).await;
    assert_eq!(status, 403, "a replayed code");
    // A recovery code works once, in any case.
    let (status, _) =
        verify(json!({"challenge": challenge, "recovery_code": recovery[0].to_uppercase()})).await;
    assert_eq!(status, 200);
    let (_, step) = sign_in().await;
    let challenge = step["challenge"].as_str().unwrap().to_string();
    let (status, _) = verify(json!({"challenge": challenge, "recovery_code": recovery[0]})).await;
    assert_eq!(status, 403, "a used recovery code");
    // Refreshing keeps the session's second factor.
    let (_, refreshed) = call(
        &server,
        Method::POST,
        "/shop/_kiln/auth/refresh",
        None,
        Some(json!({"refresh_token": refresh(&full)})),
    )
    .await;
    assert_eq!(
        call(
            &server,
            Method::GET,
            "/shop/secure",
            Some(access(&refreshed)),
            None
        )
        .await
        .0,
        200
    );
    // Removing it needs a code; then sign-in gives tokens again.
    let (status, _) = call(
        &server,
        Method::DELETE,
        "/shop/_kiln/auth/mfa/totp",
        Some(access(&refreshed)),
        Some(json!({"code": recovery[1]})),
    )
    .await;
    assert_eq!(status, 200);
    let (status, tokens) = sign_in().await;
    assert_eq!(status, 200);
    assert!(tokens["access_token"].is_string(), "{tokens}");
    assert_eq!(tokens["user"]["mfa_enabled"], false);
}

/// The messages of `kind` to `to` that the app's mail function filed, once
/// there are `count` of them.
async fn mail_to(server: &Server, app: &str, kind: &str, to: &str, count: usize) -> Vec<Value> {
    let documents = store(&server.data_dir);
    let outbox = kiln::store::app_namespace(app, "outbox").unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let page = documents
            .find(outbox, &json!({"kind": kind, "to": to}), Default::default())
            .await
            .unwrap_or_else(|_| kiln::store::FindPage {
                documents: vec![],
                cursor: None,
            });
        if page.documents.len() >= count {
            return page.documents;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no {kind} mail to {to} arrived: {}",
            server.log()
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn email_verification_and_password_reset_go_through_the_mail_function_once() {
    let server = server_with(&["shop"]).await;
    let tokens = sign_up(&server, "shop", "ada@example.com").await;
    assert_eq!(tokens["user"]["email_verified"], false);
    let mail = mail_to(&server, "shop", "verify_email", "ada@example.com", 1).await;
    let token = mail[0]["token"].as_str().unwrap().to_string();
    assert_eq!(
        mail[0]["link"],
        format!("https://shop.example/auth?kind=verify_email&token={token}")
    );
    let (status, body) = call(
        &server,
        Method::POST,
        "/shop/_kiln/auth/verify",
        None,
        Some(json!({"token": token})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["user"]["email_verified"], true);
    let (status, body) = call(
        &server,
        Method::POST,
        "/shop/_kiln/auth/verify",
        None,
        Some(json!({"token": token})),
    )
    .await;
    assert_eq!((status, error_code(&body)), (400, "invalid_one_time_token"));

    // A reset answers the same for a known and an unknown email.
    let reset = |email: &'static str| {
        call(
            &server,
            Method::POST,
            "/shop/_kiln/auth/reset/send",
            None,
            Some(json!({"email": email})),
        )
    };
    let unknown = reset("nobody@example.com").await;
    let known = reset("ada@example.com").await;
    assert_eq!(known, unknown);
    assert_eq!(known.0, 202);
    let mail = mail_to(&server, "shop", "reset_password", "ada@example.com", 1).await;
    let token = mail[0]["token"].as_str().unwrap().to_string();
    let set_password = |token: String, password: &'static str| {
        call(
            &server,
            Method::POST,
            "/shop/_kiln/auth/reset",
            None,
            Some(json!({"token": token, "password": password})),
        )
    };
    let (status, body) = set_password(token.clone(), "short").await;
    assert_eq!((status, error_code(&body)), (400, "weak_password"));
    let (status, body) = set_password(format!("{token}x"), "a brand new password").await;
    assert_eq!((status, error_code(&body)), (400, "invalid_one_time_token"));
    let (status, _) = set_password(token.clone(), "a brand new password").await;
    assert_eq!(status, 200);
    // Every session ended; the new password signs in; the token is used up.
    assert_eq!(me(&server, "shop", access(&tokens)).await.0, 401);
    let (status, _) = call(
        &server,
        Method::POST,
        "/shop/_kiln/auth/signin",
        None,
        Some(json!({"email": "ada@example.com", "password": "a brand new password"})),
    )
    .await;
    assert_eq!(status, 200);
    let (status, body) = set_password(token, "another new password").await;
    assert_eq!((status, error_code(&body)), (400, "invalid_one_time_token"));
    let documents = store(&server.data_dir);
    let users = kiln::store::Namespace {
        database: kiln::store::PLATFORM_DATABASE,
        collection: "users",
    };
    let found = documents
        .find(
            users,
            &json!({"app": "shop", "email": "nobody@example.com"}),
            Default::default(),
        )
        .await
        .unwrap();
    assert!(
        found.documents.is_empty(),
        "a reset request creates no user"
    );

    // An expired token is refused.
    reset("ada@example.com").await;
    let mail = mail_to(&server, "shop", "reset_password", "ada@example.com", 2).await;
    let latest = mail.last().unwrap()["token"].as_str().unwrap().to_string();
    documents
        .update(
            users,
            &json!({"app": "shop", "email": "ada@example.com"}),
            &json!({"$set": {"password_reset.expires_ms": 1}}),
            false,
            false,
        )
        .await
        .unwrap();
    let (status, body) = set_password(latest, "yet another password").await;
    assert_eq!((status, error_code(&body)), (400, "invalid_one_time_token"));
}

#[tokio::test]
async fn a_mail_function_without_a_scheduled_handler_is_refused_at_deploy() {
    let server = Server::start();
    let manifest = MANIFEST.replace(
        "mail = { function = \"accounts\"",
        "mail = { function = \"hello\"",
    ) + "\n[functions.hello]\ncomponent = \"hello.wasm\"\n";
    let (status, body) = server
        .deploy(
            "shop",
            &manifest,
            &[
                ("accounts", &examples().accounts),
                ("hello", &examples().hello),
            ],
        )
        .await;
    assert_eq!(
        (status, error_code(&body)),
        (400, "missing_export"),
        "{body}"
    );
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("auth.mail"),
        "{body}"
    );
}

#[tokio::test]
async fn mail_goes_out_over_smtp_when_the_app_configures_a_server() {
    let sink = kiln_tests::smtp_sink::SmtpSink::start().await;
    let server = Server::start_with_env(&[("KILN_AUTH_INTERNAL_HOSTS", "localhost")]);
    let manifest = MANIFEST.replace(
        "mail = { function = \"accounts\", link = \"https://shop.example/auth?kind={kind}&token={token}\" }",
        &format!("mail = {{ smtp = {{ host = \"localhost\", port = {}, tls = \"none\", from = \"Shop <no-reply@shop.example>\" }}, link = \"https://shop.example/auth?token={{token}}\" }}", sink.port),
    );
    assert_ne!(manifest, MANIFEST);
    server
        .deploy_ok("shop", &manifest, &[("accounts", &examples().accounts)])
        .await;
    sign_up(&server, "shop", "ada@example.com").await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let message = loop {
        if let Some(m) = sink.messages().into_iter().next() {
            break m;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no mail reached the sink: {}",
            server.log()
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert!(message.contains("To: ada@example.com"), "{message}");
    // The body is quoted-printable: soft line breaks and `=3D` for `=`.
    let message = message.replace("=\n", "").replace("=3D", "=");
    assert!(
        message.contains("Subject: Verify your email for shop"),
        "{message}"
    );
    let token = message
        .split("https://shop.example/auth?token=")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .expect("the link is in the body")
        .to_string();
    let (status, body) = call(
        &server,
        Method::POST,
        "/shop/_kiln/auth/verify",
        None,
        Some(json!({"token": token})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["user"]["email_verified"], true);

    // Without the operator allowing it, an app's SMTP server on an internal
    // address is not contacted.
    let guarded = Server::start();
    guarded
        .deploy_ok("shop", &manifest, &[("accounts", &examples().accounts)])
        .await;
    sign_up(&guarded, "shop", "bob@example.com").await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !guarded.log().contains("mail not sent") {
        assert!(std::time::Instant::now() < deadline, "{}", guarded.log());
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(sink.messages().len(), 1);
}

#[tokio::test]
async fn one_apps_sign_in_flood_does_not_hold_back_another_apps_sign_ins() {
    // The default argon2 cost (19 MiB, 2 passes): hashing is the work an
    // attacker would flood.
    let manifest = MANIFEST.replace(
        "argon2 = { memory_kib = 64, iterations = 1, parallelism = 1 }\n",
        "",
    );
    assert_ne!(manifest, MANIFEST);
    let server = Server::start();
    for app in ["flood", "calm"] {
        server
            .deploy_ok(app, &manifest, &[("accounts", &examples().accounts)])
            .await;
        sign_up(&server, app, "ada@example.com").await;
    }
    let sign_in = |app: &'static str| {
        let request = server
            .post(&format!("/{app}/_kiln/auth/signin"))
            .json(&json!({"email": "ada@example.com", "password": "correct horse battery"}))
            .send();
        async move { request.await.unwrap().status().as_u16() }
    };
    // 128 sign-ins of one app at once: its hashes run one at a time.
    let flood: Vec<_> = (0..128).map(|_| tokio::spawn(sign_in("flood"))).collect();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    for _ in 0..3 {
        let started = std::time::Instant::now();
        assert_eq!(sign_in("calm").await, 200);
        let took = started.elapsed();
        assert!(
            took < std::time::Duration::from_millis(1500),
            "the other app's sign-in waited {took:?} behind the flood"
        );
    }
    // The flood is served in its app's own turn, or told it is busy; never lost.
    for status in futures::future::join_all(flood).await {
        assert!(matches!(status.unwrap(), 200 | 503));
    }
}
