//! Access tokens: EdDSA (Ed25519) JWTs with a `kid`, signed by the app's
//! current key and verified against any of its keys.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use ring::signature::KeyPair as _;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::store::platform::now_ms;
use crate::store::platform::signing_keys::SigningKeyRecord;

/// Longest token read; a longer one is refused before any parsing.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// How far a clock may be off between nodes, for `exp` and `nbf`.
pub(super) const LEEWAY_SECS: u64 = 5;

/// The claims of an access token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AccessClaims {
    pub iss: String,
    pub aud: String,
    /// The user id.
    pub sub: String,
    /// The session id.
    pub sid: String,
    pub iat: u64,
    pub nbf: u64,
    pub exp: u64,
    /// Whether the session passed the second factor.
    #[serde(default)]
    pub mfa: bool,
}

/// Why a token was refused; logged, while the client gets one message.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("the token is over {MAX_TOKEN_BYTES} bytes")]
    TooLong,
    #[error("the token's header does not read: {0}")]
    Header(jsonwebtoken::errors::Error),
    #[error("the token names no key (`kid`)")]
    NoKid,
    #[error("the token's key `{0}` is not one of the app's")]
    UnknownKid(String),
    #[error("the token does not verify: {0}")]
    Invalid(jsonwebtoken::errors::Error),
}

/// The issuer of an app's tokens.
pub fn issuer(app: &str) -> String {
    format!("kiln:{app}")
}

/// One signing key, ready to sign or verify.
pub struct SigningKey {
    pub kid: String,
    pub retired_ms: Option<u64>,
    public_key: String,
    encoding: EncodingKey,
    decoding: DecodingKey,
}

impl SigningKey {
    /// A new Ed25519 key for `app`, as stored.
    pub fn generate(app: &str) -> SigningKeyRecord {
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = ring::signature::Ed25519KeyPair::generate_pkcs8(&rng)
            .expect("the system random source works");
        let pair = ring::signature::Ed25519KeyPair::from_pkcs8(pkcs8.as_ref())
            .expect("a generated key reads");
        SigningKeyRecord {
            id: hex::encode(rand::random::<[u8; 12]>()),
            app: app.to_string(),
            alg: "EdDSA".into(),
            private_key: base64::engine::general_purpose::STANDARD.encode(pkcs8.as_ref()),
            public_key: URL_SAFE_NO_PAD.encode(pair.public_key().as_ref()),
            created_ms: now_ms(),
            retired_ms: None,
        }
    }

    /// A stored key; `Err` names what does not read.
    pub fn from_record(record: &SigningKeyRecord) -> Result<Self, String> {
        if record.alg != "EdDSA" {
            return Err(format!(
                "key {}: unknown algorithm `{}`",
                record.id, record.alg
            ));
        }
        let private = base64::engine::general_purpose::STANDARD
            .decode(&record.private_key)
            .map_err(|e| format!("key {}: private key: {e}", record.id))?;
        ring::signature::Ed25519KeyPair::from_pkcs8(&private)
            .map_err(|e| format!("key {}: private key: {e}", record.id))?;
        let public = URL_SAFE_NO_PAD
            .decode(&record.public_key)
            .map_err(|e| format!("key {}: public key: {e}", record.id))?;
        if public.len() != 32 {
            return Err(format!("key {}: the public key is not 32 bytes", record.id));
        }
        Ok(SigningKey {
            kid: record.id.clone(),
            retired_ms: record.retired_ms,
            public_key: record.public_key.clone(),
            encoding: EncodingKey::from_ed_der(&private),
            decoding: DecodingKey::from_ed_der(&public),
        })
    }

    /// Signs an access token for a session.
    pub fn sign(
        &self,
        app: &str,
        user: &str,
        session: &str,
        mfa: bool,
        ttl: Duration,
    ) -> Result<String, jsonwebtoken::errors::Error> {
        let now = now_ms() / 1000;
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(self.kid.clone());
        let claims = AccessClaims {
            iss: issuer(app),
            aud: app.to_string(),
            sub: user.to_string(),
            sid: session.to_string(),
            iat: now,
            nbf: now,
            exp: now + ttl.as_secs(),
            mfa,
        };
        jsonwebtoken::encode(&header, &claims, &self.encoding)
    }

    /// The key as a JWK.
    pub fn jwk(&self) -> Value {
        json!({
            "kty": "OKP",
            "crv": "Ed25519",
            "alg": "EdDSA",
            "use": "sig",
            "kid": self.kid,
            "x": self.public_key,
        })
    }
}

/// Verifies an access token of `app` against its keys: size first, then
/// the header's `kid`, then the signature, `alg` (EdDSA only), `iss`,
/// `aud`, `exp` and `nbf`.
pub fn verify(app: &str, token: &str, keys: &[SigningKey]) -> Result<AccessClaims, TokenError> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(TokenError::TooLong);
    }
    let header = jsonwebtoken::decode_header(token).map_err(TokenError::Header)?;
    let kid = header.kid.ok_or(TokenError::NoKid)?;
    let key = keys
        .iter()
        .find(|k| k.kid == kid)
        .ok_or_else(|| TokenError::UnknownKid(kid.clone()))?;
    let mut validation = Validation::new(Algorithm::EdDSA);
    validation.leeway = LEEWAY_SECS;
    validation.validate_nbf = true;
    validation.set_issuer(&[issuer(app)]);
    validation.set_audience(&[app]);
    validation.set_required_spec_claims(&["exp", "nbf", "iss", "aud", "sub"]);
    jsonwebtoken::decode::<AccessClaims>(token, &key.decoding, &validation)
        .map(|data| data.claims)
        .map_err(TokenError::Invalid)
}

/// The kid a token names, if its header reads (to decide whether to reload keys).
pub fn kid_of(token: &str) -> Option<String> {
    if token.len() > MAX_TOKEN_BYTES {
        return None;
    }
    jsonwebtoken::decode_header(token).ok()?.kid
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> SigningKey {
        SigningKey::from_record(&SigningKey::generate("shop")).unwrap()
    }

    fn b64(value: &Value) -> String {
        URL_SAFE_NO_PAD.encode(value.to_string())
    }

    #[test]
    fn a_signed_token_verifies_and_carries_its_session() {
        let key = key();
        let token = key
            .sign("shop", "u1", "s1", false, Duration::from_secs(60))
            .unwrap();
        let claims = verify("shop", &token, std::slice::from_ref(&key)).unwrap();
        assert_eq!((claims.sub.as_str(), claims.sid.as_str()), ("u1", "s1"));
        assert!(matches!(
            verify("other", &token, std::slice::from_ref(&key)),
            Err(TokenError::Invalid(_))
        ));
        assert!(matches!(
            verify("shop", &token, &[self::key()]),
            Err(TokenError::UnknownKid(_))
        ));
    }

    #[test]
    fn forged_tokens_are_refused() {
        let key = key();
        let token = key
            .sign("shop", "u1", "s1", false, Duration::from_secs(60))
            .unwrap();
        let keys = std::slice::from_ref(&key);
        let parts: Vec<&str> = token.split('.').collect();
        // alg none, with and without a signature.
        let none = b64(&json!({"alg": "none", "kid": key.kid}));
        for forged in [
            format!("{none}.{}.", parts[1]),
            format!("{none}.{}", parts[1]),
        ] {
            assert!(verify("shop", &forged, keys).is_err(), "{forged}");
        }
        // HS256 keyed with the public key.
        let hs = jsonwebtoken::encode(
            &Header {
                kid: Some(key.kid.clone()),
                ..Header::new(Algorithm::HS256)
            },
            &json!({"iss": "kiln:shop", "aud": "shop", "sub": "u1", "sid": "s1", "iat": 0, "nbf": 0, "exp": u64::MAX / 2}),
            &EncodingKey::from_secret(key.public_key.as_bytes()).unwrap(),
        )
        .unwrap();
        assert!(verify("shop", &hs, keys).is_err());
        // A changed payload.
        let admin = b64(
            &json!({"iss": "kiln:shop", "aud": "shop", "sub": "admin", "sid": "s1", "iat": 0, "nbf": 0, "exp": u64::MAX / 2}),
        );
        let tampered = format!("{}.{admin}.{}", parts[0], parts[2]);
        assert!(verify("shop", &tampered, keys).is_err());
        // Not base64, not JSON, too long.
        for junk in [
            "a.b.c",
            "!!!.???.***",
            &format!("{}.e30.{}", b64(&json!("x")), parts[2]),
        ] {
            assert!(verify("shop", junk, keys).is_err(), "{junk}");
        }
        assert!(matches!(
            verify("shop", &"a".repeat(MAX_TOKEN_BYTES + 1), keys),
            Err(TokenError::TooLong)
        ));
    }
}
