//! Sign-in with OpenID Connect providers: an id_token checked against the
//! provider's keys (native sign-in), and the authorization-code flow with
//! PKCE, `state` and `nonce` (web apps), both from the provider's discovery
//! document.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::{AlgorithmParameters, Jwk, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::fetch::{FetchError, Fetcher};

/// Longest id_token read.
const MAX_ID_TOKEN_BYTES: usize = 16 * 1024;
/// Discovery documents and key sets are reread after this.
const CACHE_FOR: Duration = Duration::from_secs(3600);
/// An unknown `kid` rereads the provider's keys at most this often.
const MIN_REFETCH: Duration = Duration::from_secs(2);
const LEEWAY_SECS: u64 = 30;
/// Most keys read from one key set.
const MAX_KEYS: usize = 64;

/// One provider of an app (`[auth.providers.NAME]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderSettings {
    /// `https://accounts.google.com`; the discovery document is under it.
    pub issuer: String,
    /// The `aud` an id_token may carry; the first is the code flow's client.
    pub client_ids: Vec<String>,
    /// The app variable holding the client secret (code flow; none for a
    /// public client, which PKCE alone protects).
    #[serde(default)]
    pub client_secret_variable: Option<String>,
    /// Kiln's callback as registered at the provider:
    /// `https://HOST/APP/_kiln/auth/oidc/NAME/callback` (code flow).
    #[serde(default)]
    pub redirect_uri: Option<String>,
    /// Where the code flow may send the browser afterwards (exact URLs).
    #[serde(default)]
    pub redirect_urls: Vec<String>,
    #[serde(default = "default_scopes")]
    pub scopes: Vec<String>,
    /// Filled from the variable at deploy.
    #[serde(skip)]
    pub client_secret: Option<String>,
}

fn default_scopes() -> Vec<String> {
    vec!["openid".into(), "email".into(), "profile".into()]
}

impl ProviderSettings {
    /// Why the provider is refused; `variables` are the app's.
    pub fn check(&mut self, variables: &BTreeMap<String, String>) -> Result<(), String> {
        if !self.issuer.starts_with("https://") && !self.issuer.starts_with("http://") {
            return Err("issuer is an https URL".into());
        }
        if self.client_ids.is_empty()
            || self
                .client_ids
                .iter()
                .any(|c| c.is_empty() || c.len() > 256)
        {
            return Err("client_ids lists 1 or more client ids".into());
        }
        if let Some(name) = &self.client_secret_variable {
            self.client_secret = Some(
                variables
                    .get(name)
                    .cloned()
                    .ok_or_else(|| format!("client_secret_variable: no variable `{name}`"))?,
            );
        }
        if !self.scopes.iter().any(|s| s == "openid") {
            return Err("scopes include `openid`".into());
        }
        Ok(())
    }
}

/// What Kiln reads of a verified id_token.
#[derive(Debug, Clone)]
pub struct ProviderClaims {
    pub subject: String,
    pub email: Option<String>,
    pub email_verified: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum OidcError {
    #[error("the provider could not be reached: {0}")]
    Unreachable(#[from] FetchError),
    #[error("the id_token is refused: {0}")]
    Refused(String),
}

fn refused(message: impl Into<String>) -> OidcError {
    OidcError::Refused(message.into())
}

/// The parts of a discovery document Kiln uses.
#[derive(Debug, Clone, Deserialize)]
pub struct Discovery {
    pub issuer: String,
    pub authorization_endpoint: String,
    pub token_endpoint: String,
    pub jwks_uri: String,
    #[serde(default)]
    pub id_token_signing_alg_values_supported: Vec<String>,
}

struct CachedKeys {
    keys: Vec<Jwk>,
    fetched: Instant,
}

/// Discovery documents and key sets of every provider, per server.
pub struct Oidc {
    fetcher: Fetcher,
    discovery: Mutex<HashMap<String, (Discovery, Instant)>>,
    keys: Mutex<HashMap<String, CachedKeys>>,
}

#[derive(Deserialize)]
struct Claims {
    sub: String,
    #[serde(default)]
    email: Option<String>,
    /// A boolean, or (Apple) the string `"true"`.
    #[serde(default)]
    email_verified: Option<Value>,
    #[serde(default)]
    nonce: Option<String>,
}

#[derive(Deserialize)]
struct TokenAnswer {
    id_token: String,
}

impl Oidc {
    pub fn new(fetcher: Fetcher) -> Self {
        Oidc {
            fetcher,
            discovery: Mutex::new(HashMap::new()),
            keys: Mutex::new(HashMap::new()),
        }
    }

    pub async fn discovery(&self, issuer: &str) -> Result<Discovery, OidcError> {
        if let Some((doc, at)) = self
            .discovery
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(issuer)
            && at.elapsed() < CACHE_FOR
        {
            return Ok(doc.clone());
        }
        let url = format!(
            "{}/.well-known/openid-configuration",
            issuer.trim_end_matches('/')
        );
        let doc: Discovery = self.fetcher.get_json(&url).await?;
        if doc.issuer.trim_end_matches('/') != issuer.trim_end_matches('/') {
            return Err(refused(format!(
                "the discovery document names issuer `{}`",
                doc.issuer
            )));
        }
        self.discovery
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(issuer.to_string(), (doc.clone(), Instant::now()));
        Ok(doc)
    }

    /// The key `kid` of the provider, rereading its key set when the kid is
    /// unknown (a rotation) at most every [`MIN_REFETCH`].
    async fn key(&self, jwks_uri: &str, kid: &str) -> Result<Jwk, OidcError> {
        let find = |keys: &HashMap<String, CachedKeys>, fresh: Duration| {
            keys.get(jwks_uri)
                .filter(|c| c.fetched.elapsed() < fresh)
                .map(|c| {
                    c.keys
                        .iter()
                        .find(|k| k.common.key_id.as_deref() == Some(kid))
                        .cloned()
                })
        };
        let cached = find(
            &self.keys.lock().unwrap_or_else(|e| e.into_inner()),
            CACHE_FOR,
        );
        match cached {
            Some(Some(key)) => return Ok(key),
            Some(None) => {
                // Known set, unknown kid: reread unless that happened just now.
                let recent = find(
                    &self.keys.lock().unwrap_or_else(|e| e.into_inner()),
                    MIN_REFETCH,
                );
                if recent.is_some() {
                    return Err(refused(format!("the provider has no key `{kid}`")));
                }
            }
            None => {}
        }
        let set: JwkSet = self.fetcher.get_json(jwks_uri).await?;
        let keys: Vec<Jwk> = set.keys.into_iter().take(MAX_KEYS).collect();
        let key = keys
            .iter()
            .find(|k| k.common.key_id.as_deref() == Some(kid))
            .cloned();
        self.keys.lock().unwrap_or_else(|e| e.into_inner()).insert(
            jwks_uri.to_string(),
            CachedKeys {
                keys,
                fetched: Instant::now(),
            },
        );
        key.ok_or_else(|| refused(format!("the provider has no key `{kid}`")))
    }

    /// Verifies an id_token from `provider`: signature against the
    /// provider's keys, `iss`, `aud` among the client ids, `exp`, and
    /// `nonce` equal to the one given.
    pub async fn verify(
        &self,
        provider: &ProviderSettings,
        id_token: &str,
        nonce: &str,
    ) -> Result<ProviderClaims, OidcError> {
        if id_token.len() > MAX_ID_TOKEN_BYTES {
            return Err(refused(format!("over {MAX_ID_TOKEN_BYTES} bytes")));
        }
        let header = jsonwebtoken::decode_header(id_token).map_err(|e| refused(e.to_string()))?;
        if !matches!(
            header.alg,
            Algorithm::RS256
                | Algorithm::RS384
                | Algorithm::RS512
                | Algorithm::PS256
                | Algorithm::ES256
                | Algorithm::ES384
                | Algorithm::EdDSA
        ) {
            return Err(refused(format!(
                "algorithm {:?} is not accepted",
                header.alg
            )));
        }
        let kid = header.kid.ok_or_else(|| refused("no `kid`"))?;
        let discovery = self.discovery(&provider.issuer).await?;
        let jwk = self.key(&discovery.jwks_uri, &kid).await?;
        let key = decoding_key(&jwk, header.alg)?;
        let mut validation = Validation::new(header.alg);
        validation.leeway = LEEWAY_SECS;
        validation.set_issuer(&[
            provider.issuer.as_str(),
            provider.issuer.trim_end_matches('/'),
        ]);
        validation.set_audience(&provider.client_ids);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        let claims = jsonwebtoken::decode::<Claims>(id_token, &key, &validation)
            .map_err(|e| refused(e.to_string()))?
            .claims;
        if claims.nonce.as_deref() != Some(nonce) {
            return Err(refused("the nonce does not match"));
        }
        if claims.sub.is_empty() || claims.sub.len() > 255 {
            return Err(refused("`sub` is 1 to 255 bytes"));
        }
        let email_verified = match &claims.email_verified {
            Some(Value::Bool(b)) => *b,
            Some(Value::String(s)) => s == "true",
            _ => false,
        };
        Ok(ProviderClaims {
            subject: claims.sub,
            email: claims.email,
            email_verified,
        })
    }

    /// The provider's authorization URL for a code-flow sign-in.
    pub async fn authorization_url(
        &self,
        provider: &ProviderSettings,
        state: &str,
        nonce: &str,
        code_verifier: &str,
    ) -> Result<String, OidcError> {
        let discovery = self.discovery(&provider.issuer).await?;
        let redirect = provider
            .redirect_uri
            .as_deref()
            .ok_or_else(|| refused("no redirect_uri"))?;
        let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(code_verifier.as_bytes()));
        let query = form_urlencoded::Serializer::new(String::new())
            .append_pair("response_type", "code")
            .append_pair("client_id", &provider.client_ids[0])
            .append_pair("redirect_uri", redirect)
            .append_pair("scope", &provider.scopes.join(" "))
            .append_pair("state", state)
            .append_pair("nonce", nonce)
            .append_pair("code_challenge", &challenge)
            .append_pair("code_challenge_method", "S256")
            .finish();
        let separator = if discovery.authorization_endpoint.contains('?') {
            '&'
        } else {
            '?'
        };
        Ok(format!(
            "{}{separator}{query}",
            discovery.authorization_endpoint
        ))
    }

    /// Trades a code for the id_token and verifies it with the flow's nonce.
    pub async fn exchange(
        &self,
        provider: &ProviderSettings,
        code: &str,
        code_verifier: &str,
        nonce: &str,
    ) -> Result<ProviderClaims, OidcError> {
        let discovery = self.discovery(&provider.issuer).await?;
        let redirect = provider
            .redirect_uri
            .as_deref()
            .ok_or_else(|| refused("no redirect_uri"))?;
        let mut form = vec![
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", redirect),
            ("client_id", provider.client_ids[0].as_str()),
            ("code_verifier", code_verifier),
        ];
        if let Some(secret) = &provider.client_secret {
            form.push(("client_secret", secret));
        }
        let answer: TokenAnswer = self
            .fetcher
            .post_form(&discovery.token_endpoint, &form)
            .await?;
        self.verify(provider, &answer.id_token, nonce).await
    }
}

/// The verifying key for `alg`, refusing keys whose type does not fit it
/// (and malformed ones, which would otherwise reach the verifier).
fn decoding_key(jwk: &Jwk, alg: Algorithm) -> Result<DecodingKey, OidcError> {
    let fits = match (&jwk.algorithm, alg) {
        (
            AlgorithmParameters::RSA(_),
            Algorithm::RS256 | Algorithm::RS384 | Algorithm::RS512 | Algorithm::PS256,
        ) => true,
        (AlgorithmParameters::EllipticCurve(_), Algorithm::ES256 | Algorithm::ES384) => true,
        (AlgorithmParameters::OctetKeyPair(params), Algorithm::EdDSA) => URL_SAFE_NO_PAD
            .decode(&params.x)
            .is_ok_and(|x| x.len() == 32),
        _ => false,
    };
    if !fits {
        return Err(refused(format!("the key does not fit algorithm {alg:?}")));
    }
    DecodingKey::from_jwk(jwk).map_err(|e| refused(format!("the provider's key: {e}")))
}

/// A random URL-safe value (state, nonce, PKCE verifier): 256 bits.
pub fn random_token() -> String {
    URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>())
}
