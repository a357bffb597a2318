//! The HTTP client for identity providers. Their URLs come from an app's
//! manifest, so a tenant could aim them at the server's own network: every
//! address a host resolves to (or an IP literal) must be public unless the
//! server's operator named that host (`--auth-internal-hosts`). No
//! redirects, short timeouts, and bodies capped before they are parsed.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use serde::de::DeserializeOwned;

use crate::capabilities::outbound::is_internal;

/// Largest provider response read.
pub const MAX_BODY_BYTES: usize = 256 * 1024;
const TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("{url}: {message}")]
    Failed { url: String, message: String },
}

fn failed(url: &str, message: impl Into<String>) -> FetchError {
    FetchError::Failed {
        url: url.to_string(),
        message: message.into(),
    }
}

/// Resolves names, dropping internal addresses of hosts not allowed them.
struct PublicOnly {
    internal_hosts: Arc<[String]>,
}

impl Resolve for PublicOnly {
    fn resolve(&self, name: Name) -> Resolving {
        let host = name.as_str().to_ascii_lowercase();
        let allowed = self.internal_hosts.contains(&host);
        Box::pin(async move {
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await?
                .filter(|a| allowed || !is_internal(a.ip()))
                .collect();
            if addrs.is_empty() {
                return Err(format!("`{host}` resolves to no public address").into());
            }
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}

#[derive(Clone)]
pub struct Fetcher {
    client: reqwest::Client,
    internal_hosts: Arc<[String]>,
}

impl Fetcher {
    /// `internal_hosts` are lower-cased.
    pub fn new(internal_hosts: Arc<[String]>) -> Self {
        crate::install_crypto_provider();
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(TIMEOUT)
            .connect_timeout(TIMEOUT)
            .dns_resolver(PublicOnly {
                internal_hosts: internal_hosts.clone(),
            })
            .build()
            .expect("the provider client builds");
        Fetcher {
            client,
            internal_hosts,
        }
    }

    /// Refuses URLs that are not https (http only for an allowed internal
    /// host) and IP literals of internal addresses (which skip the resolver).
    fn check(&self, url: &str) -> Result<reqwest::Url, FetchError> {
        let parsed = reqwest::Url::parse(url).map_err(|e| failed(url, e.to_string()))?;
        let host = parsed
            .host_str()
            .ok_or_else(|| failed(url, "no host"))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_ascii_lowercase();
        let allowed = self.internal_hosts.contains(&host);
        match parsed.scheme() {
            "https" => {}
            "http" if allowed => {}
            _ => return Err(failed(url, "providers are reached over https")),
        }
        if let Ok(ip) = host.parse::<IpAddr>()
            && is_internal(ip)
            && !allowed
        {
            return Err(failed(url, "an internal address"));
        }
        Ok(parsed)
    }

    pub async fn get_json<T: DeserializeOwned>(&self, url: &str) -> Result<T, FetchError> {
        let parsed = self.check(url)?;
        self.read(url, self.client.get(parsed)).await
    }

    pub async fn post_form<T: DeserializeOwned>(
        &self,
        url: &str,
        form: &[(&str, &str)],
    ) -> Result<T, FetchError> {
        let parsed = self.check(url)?;
        let body: String = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form)
            .finish();
        let request = self
            .client
            .post(parsed)
            .header("content-type", "application/x-www-form-urlencoded")
            .header("accept", "application/json")
            .body(body);
        self.read(url, request).await
    }

    async fn read<T: DeserializeOwned>(
        &self,
        url: &str,
        request: reqwest::RequestBuilder,
    ) -> Result<T, FetchError> {
        let response = request
            .send()
            .await
            .map_err(|e| failed(url, e.to_string()))?;
        let status = response.status();
        let mut body = Vec::new();
        let mut stream = response.bytes_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| failed(url, e.to_string()))?;
            if body.len() + chunk.len() > MAX_BODY_BYTES {
                return Err(failed(
                    url,
                    format!("the answer is over {MAX_BODY_BYTES} bytes"),
                ));
            }
            body.extend_from_slice(&chunk);
        }
        if !status.is_success() {
            let text = String::from_utf8_lossy(&body);
            return Err(failed(
                url,
                format!(
                    "answered {status}: {}",
                    text.chars().take(200).collect::<String>()
                ),
            ));
        }
        serde_json::from_slice(&body)
            .map_err(|e| failed(url, format!("the answer is not the JSON expected: {e}")))
    }
}
