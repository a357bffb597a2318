//! Social login against a local OpenID Connect provider the test starts:
//! native sign-in with an id_token, the code flow with PKCE and state, the
//! linking rule for emails, key rotation at the provider, forged tokens,
//! and the guard against providers on internal addresses.

use kiln_tests::oidc_provider::{Account, CLIENT_ID, CLIENT_SECRET, Provider};
use kiln_tests::{Server, call, error_code, examples, json_of};
use reqwest::Method;
use serde_json::{Value, json};

fn manifest(issuer: &str) -> String {
    format!(
        r#"
[variables]
OIDC_SECRET = "{CLIENT_SECRET}"

[auth]
argon2 = {{ memory_kib = 64, iterations = 1, parallelism = 1 }}

[auth.providers.local]
issuer = "{issuer}"
client_ids = ["{CLIENT_ID}", "ios-app"]
client_secret_variable = "OIDC_SECRET"
redirect_uri = "http://127.0.0.1/shop/_kiln/auth/oidc/local/callback"
redirect_urls = ["https://shop.example/signed-in"]

[functions.accounts]
component = "accounts.wasm"

[[routes]]
path = "/me"
function = "accounts"
auth = "user"
"#
    )
}

async fn setup() -> (Server, Provider) {
    let provider = Provider::start().await;
    let server = Server::start_with_env(&[("KILN_AUTH_INTERNAL_HOSTS", "127.0.0.1")]);
    server
        .deploy_ok(
            "shop",
            &manifest(&provider.issuer),
            &[("accounts", &examples().accounts)],
        )
        .await;
    (server, provider)
}

async fn with_id_token(
    server: &Server,
    id_token: &str,
    nonce: &str,
    bearer: Option<&str>,
) -> (u16, Value) {
    call(
        server,
        Method::POST,
        "/shop/_kiln/auth/oidc/local/token",
        bearer,
        Some(json!({"id_token": id_token, "nonce": nonce})),
    )
    .await
}

fn account(subject: &str, email: &str, verified: bool) -> Account {
    Account {
        subject: subject.into(),
        email: Some(email.into()),
        email_verified: verified,
    }
}

#[tokio::test]
async fn a_native_id_token_signs_in_and_forged_ones_are_refused() {
    let (server, provider) = setup().await;
    let ada = account("google-123", "Ada@Example.com", true);
    let (status, first) = with_id_token(
        &server,
        &provider.id_token(&ada, "n-1", json!({})),
        "n-1",
        None,
    )
    .await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(first["user"]["email"], "ada@example.com");
    assert_eq!(first["user"]["email_verified"], true);
    let (status, me) = call(
        &server,
        Method::GET,
        "/shop/me",
        first["access_token"].as_str(),
        None,
    )
    .await;
    assert_eq!((status, &me["user"]["id"]), (200, &first["user"]["id"]));
    // The same subject signs in as the same user; a second client id is an accepted audience.
    let (_, again) = with_id_token(
        &server,
        &provider.id_token(&ada, "n-2", json!({"aud": "ios-app"})),
        "n-2",
        None,
    )
    .await;
    assert_eq!(again["user"]["id"], first["user"]["id"]);

    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let refused = [
        (
            "wrong nonce",
            provider.id_token(&ada, "n-3", json!({})),
            "other",
        ),
        (
            "wrong audience",
            provider.id_token(&ada, "n-4", json!({"aud": "someone-else"})),
            "n-4",
        ),
        (
            "wrong issuer",
            provider.id_token(&ada, "n-5", json!({"iss": "https://evil.example"})),
            "n-5",
        ),
        (
            "expired",
            provider.id_token(&ada, "n-6", json!({"exp": now - 600, "iat": now - 1200})),
            "n-6",
        ),
        (
            "signed by another key",
            provider.forged_id_token(&ada, "n-7"),
            "n-7",
        ),
        ("not a JWT", "not.a.jwt".to_string(), "n-8"),
    ];
    for (what, token, nonce) in refused {
        let (status, body) = with_id_token(&server, &token, nonce, None).await;
        assert_eq!(
            (status, error_code(&body)),
            (401, "invalid_id_token"),
            "{what}: {body}"
        );
    }
    assert!(server.log().contains("provider sign-in refused"));

    // The provider rotates its key: the unknown kid makes Kiln reread the
    // JWKS once (at most every 2 s, so junk kids cannot hammer the provider).
    let fetches = provider.jwks_fetches();
    provider.rotate();
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    let (status, _) = with_id_token(
        &server,
        &provider.id_token(&ada, "n-9", json!({})),
        "n-9",
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(provider.jwks_fetches(), fetches + 1);
}

#[tokio::test]
async fn an_email_links_to_an_existing_account_only_when_the_provider_verified_it() {
    let (server, provider) = setup().await;
    let (status, password_user) = call(
        &server,
        Method::POST,
        "/shop/_kiln/auth/signup",
        None,
        Some(json!({"email": "ada@example.com", "password": "correct horse battery"})),
    )
    .await;
    assert_eq!(status, 201);
    // Unverified at the provider: no silent takeover.
    let unverified = account("other-1", "ada@example.com", false);
    let (status, body) = with_id_token(
        &server,
        &provider.id_token(&unverified, "n", json!({})),
        "n",
        None,
    )
    .await;
    assert_eq!(
        (status, error_code(&body)),
        (409, "provider_email_unverified"),
        "{body}"
    );
    // Verified: linked to the same user, who keeps their password too.
    let verified = account("other-2", "ada@example.com", true);
    let (status, body) = with_id_token(
        &server,
        &provider.id_token(&verified, "n", json!({})),
        "n",
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["user"]["id"], password_user["user"]["id"]);
    // A signed-in user links another identity explicitly; it cannot then be linked elsewhere.
    let extra = account("other-3", "ada-alt@example.com", false);
    let token = password_user["access_token"].as_str();
    let (status, linked) = with_id_token(
        &server,
        &provider.id_token(&extra, "n", json!({})),
        "n",
        token,
    )
    .await;
    assert_eq!(status, 200, "{linked}");
    assert_eq!(linked["user"]["id"], password_user["user"]["id"]);
    let (_, bob) = call(
        &server,
        Method::POST,
        "/shop/_kiln/auth/signup",
        None,
        Some(json!({"email": "bob@example.com", "password": "correct horse battery"})),
    )
    .await;
    let (status, body) = with_id_token(
        &server,
        &provider.id_token(&extra, "n", json!({})),
        "n",
        bob["access_token"].as_str(),
    )
    .await;
    assert_eq!((status, error_code(&body)), (409, "identity_in_use"));
    // A new subject with an unverified email makes a user without that email.
    let stranger = account("other-4", "carol@example.com", false);
    let (status, body) = with_id_token(
        &server,
        &provider.id_token(&stranger, "n", json!({})),
        "n",
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["user"]["email"], Value::Null);
    assert_eq!(body["user"]["anonymous"], false);
}

#[tokio::test]
async fn the_code_flow_uses_pkce_and_a_single_use_state() {
    let (server, provider) = setup().await;
    let no_redirects = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let start = |to: &str| {
        let url = format!(
            "{}/shop/_kiln/auth/oidc/local/start?redirect_to={}",
            server.url,
            form_urlencoded::byte_serialize(to.as_bytes()).collect::<String>()
        );
        no_redirects.get(url).send()
    };
    let response = start("https://evil.example/steal").await.unwrap();
    assert_eq!(response.status(), 400, "an unlisted redirect_to");
    let response = start("https://shop.example/signed-in").await.unwrap();
    assert_eq!(response.status(), 302);
    let authorize = response.headers()["location"].to_str().unwrap().to_string();
    assert!(
        authorize.starts_with(&format!("{}/authorize?", provider.issuer)),
        "{authorize}"
    );
    assert!(authorize.contains("code_challenge="));
    // The user signs in at the provider, which sends the browser back with a code.
    let callback = provider.authorize(&authorize, &account("web-1", "dan@example.com", true));
    let callback_path = callback.strip_prefix("http://127.0.0.1").unwrap();
    let response = no_redirects
        .get(format!("{}{callback_path}", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 302);
    let landing = response.headers()["location"].to_str().unwrap().to_string();
    let fragment = landing
        .strip_prefix("https://shop.example/signed-in#")
        .expect("back at the app");
    let tokens: std::collections::HashMap<String, String> =
        form_urlencoded::parse(fragment.as_bytes())
            .into_owned()
            .collect();
    let (status, me) = call(
        &server,
        Method::GET,
        "/shop/me",
        Some(&tokens["access_token"]),
        None,
    )
    .await;
    assert_eq!(status, 200, "{me}");
    assert_eq!(me["user"]["email"], "dan@example.com");
    // The same callback again: the state is used up.
    let (status, body) = json_of(
        no_redirects
            .get(format!("{}{callback_path}", server.url))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((status, error_code(&body)), (401, "invalid_id_token"));
}

#[tokio::test]
async fn a_provider_on_an_internal_address_is_refused_unless_the_operator_allows_it() {
    let provider = Provider::start().await;
    let server = Server::start();
    server
        .deploy_ok(
            "shop",
            &manifest(&provider.issuer),
            &[("accounts", &examples().accounts)],
        )
        .await;
    let ada = account("x", "ada@example.com", true);
    let (status, body) =
        with_id_token(&server, &provider.id_token(&ada, "n", json!({})), "n", None).await;
    assert_eq!(
        (status, error_code(&body)),
        (502, "provider_unavailable"),
        "{body}"
    );
    assert_eq!(provider.jwks_fetches(), 0);
}
