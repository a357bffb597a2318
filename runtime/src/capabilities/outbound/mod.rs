//! Outbound HTTP from guests (`wasi:http/outgoing-handler`): only to the
//! hosts the manifest allows, and never to loopback, private, link-local or
//! metadata addresses unless the manifest names that host exactly.
//!
//! Manifest: `functions.NAME.allowed_outbound_hosts`. wasi:http itself is
//! linked with WASI by the invocation core; this capability is the policy
//! its hooks apply.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderName, HeaderValue};
use wasmtime::component::Linker;
use wasmtime_wasi::WasiCtxBuilder;
use wasmtime_wasi_http::{Error, RequestOptions, Result, WasiBody, WasiHttpHooks};

use super::{
    AppManifest, Backends, Capability, CapabilityView, ConfigureError, FunctionManifest, Instances,
    Invocation, Pick,
};

const FIELD: &str = "allowed_outbound_hosts";

pub struct Outbound;

impl Capability for Outbound {
    const FUNCTION_KEYS: &'static [&'static str] = &[FIELD];
    type App = ();
    type Configured = Arc<[OutboundEntry]>;
    type Instance = OutboundPolicy;

    fn init(_: &Backends) -> Self {
        Outbound
    }

    fn link<T: CapabilityView>(_: &mut Linker<T>) -> wasmtime::Result<()>
    where
        Instances: Pick<Self>,
    {
        Ok(())
    }

    fn configure_app(&self, _: &AppManifest<'_>) -> Result<(), ConfigureError> {
        Ok(())
    }

    fn configure(
        &self,
        _: &(),
        function: &FunctionManifest<'_>,
    ) -> std::result::Result<Self::Configured, ConfigureError> {
        let entries: Vec<String> = function.function_value(FIELD)?;
        entries
            .iter()
            .map(|entry| {
                OutboundEntry::parse(entry).map_err(|message| ConfigureError {
                    field: function.function_field(FIELD),
                    message,
                })
            })
            .collect()
    }

    fn prepare(
        &self,
        configured: &Self::Configured,
        invocation: &Invocation<'_>,
        _: &mut WasiCtxBuilder,
    ) -> OutboundPolicy {
        OutboundPolicy {
            allowed: configured.clone(),
            // A function that may call nobody sends nothing to strip.
            trigger_headers: match configured.is_empty() {
                true => Vec::new(),
                false => invocation.trigger_headers.to_vec(),
            },
        }
    }
}

/// Longest wait for a host name to resolve.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);

/// One entry of `allowed_outbound_hosts`: `host`, `host:port`, `*.domain`,
/// `*`, an IP address, or `[IPv6]:port`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboundEntry {
    host: HostPattern,
    port: Option<u16>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum HostPattern {
    Any,
    Subdomains(String),
    Exact(String),
}

impl OutboundEntry {
    /// Parses an entry; a port that is not a number from 1 to 65535 is
    /// refused (it never means "any port").
    pub fn parse(entry: &str) -> std::result::Result<Self, String> {
        let bad = |why: &str| {
            Err(format!(
                "`{entry}` is not `host`, `host:port`, `*.domain` or `*`: {why}"
            ))
        };
        if entry.is_empty() || entry.contains(['/', ' ', '@', '?', '#']) {
            return bad("a host name, with an optional port");
        }
        let (host, port) = if let Some(rest) = entry.strip_prefix('[') {
            match rest.split_once(']') {
                Some((ip, "")) => (ip, None),
                Some((ip, port)) => match port.strip_prefix(':') {
                    Some(p) => (ip, Some(p)),
                    None => return bad("text after the IPv6 address"),
                },
                None => return bad("an unclosed `[`"),
            }
        } else if entry.matches(':').count() > 1 {
            return bad("write an IPv6 address in brackets, e.g. `[::1]:8080`");
        } else {
            match entry.split_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (entry, None),
            }
        };
        let port = match port {
            None => None,
            Some(p) => match p.parse::<u16>() {
                Ok(n) if n > 0 && p.bytes().all(|b| b.is_ascii_digit()) => Some(n),
                _ => return bad(&format!("the port `{p}` is not a number from 1 to 65535")),
            },
        };
        let host = host.to_ascii_lowercase();
        let host = if host == "*" {
            HostPattern::Any
        } else if let Some(domain) = host.strip_prefix("*.") {
            if domain.is_empty() || domain.contains('*') {
                return bad("a wildcard is `*` or `*.domain`");
            }
            HostPattern::Subdomains(domain.to_string())
        } else if host.is_empty() || host.contains('*') {
            return bad("a wildcard is `*` or `*.domain`");
        } else {
            HostPattern::Exact(host)
        };
        Ok(OutboundEntry { host, port })
    }

    fn matches(&self, host: &str, port: Option<u16>) -> bool {
        let host_ok = match &self.host {
            HostPattern::Any => true,
            HostPattern::Exact(name) => *name == host,
            HostPattern::Subdomains(domain) => host
                .strip_suffix(domain.as_str())
                .is_some_and(|label| label.len() > 1 && label.ends_with('.')),
        };
        host_ok && (self.port.is_none() || self.port == port)
    }
}

/// One invocation's outbound policy.
pub struct OutboundPolicy {
    allowed: Arc<[OutboundEntry]>,
    /// Headers the trigger added to the guest's input: a request carrying
    /// one unchanged (a proxy forwarding what it was given) has it removed.
    trigger_headers: Vec<(HeaderName, HeaderValue)>,
}

impl OutboundPolicy {
    /// Whether `host` (lowercase, brackets stripped) may be called, and
    /// whether an entry names it exactly (which allows internal addresses).
    fn check(&self, host: &str, port: Option<u16>) -> Option<Named> {
        let mut found = None;
        for entry in self.allowed.iter().filter(|e| e.matches(host, port)) {
            if matches!(entry.host, HostPattern::Exact(_)) {
                return Some(Named::Exactly);
            }
            found = Some(Named::ByWildcard);
        }
        found
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Named {
    Exactly,
    ByWildcard,
}

/// Addresses a guest may reach only when the manifest names the host:
/// loopback, private, shared (CGNAT), link-local (cloud metadata),
/// unspecified, multicast and broadcast, in IPv4 and IPv6.
pub fn is_internal(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || a == 0
                || (a == 100 && (64..128).contains(&b))
                || a >= 240
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_internal(IpAddr::V4(v4));
            }
            let first = v6.segments()[0];
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80
        }
    }
}

impl WasiHttpHooks for OutboundPolicy {
    fn send_request(
        &mut self,
        mut request: http::Request<WasiBody>,
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
        drop(fut);
        for (name, value) in &self.trigger_headers {
            if request.headers().get(name) == Some(value) {
                request.headers_mut().remove(name);
            }
        }
        let uri = request.uri().clone();
        let port = uri.port_u16().or(default_port(&uri));
        let host = uri.host().map(|h| {
            h.trim_start_matches('[')
                .trim_end_matches(']')
                .to_ascii_lowercase()
        });
        let (Some(host), Some(port)) = (host, port) else {
            return Box::new(async { Err(Error::HttpRequestDenied) });
        };
        let Some(named) = self.check(&host, Some(port)) else {
            return Box::new(async { Err(Error::HttpRequestDenied) });
        };
        Box::new(async move {
            let addrs: Vec<SocketAddr> = tokio::time::timeout(
                RESOLVE_TIMEOUT,
                tokio::net::lookup_host((host.as_str(), port)),
            )
            .await
            .map_err(|_| Error::DnsTimeout)?
            .map_err(|_| Error::DestinationNotFound)?
            .collect();
            let Some(first) = addrs.first().copied() else {
                return Err(Error::DestinationNotFound);
            };
            if named == Named::ByWildcard && addrs.iter().any(|a| is_internal(a.ip())) {
                tracing::debug!(%host, "outbound request to an internal address refused");
                return Err(Error::DestinationIpProhibited);
            }
            // Plain HTTP connects to the address checked above, so a second
            // lookup cannot answer differently (DNS rebinding); HTTPS checks
            // the certificate against the host name instead.
            if uri.scheme_str() != Some("https") {
                pin_address(&mut request, &host, first)?;
            }
            use http_body_util::BodyExt;
            let (response, io) = wasmtime_wasi_http::default_send_request(request, options).await?;
            Ok((
                response.map(BodyExt::boxed_unsync),
                Box::new(io) as Box<dyn Future<Output = _> + Send>,
            ))
        })
    }
}

/// Points the request's URI at `addr`, keeping the host name in `Host`.
fn pin_address(
    request: &mut http::Request<WasiBody>,
    host: &str,
    addr: SocketAddr,
) -> Result<(), Error> {
    let original = request.uri().clone();
    if !request.headers().contains_key(http::header::HOST) {
        let value = match original.port() {
            Some(port) => format!("{host}:{port}"),
            None => host.to_string(),
        };
        let value =
            http::HeaderValue::from_str(&value).map_err(|_| Error::HttpRequestUriInvalid)?;
        request.headers_mut().insert(http::header::HOST, value);
    }
    let mut parts = original.into_parts();
    parts.authority = Some(
        addr.to_string()
            .parse()
            .map_err(|_| Error::HttpRequestUriInvalid)?,
    );
    *request.uri_mut() = http::Uri::from_parts(parts).map_err(|_| Error::HttpRequestUriInvalid)?;
    Ok(())
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
        OutboundPolicy {
            allowed: entries
                .iter()
                .map(|s| OutboundEntry::parse(s).unwrap())
                .collect(),
            trigger_headers: Vec::new(),
        }
    }

    fn allows(p: &OutboundPolicy, host: &str, port: u16) -> bool {
        p.check(host, Some(port)).is_some()
    }

    #[test]
    fn denies_everything_by_default() {
        assert!(!allows(&policy(&[]), "example.com", 443));
    }

    #[test]
    fn matches_hosts_ports_and_wildcards() {
        let p = policy(&[
            "api.example.com",
            "localhost:8080",
            "*.cdn.net",
            "[::1]:9000",
        ]);
        assert!(allows(&p, "api.example.com", 443));
        assert!(allows(&p, "localhost", 8080));
        assert!(!allows(&p, "localhost", 8081));
        assert!(allows(&p, "a.cdn.net", 443));
        assert!(!allows(&p, "cdn.net", 443));
        assert!(!allows(&p, "xcdn.net", 443));
        assert!(!allows(&p, "evil.com", 443));
        assert!(allows(&p, "::1", 9000));
        assert_eq!(
            policy(&["*"]).check("anything.org", Some(1)),
            Some(Named::ByWildcard)
        );
        assert_eq!(p.check("localhost", Some(8080)), Some(Named::Exactly));
    }

    #[test]
    fn refuses_entries_whose_port_does_not_parse() {
        for bad in [
            "127.0.0.1:99999",
            "127.0.0.1:",
            "host:0",
            "host:+80",
            "::1",
            "[::1",
            "a*.b",
            "*.",
            "x/y",
        ] {
            assert!(OutboundEntry::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn knows_internal_addresses() {
        for internal in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fd00:ec2::254",
            "fe80::1",
            "::ffff:127.0.0.1",
        ] {
            assert!(is_internal(internal.parse().unwrap()), "{internal}");
        }
        for public in ["93.184.216.34", "2606:2800:220:1::1", "8.8.8.8"] {
            assert!(!is_internal(public.parse().unwrap()), "{public}");
        }
    }
}
