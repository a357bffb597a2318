//! Outbound HTTP from guests: only to the hosts the manifest allows.

use std::sync::Arc;

use wasmtime_wasi_http::{Error, RequestOptions, Result, WasiBody, WasiHttpHooks};

pub struct OutboundPolicy {
    allowed: Arc<[String]>,
}

impl OutboundPolicy {
    pub fn new(allowed: Arc<[String]>) -> Self {
        OutboundPolicy { allowed }
    }

    /// Whether `host` (with `port` when the entry names one) is allowed.
    /// Entries are `host`, `host:port`, `*.domain` or `*`.
    fn allows(&self, host: &str, port: Option<u16>) -> bool {
        self.allowed.iter().any(|entry| {
            let (entry_host, entry_port) = match entry.rsplit_once(':') {
                Some((h, p)) => (h, p.parse::<u16>().ok()),
                None => (entry.as_str(), None),
            };
            let host_ok = entry_host == "*"
                || entry_host.eq_ignore_ascii_case(host)
                || entry_host.strip_prefix("*.").is_some_and(|domain| {
                    host.len() > domain.len()
                        && host
                            .to_ascii_lowercase()
                            .ends_with(&format!(".{}", domain.to_ascii_lowercase()))
                });
            host_ok && (entry_port.is_none() || entry_port == port)
        })
    }
}

impl WasiHttpHooks for OutboundPolicy {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        fut: Box<dyn Future<Output = Result<(), Error>> + Send>,
    ) -> Box<
        dyn Future<
                Output = Result<(
                    http::Response<WasiBody>,
                    Box<dyn Future<Output = Result<(), Error>> + Send>,
                )>,
            > + Send,
    > {
        let uri = request.uri();
        let allowed = uri
            .host()
            .is_some_and(|host| self.allows(host, uri.port_u16().or(default_port(uri))));
        if !allowed {
            return Box::new(async { Err(Error::HttpRequestDenied) });
        }
        drop(fut);
        Box::new(async move {
            use http_body_util::BodyExt;
            let (response, io) = wasmtime_wasi_http::default_send_request(request, options).await?;
            Ok((
                response.map(BodyExt::boxed_unsync),
                Box::new(io) as Box<dyn Future<Output = _> + Send>,
            ))
        })
    }
}

fn default_port(uri: &http::Uri) -> Option<u16> {
    match uri.scheme_str() {
        Some("https") => Some(443),
        Some("http") => Some(80),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(entries: &[&str]) -> OutboundPolicy {
        OutboundPolicy::new(entries.iter().map(|s| s.to_string()).collect())
    }

    #[test]
    fn denies_everything_by_default() {
        assert!(!policy(&[]).allows("example.com", Some(443)));
    }

    #[test]
    fn matches_hosts_ports_and_wildcards() {
        let p = policy(&["api.example.com", "localhost:8080", "*.cdn.net"]);
        assert!(p.allows("api.example.com", Some(443)));
        assert!(p.allows("API.example.com", Some(80)));
        assert!(p.allows("localhost", Some(8080)));
        assert!(!p.allows("localhost", Some(8081)));
        assert!(p.allows("a.cdn.net", Some(443)));
        assert!(!p.allows("cdn.net", Some(443)));
        assert!(!p.allows("evil.com", Some(443)));
        assert!(policy(&["*"]).allows("anything.org", None));
    }
}
