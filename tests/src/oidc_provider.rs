//! A small OpenID Connect provider on 127.0.0.1 for the auth tests: a
//! discovery document, a JWKS of ES256 keys (rotatable), id_tokens signed
//! with them, and a token endpoint that checks the code, the PKCE verifier,
//! the redirect URI and the client secret. HTTP/1.1, one request per
//! connection.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

pub const CLIENT_ID: &str = "kiln-web";
pub const CLIENT_SECRET: &str = "s3cret";

struct Key {
    kid: String,
    encoding: EncodingKey,
    jwk: Value,
}

fn new_key() -> Key {
    let rng = ring::rand::SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
    let pair =
        EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng).unwrap();
    let point = pair.public_key().as_ref(); // 0x04 || x || y
    let kid = hex::encode(rand_bytes());
    Key {
        jwk: json!({
            "kty": "EC", "crv": "P-256", "alg": "ES256", "use": "sig", "kid": kid,
            "x": URL_SAFE_NO_PAD.encode(&point[1..33]),
            "y": URL_SAFE_NO_PAD.encode(&point[33..65]),
        }),
        kid,
        encoding: EncodingKey::from_ec_der(pkcs8.as_ref()),
    }
}

fn rand_bytes() -> [u8; 8] {
    let mut bytes = [0u8; 8];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes).unwrap();
    bytes
}

/// A user at the provider, as an id_token describes them.
#[derive(Clone)]
pub struct Account {
    pub subject: String,
    pub email: Option<String>,
    pub email_verified: bool,
}

struct PendingCode {
    account: Account,
    nonce: String,
    challenge: String,
    redirect_uri: String,
}

struct State {
    keys: Vec<Key>,
    codes: HashMap<String, PendingCode>,
    jwks_fetches: usize,
}

pub struct Provider {
    pub issuer: String,
    state: Arc<Mutex<State>>,
}

impl Provider {
    pub async fn start() -> Provider {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let issuer = format!("http://{}", listener.local_addr().unwrap());
        let state = Arc::new(Mutex::new(State {
            keys: vec![new_key()],
            codes: HashMap::new(),
            jwks_fetches: 0,
        }));
        let (served, base) = (state.clone(), issuer.clone());
        tokio::spawn(async move {
            loop {
                let Ok((mut stream, _)) = listener.accept().await else {
                    continue;
                };
                let (state, base) = (served.clone(), base.clone());
                tokio::spawn(async move {
                    let Some((method, path, body)) = read_request(&mut stream).await else {
                        return;
                    };
                    let (status, answer) = respond(&state, &base, &method, &path, &body);
                    let text = answer.to_string();
                    let head = format!(
                        "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                        text.len()
                    );
                    let _ = stream.write_all(head.as_bytes()).await;
                    let _ = stream.write_all(text.as_bytes()).await;
                });
            }
        });
        Provider { issuer, state }
    }

    /// An id_token for `account` with these claims changed or added.
    pub fn id_token(&self, account: &Account, nonce: &str, changes: Value) -> String {
        let state = self.state.lock().unwrap();
        sign(
            state.keys.last().unwrap(),
            &self.issuer,
            account,
            nonce,
            changes,
        )
    }

    /// An id_token signed by a key the JWKS does not hold, under the current kid.
    pub fn forged_id_token(&self, account: &Account, nonce: &str) -> String {
        let kid = self.state.lock().unwrap().keys.last().unwrap().kid.clone();
        let mut impostor = new_key();
        impostor.kid = kid;
        sign(&impostor, &self.issuer, account, nonce, json!({}))
    }

    /// A new current key; the JWKS holds it and the old ones.
    pub fn rotate(&self) {
        self.state.lock().unwrap().keys.push(new_key());
    }

    pub fn jwks_fetches(&self) -> usize {
        self.state.lock().unwrap().jwks_fetches
    }

    /// The browser's stop at the provider: the user signs in as `account`
    /// at `authorize_url` (Kiln's redirect); returns the callback URL the
    /// provider sends the browser back to.
    pub fn authorize(&self, authorize_url: &str, account: &Account) -> String {
        let query = authorize_url.split_once('?').unwrap().1;
        let params: HashMap<String, String> = form_urlencoded::parse(query.as_bytes())
            .into_owned()
            .collect();
        assert_eq!(params["response_type"], "code");
        assert_eq!(params["client_id"], CLIENT_ID);
        assert_eq!(params["code_challenge_method"], "S256");
        let code = hex::encode(rand_bytes());
        self.state.lock().unwrap().codes.insert(
            code.clone(),
            PendingCode {
                account: account.clone(),
                nonce: params["nonce"].clone(),
                challenge: params["code_challenge"].clone(),
                redirect_uri: params["redirect_uri"].clone(),
            },
        );
        let state: String = form_urlencoded::byte_serialize(params["state"].as_bytes()).collect();
        format!("{}?code={code}&state={state}", params["redirect_uri"])
    }
}

fn sign(key: &Key, issuer: &str, account: &Account, nonce: &str, changes: Value) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let mut claims = json!({
        "iss": issuer, "aud": CLIENT_ID, "sub": account.subject, "iat": now, "exp": now + 600,
        "nonce": nonce, "email": account.email, "email_verified": account.email_verified,
    });
    for (k, v) in changes.as_object().unwrap() {
        claims[k] = v.clone();
    }
    let header = Header {
        kid: Some(key.kid.clone()),
        ..Header::new(Algorithm::ES256)
    };
    jsonwebtoken::encode(&header, &claims, &key.encoding).unwrap()
}

fn respond(
    state: &Mutex<State>,
    issuer: &str,
    method: &str,
    path: &str,
    body: &str,
) -> (u16, Value) {
    let mut state = state.lock().unwrap();
    match (method, path) {
        ("GET", "/.well-known/openid-configuration") => (
            200,
            json!({
                "issuer": issuer,
                "authorization_endpoint": format!("{issuer}/authorize"),
                "token_endpoint": format!("{issuer}/token"),
                "jwks_uri": format!("{issuer}/jwks"),
                "id_token_signing_alg_values_supported": ["ES256"],
            }),
        ),
        ("GET", "/jwks") => {
            state.jwks_fetches += 1;
            (
                200,
                json!({ "keys": state.keys.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>() }),
            )
        }
        ("POST", "/token") => {
            let form: HashMap<String, String> = form_urlencoded::parse(body.as_bytes())
                .into_owned()
                .collect();
            let Some(pending) = form.get("code").and_then(|c| state.codes.remove(c)) else {
                return (400, json!({"error": "invalid_grant"}));
            };
            let verifier = form.get("code_verifier").cloned().unwrap_or_default();
            let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
            let good = challenge == pending.challenge
                && form.get("grant_type").map(String::as_str) == Some("authorization_code")
                && form.get("client_id").map(String::as_str) == Some(CLIENT_ID)
                && form.get("client_secret").map(String::as_str) == Some(CLIENT_SECRET)
                && form.get("redirect_uri") == Some(&pending.redirect_uri);
            if !good {
                return (
                    400,
                    json!({"error": "invalid_grant", "error_description": "PKCE, client or redirect mismatch"}),
                );
            }
            let id_token = sign(
                state.keys.last().unwrap(),
                issuer,
                &pending.account,
                &pending.nonce,
                json!({}),
            );
            (
                200,
                json!({"id_token": id_token, "access_token": "opaque", "token_type": "Bearer"}),
            )
        }
        _ => (404, json!({"error": "not_found"})),
    }
}

/// The method, path and body of one request (with `content-length`).
async fn read_request(stream: &mut tokio::net::TcpStream) -> Option<(String, String, String)> {
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buffer.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buffer).to_string();
        let Some(end) = text.find("\r\n\r\n") else {
            continue;
        };
        let head = &text[..end];
        let length = head
            .lines()
            .find_map(|l| {
                l.to_ascii_lowercase()
                    .strip_prefix("content-length:")
                    .map(|v| v.trim().parse::<usize>().unwrap_or(0))
            })
            .unwrap_or(0);
        if buffer.len() < end + 4 + length {
            continue;
        }
        let mut first = head.lines().next()?.split(' ');
        let (method, path) = (first.next()?.to_string(), first.next()?.to_string());
        let body = String::from_utf8_lossy(&buffer[end + 4..end + 4 + length]).to_string();
        return Some((method, path, body));
    }
}
