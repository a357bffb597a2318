//! Who is calling: the bearer token verified, and the route's policy
//! checked, before an instance is created.

use http::{HeaderMap, HeaderName, HeaderValue};

use super::error::{ApiError, ErrorCode};
use crate::access::{Decision, Identity, Refusal, Rule};
use crate::capabilities::auth::tokens::MAX_TOKEN_BYTES;
use crate::capabilities::auth::{AppAuth, AuthError};
use crate::store::StoreError;

/// The bearer token of a request: none without an `Authorization` header;
/// refused when the header is not `Bearer <token>` or the token is over
/// [`MAX_TOKEN_BYTES`] (before anything parses it).
pub fn bearer_token<'h>(app: &str, headers: &'h HeaderMap) -> Result<Option<&'h str>, ApiError> {
    let Some(value) = headers.get(http::header::AUTHORIZATION) else {
        return Ok(None);
    };
    if value.len() > MAX_TOKEN_BYTES + 7 {
        tracing::info!(
            app,
            bytes = value.len(),
            "access token refused: over {MAX_TOKEN_BYTES} bytes"
        );
        return Err(invalid_token(app));
    }
    let text = value.to_str().map_err(|_| invalid_token(app))?;
    match text.split_once(' ') {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") && !token.is_empty() => {
            Ok(Some(token.trim()))
        }
        _ => {
            tracing::info!(
                app,
                "access token refused: the Authorization header is not `Bearer <token>`"
            );
            Err(invalid_token(app))
        }
    }
}

/// The verified caller: none without a token; a token that does not verify
/// is refused (the HTTP trigger lets a public route through as anonymous).
pub async fn identify(auth: &AppAuth, headers: &HeaderMap) -> Result<Option<Identity>, ApiError> {
    let Some(token) = bearer_token(&auth.app, headers)? else {
        return Ok(None);
    };
    match auth.accounts.authenticate(&auth.app, token).await {
        Ok(identity) => Ok(Some(identity)),
        Err(AuthError::InvalidToken) => Err(invalid_token(&auth.app)),
        Err(other) => Err(other.into()),
    }
}

/// Checks a route's rule for the caller (routes take only the kinds
/// decided from the caller alone).
pub fn check(app: &str, rule: &Rule, identity: Option<&Identity>) -> Result<(), ApiError> {
    match rule.decide(identity, None) {
        Ok(Decision::Allowed) => Ok(()),
        // Routes parse only those kinds; anything else fails closed.
        Ok(other) => Err(ApiError::new(
            ErrorCode::Internal,
            format!("a route's rule cannot decide {other:?}"),
        )),
        Err(refusal) => Err(refusal_error(app, refusal, "this route")),
    }
}

/// The answer to a refused policy; `what` is what needs it ("this route").
pub fn refusal_error(app: &str, refusal: Refusal, what: &str) -> ApiError {
    match refusal {
        Refusal::SignInRequired => ApiError::new(
            ErrorCode::SignInRequired,
            format!("{what} needs a signed-in user: send `Authorization: Bearer <access token>`"),
        )
        .with_header(http::header::WWW_AUTHENTICATE, challenge(app, None)),
        Refusal::MissingRole(role) => ApiError::new(
            ErrorCode::MissingRole,
            format!("{what} needs the role `{role}`"),
        ),
        Refusal::SecondFactorRequired => ApiError::new(
            ErrorCode::SecondFactorRequired,
            format!("{what} needs a session that passed the second factor"),
        ),
    }
}

fn invalid_token(app: &str) -> ApiError {
    ApiError::new(ErrorCode::InvalidToken, AuthError::InvalidToken.to_string()).with_header(
        http::header::WWW_AUTHENTICATE,
        challenge(app, Some("invalid_token")),
    )
}

fn challenge(app: &str, error: Option<&str>) -> HeaderValue {
    let value = match error {
        Some(error) => format!("Bearer realm=\"{app}\", error=\"{error}\""),
        None => format!("Bearer realm=\"{app}\""),
    };
    // App names are DNS labels, so this always forms a header value.
    HeaderValue::from_str(&value).unwrap_or(HeaderValue::from_static("Bearer"))
}

impl From<AuthError> for ApiError {
    fn from(err: AuthError) -> Self {
        let message = err.to_string();
        let code = match &err {
            AuthError::InvalidInput(_) => ErrorCode::InvalidInput,
            AuthError::WeakPassword(_) => ErrorCode::WeakPassword,
            AuthError::InvalidCredentials => ErrorCode::InvalidCredentials,
            AuthError::InvalidToken => ErrorCode::InvalidToken,
            AuthError::InvalidRefreshToken => ErrorCode::InvalidRefreshToken,
            AuthError::Throttled(wait) => {
                let seconds = wait.as_secs().max(1).to_string();
                return ApiError::new(ErrorCode::TooManyAttempts, message).with_header(
                    HeaderName::from_static("retry-after"),
                    HeaderValue::from_str(&seconds).expect("digits"),
                );
            }
            AuthError::EmailTaken => ErrorCode::EmailTaken,
            AuthError::Disabled => ErrorCode::UserDisabled,
            AuthError::NotFound(_) => ErrorCode::UserNotFound,
            AuthError::NotAllowed(_) => ErrorCode::NotAllowed,
            AuthError::Busy => ErrorCode::Busy,
            AuthError::InvalidOneTimeToken => ErrorCode::InvalidOneTimeToken,
            AuthError::UnknownProvider(_) => ErrorCode::ProviderNotFound,
            AuthError::InvalidIdToken(_) => ErrorCode::InvalidIdToken,
            AuthError::ProviderUnavailable(_) => ErrorCode::ProviderUnavailable,
            AuthError::ProviderEmailUnverified => ErrorCode::ProviderEmailUnverified,
            AuthError::IdentityInUse => ErrorCode::IdentityInUse,
            AuthError::Store(StoreError::InvalidInput(_)) => ErrorCode::InvalidInput,
            AuthError::Store(store) => {
                tracing::warn!("auth: platform data: {store}");
                return ApiError::new(
                    ErrorCode::PlatformDataUnavailable,
                    "the platform's data is unavailable; try again shortly",
                );
            }
        };
        ApiError::new(code, message)
    }
}
