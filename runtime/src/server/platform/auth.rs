//! The auth endpoints of an app, under `/_kiln/auth`.
//!
//! | method and path | body | does |
//! | --- | --- | --- |
//! | `POST /signup` | `{email, password, data?}` | creates a user, signs in (201) |
//! | `POST /signin` | `{email, password}` | signs in |
//! | `POST /anonymous` | `{data?}` | creates an anonymous user, signs in (201) |
//! | `POST /refresh` | `{refresh_token}` | rotates the refresh token, new tokens |
//! | `POST /signout` | `{everywhere?}` | ends this session, or all of the user's |
//! | `GET /user` | | the signed-in user |
//! | `PATCH /user` | `{data}` | replaces the profile data |
//! | `DELETE /user` | `{password?}` | deletes the account (password users confirm) |
//! | `POST /upgrade` | `{email, password}` | gives an anonymous user an email and password |
//! | `POST /password` | `{current_password, new_password}` | changes the password; other sessions end |
//! | `GET /sessions` | | the user's sessions |
//! | `DELETE /sessions/{id}` | | revokes one of them |
//! | `GET /jwks` | | the app's public keys (JWKS) |
//! | `POST /verify/send` | | mails the signed-in user a verification link (needs `auth.mail`) |
//! | `POST /verify` | `{token}` | marks the email verified (the token works once, for 24 h) |
//! | `POST /reset/send` | `{email}` | mails a reset link if the email is a user's (202 either way) |
//! | `POST /reset` | `{token, password}` | sets the password (once, within 1 h); every session ends |
//! | `POST /oidc/{provider}/token` | `{id_token, nonce}` | native sign-in with a provider's id_token (with a bearer token: links it) |
//! | `GET /oidc/{provider}/start?redirect_to=` | | the code flow: 302 to the provider |
//! | `GET /oidc/{provider}/callback?code=&state=` | | the provider's redirect: tokens (JSON, or in the fragment of `redirect_to`) |
//! | `POST /mfa/verify` | `{challenge, code \| recovery_code}` | completes a sign-in that needs the second factor |
//! | `POST /mfa/totp` | | starts TOTP enrolment: `{secret, otpauth_url}` |
//! | `POST /mfa/totp/confirm` | `{code}` | confirms it: `{recovery_codes}` (shown once) |
//! | `DELETE /mfa/totp` | `{code}` | removes it (from a session that passed it) |

use std::net::SocketAddr;

use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde::Deserialize;
use serde_json::{Value, json};

use super::Answer;
use crate::capabilities::auth::accounts::{session_json, user_json};
use crate::capabilities::auth::{AppAuth, Client, Identity};
use crate::server::json_body::read_json;
use crate::triggers::http::{ApiError, ErrorCode, ResponseBody, identify, json_value_response};

/// Largest body of an auth call.
const MAX_BODY_BYTES: usize = 64 * 1024;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Credentials {
    email: String,
    password: String,
    #[serde(default)]
    data: Option<Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Anonymous {
    #[serde(default)]
    data: Option<Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Refresh {
    refresh_token: String,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct SignOut {
    #[serde(default)]
    everywhere: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Profile {
    data: Value,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Confirm {
    #[serde(default)]
    password: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SecondFactor {
    challenge: String,
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    recovery_code: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OneTime {
    token: String,
    #[serde(default)]
    password: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Email {
    email: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct IdToken {
    id_token: String,
    nonce: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Code {
    code: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PasswordChange {
    current_password: String,
    new_password: String,
}

/// Handles `/_kiln/auth/<rest>`; `segments` are the parts after `auth`.
pub async fn handle(
    auth: &AppAuth,
    segments: &[&str],
    req: Request<Incoming>,
    peer: SocketAddr,
) -> Answer {
    let client = Client {
        address: peer.ip().to_string(),
        device: req
            .headers()
            .get(http::header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string(),
    };
    let (app, settings, accounts) = (&*auth.app, &*auth.settings, &auth.accounts);
    let method = req.method().clone();
    match (&method, segments) {
        (&Method::POST, ["signup"]) => {
            let body: Credentials = read_json(req, MAX_BODY_BYTES).await?;
            let tokens = accounts
                .sign_up(
                    app,
                    settings,
                    &body.email,
                    &body.password,
                    body.data,
                    &client,
                )
                .await?;
            tracing::info!(app, user = %tokens.user.id, "signed up");
            ok(StatusCode::CREATED, tokens.to_json())
        }
        (&Method::POST, ["signin"]) => {
            let body: Credentials = read_json(req, MAX_BODY_BYTES).await?;
            if body.data.is_some() {
                return Err(ApiError::new(
                    ErrorCode::InvalidBody,
                    "signin takes no `data`",
                ));
            }
            let tokens = accounts
                .sign_in(app, settings, &body.email, &body.password, &client)
                .await?;
            ok(StatusCode::OK, tokens.to_json())
        }
        (&Method::POST, ["anonymous"]) => {
            let body: Anonymous = read_json(req, MAX_BODY_BYTES).await?;
            let tokens = accounts
                .sign_in_anonymously(app, settings, body.data, &client)
                .await?;
            ok(StatusCode::CREATED, tokens.to_json())
        }
        (&Method::POST, ["mfa", "verify"]) => {
            let body: SecondFactor = read_json(req, MAX_BODY_BYTES).await?;
            let tokens = accounts
                .verify_second_factor(
                    app,
                    settings,
                    &body.challenge,
                    body.code.as_deref(),
                    body.recovery_code.as_deref(),
                    &client,
                )
                .await?;
            ok(StatusCode::OK, tokens.to_json())
        }
        (&Method::POST, ["verify"]) => {
            let body: OneTime = read_json(req, MAX_BODY_BYTES).await?;
            let user = accounts.verify_email(app, &body.token).await?;
            ok(StatusCode::OK, json!({ "user": user_json(&user) }))
        }
        (&Method::POST, ["reset", "send"]) => {
            let body: Email = read_json(req, MAX_BODY_BYTES).await?;
            accounts
                .request_reset(app, settings, &body.email, &client)
                .await?;
            ok(StatusCode::ACCEPTED, json!({}))
        }
        (&Method::POST, ["reset"]) => {
            let body: OneTime = read_json(req, MAX_BODY_BYTES).await?;
            let Some(password) = body.password else {
                return Err(ApiError::new(
                    ErrorCode::InvalidBody,
                    "reset needs `password`",
                ));
            };
            accounts
                .reset_password(app, settings, &body.token, &password)
                .await?;
            ok(StatusCode::OK, json!({}))
        }
        (&Method::POST, ["oidc", provider, "token"]) => {
            let caller = identify(auth, req.headers()).await?;
            let body: IdToken = read_json(req, MAX_BODY_BYTES).await?;
            let signed_in = accounts
                .sign_in_with_id_token(
                    app,
                    settings,
                    provider,
                    &body.id_token,
                    &body.nonce,
                    caller.as_ref(),
                    &client,
                )
                .await?;
            ok(StatusCode::OK, signed_in.to_json())
        }
        (&Method::GET, ["oidc", provider, "start"]) => {
            let mut redirect_to = None;
            for (key, value) in form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes()) {
                match &*key {
                    "redirect_to" => redirect_to = Some(value.into_owned()),
                    other => {
                        return Err(ApiError::new(
                            ErrorCode::InvalidQuery,
                            format!("unknown parameter `{other}` (redirect_to)"),
                        ));
                    }
                }
            }
            let url = accounts
                .start_code_flow(app, settings, provider, redirect_to.as_deref())
                .await?;
            found(&url)
        }
        (&Method::GET, ["oidc", provider, "callback"]) => {
            let (mut code, mut state, mut error) = (None, None, None);
            for (key, value) in form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes()) {
                match &*key {
                    "code" => code = Some(value.into_owned()),
                    "state" => state = Some(value.into_owned()),
                    "error" => error = Some(value.into_owned()),
                    _ => {}
                }
            }
            if let Some(error) = error {
                return Err(ApiError::new(
                    ErrorCode::InvalidIdToken,
                    format!(
                        "the provider refused the sign-in: {}",
                        error.chars().take(200).collect::<String>()
                    ),
                ));
            }
            let (Some(code), Some(state)) = (code, state) else {
                return Err(ApiError::new(
                    ErrorCode::InvalidQuery,
                    "the callback needs `code` and `state`",
                ));
            };
            let (signed_in, redirect_to) = accounts
                .finish_code_flow(app, settings, provider, &state, &code, &client)
                .await?;
            match redirect_to {
                None => ok(StatusCode::OK, signed_in.to_json()),
                Some(to) => {
                    // In the fragment, which browsers never send to a server.
                    let fragment: String = form_urlencoded::Serializer::new(String::new())
                        .extend_pairs(
                            signed_in
                                .to_json()
                                .as_object()
                                .into_iter()
                                .flatten()
                                .filter_map(|(k, v)| match v {
                                    Value::String(s) => Some((k.clone(), s.clone())),
                                    Value::Number(n) => Some((k.clone(), n.to_string())),
                                    Value::Bool(b) => Some((k.clone(), b.to_string())),
                                    _ => None,
                                }),
                        )
                        .finish();
                    found(&format!("{to}#{fragment}"))
                }
            }
        }
        (&Method::POST, ["refresh"]) => {
            let body: Refresh = read_json(req, MAX_BODY_BYTES).await?;
            let tokens = accounts.refresh(app, settings, &body.refresh_token).await?;
            ok(StatusCode::OK, tokens.to_json())
        }
        (&Method::GET, ["jwks"]) => {
            let ring = accounts
                .keys
                .ring(app)
                .await
                .map_err(crate::capabilities::auth::AuthError::from)?;
            let keys: Vec<Value> = ring.keys.iter().map(|k| k.jwk()).collect();
            ok(StatusCode::OK, json!({ "keys": keys }))
        }
        _ => signed_in(auth, segments, req).await,
    }
}

/// The calls of a signed-in user.
async fn signed_in(auth: &AppAuth, segments: &[&str], req: Request<Incoming>) -> Answer {
    let (app, settings, accounts) = (&*auth.app, &*auth.settings, &auth.accounts);
    let method = req.method().clone();
    let known = matches!(
        (&method, segments),
        (&Method::POST, ["signout" | "upgrade" | "password"])
            | (&Method::GET | &Method::PATCH | &Method::DELETE, ["user"])
            | (&Method::GET, ["sessions"])
            | (&Method::DELETE, ["sessions", _])
            | (
                &Method::POST,
                ["mfa", "totp"] | ["mfa", "totp", "confirm"] | ["verify", "send"]
            )
            | (&Method::DELETE, ["mfa", "totp"])
    );
    if !known {
        return Err(not_found(&method, segments));
    }
    let identity = caller(auth, &req).await?;
    match (&method, segments) {
        (&Method::POST, ["signout"]) => {
            let body: SignOut = read_optional_json(req).await?;
            let revoked = accounts.sign_out(app, &identity, body.everywhere).await?;
            ok(StatusCode::OK, json!({ "revoked": revoked }))
        }
        (&Method::GET, ["user"]) => {
            let user = accounts.user(app, &identity.user).await?.ok_or_else(gone)?;
            ok(StatusCode::OK, json!({ "user": user_json(&user) }))
        }
        (&Method::PATCH, ["user"]) => {
            let body: Profile = read_json(req, MAX_BODY_BYTES).await?;
            let user = accounts.update_data(app, &identity.user, body.data).await?;
            ok(StatusCode::OK, json!({ "user": user_json(&user) }))
        }
        (&Method::DELETE, ["user"]) => {
            let body: Confirm = read_optional_json(req).await?;
            accounts
                .delete_own(app, &identity, body.password.as_deref())
                .await?;
            ok(StatusCode::OK, json!({ "deleted": identity.user }))
        }
        (&Method::POST, ["upgrade"]) => {
            let body: Credentials = read_json(req, MAX_BODY_BYTES).await?;
            let user = accounts
                .upgrade(app, settings, &identity, &body.email, &body.password)
                .await?;
            ok(StatusCode::OK, json!({ "user": user_json(&user) }))
        }
        (&Method::POST, ["password"]) => {
            let body: PasswordChange = read_json(req, MAX_BODY_BYTES).await?;
            accounts
                .change_password(
                    app,
                    settings,
                    &identity,
                    &body.current_password,
                    &body.new_password,
                )
                .await?;
            ok(StatusCode::OK, json!({}))
        }
        (&Method::GET, ["sessions"]) => {
            let sessions: Vec<Value> = accounts
                .sessions(app, &identity.user)
                .await?
                .iter()
                .map(|s| session_json(s, Some(&identity.session)))
                .collect();
            ok(StatusCode::OK, json!({ "sessions": sessions }))
        }
        (&Method::POST, ["verify", "send"]) => {
            accounts
                .send_verification(app, settings, &identity.user)
                .await?;
            ok(StatusCode::ACCEPTED, json!({}))
        }
        (&Method::POST, ["mfa", "totp"]) => {
            let (secret, url) = accounts.enroll_totp(app, &identity).await?;
            ok(
                StatusCode::OK,
                json!({ "secret": secret, "otpauth_url": url }),
            )
        }
        (&Method::POST, ["mfa", "totp", "confirm"]) => {
            let body: Code = read_json(req, MAX_BODY_BYTES).await?;
            let codes = accounts.confirm_totp(app, &identity, &body.code).await?;
            ok(StatusCode::OK, json!({ "recovery_codes": codes }))
        }
        (&Method::DELETE, ["mfa", "totp"]) => {
            let body: Code = read_json(req, MAX_BODY_BYTES).await?;
            accounts.remove_totp(app, &identity, &body.code).await?;
            ok(StatusCode::OK, json!({}))
        }
        (&Method::DELETE, ["sessions", id]) => {
            accounts.revoke_session(app, &identity.user, id).await?;
            ok(StatusCode::OK, json!({ "revoked": id }))
        }
        _ => Err(not_found(&method, segments)),
    }
}

/// The verified caller, or 401.
async fn caller(auth: &AppAuth, req: &Request<Incoming>) -> Result<Identity, ApiError> {
    identify(auth, req.headers()).await?.ok_or_else(|| {
        ApiError::new(
            ErrorCode::SignInRequired,
            "this call needs `Authorization: Bearer <access token>`",
        )
        .with_header(
            http::header::WWW_AUTHENTICATE,
            http::HeaderValue::from_static("Bearer"),
        )
    })
}

fn not_found(method: &Method, segments: &[&str]) -> ApiError {
    ApiError::new(
        ErrorCode::PlatformRouteNotFound,
        format!(
            "no auth endpoint {method} /_kiln/auth/{}",
            segments.join("/")
        ),
    )
}

fn gone() -> ApiError {
    ApiError::new(
        ErrorCode::UserNotFound,
        "the signed-in user no longer exists",
    )
}

/// A body that may be empty (then the type's default).
async fn read_optional_json<T: serde::de::DeserializeOwned + Default>(
    req: Request<Incoming>,
) -> Result<T, ApiError> {
    let empty = req
        .headers()
        .get(http::header::CONTENT_LENGTH)
        .is_some_and(|len| len == "0")
        || (req.headers().get(http::header::CONTENT_LENGTH).is_none()
            && req.headers().get(http::header::TRANSFER_ENCODING).is_none());
    match empty {
        true => Ok(T::default()),
        false => read_json(req, MAX_BODY_BYTES).await,
    }
}

/// A 302 to `url`, not cached.
fn found(url: &str) -> Answer {
    let location = http::HeaderValue::from_str(url).map_err(|_| {
        ApiError::new(
            ErrorCode::InvalidInput,
            "the redirect URL is not a header value",
        )
    })?;
    let mut response = json_value_response(StatusCode::FOUND, json!({ "location": url }));
    response
        .headers_mut()
        .insert(http::header::LOCATION, location);
    response.headers_mut().insert(
        http::header::CACHE_CONTROL,
        http::HeaderValue::from_static("no-store"),
    );
    Ok(response)
}

fn ok(status: StatusCode, body: Value) -> Answer {
    let mut response: Response<ResponseBody> = json_value_response(status, body);
    // Tokens and profiles are never cached by a browser or a proxy.
    response.headers_mut().insert(
        http::header::CACHE_CONTROL,
        http::HeaderValue::from_static("no-store"),
    );
    Ok(response)
}
