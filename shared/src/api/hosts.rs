//! Which `Host` (and `Origin`) names `tasker serve` answers, against DNS rebinding.
//!
//! A web page whose name an attacker re-points at 127.0.0.1 reaches a local server with its
//! own name in `Host`; refusing every name but the ones the server is meant to be reached by
//! closes that door (as Ollama did for CVE-2024-28224). A browser also names the page that
//! sent a cross-site request in `Origin`, so a request from a page on another site is refused
//! too, whatever it targets.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::http::header::{HOST, ORIGIN};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::error::ApiError;

/// The names served when listening on loopback.
pub const LOOPBACK_NAMES: [&str; 3] = ["localhost", "127.0.0.1", "[::1]"];

/// The `Host` names a server answers (any port).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostAllowlist {
    /// Every name (`*` configured): the operator vouches for what is in front.
    Any,
    /// These names, lower-cased; IPv6 addresses in brackets.
    Names(Vec<String>),
}

/// Listening beyond loopback without saying which names clients use.
#[derive(Debug, Clone, thiserror::Error)]
#[error(
    "tasker serve listens on {0}, beyond this machine, so it must know the names clients reach \
     it by: give --allowed-host NAME (repeatable) or TASKER_ALLOWED_HOSTS=NAME,NAME (`*` for any)"
)]
pub struct NamesRequired(pub SocketAddr);

impl HostAllowlist {
    /// The allowlist for a server bound to `listen`: the loopback names on loopback, the bind
    /// address elsewhere, plus `configured` (required beyond loopback).
    pub fn for_bind(listen: SocketAddr, configured: &[String]) -> Result<Self, NamesRequired> {
        if configured.iter().any(|name| name.trim() == "*") {
            return Ok(Self::Any);
        }
        let mut names: Vec<String> = configured.iter().map(|name| normalize(name).0).collect();
        if listen.ip().is_loopback() {
            names.extend(LOOPBACK_NAMES.map(str::to_owned));
            names.push(ip_name(listen.ip()));
        } else if names.is_empty() {
            return Err(NamesRequired(listen));
        } else if !listen.ip().is_unspecified() {
            names.push(ip_name(listen.ip()));
        }
        names.sort();
        names.dedup();
        Ok(Self::Names(names))
    }

    /// True when the `Host` value `host` (port optional) names an allowed host.
    pub fn allows(&self, host: &str) -> bool {
        match self {
            Self::Any => true,
            Self::Names(names) => {
                let (name, _) = normalize(host);
                names.iter().any(|allowed| allowed == &name)
            }
        }
    }
}

/// A `Host` value's name (lower-cased, without a trailing dot; an IPv6 address in brackets)
/// and its port. Text that is not a name and port comes back whole, matching no allowed name.
fn normalize(host: &str) -> (String, Option<u16>) {
    let host = host.trim().to_ascii_lowercase();
    let (name, port) = if let Some(rest) = host.strip_prefix('[') {
        let Some((address, after)) = rest.split_once(']') else {
            return (host, None);
        };
        match after.strip_prefix(':').map(str::parse::<u16>) {
            None if after.is_empty() => (format!("[{address}]"), None),
            Some(Ok(port)) => (format!("[{address}]"), Some(port)),
            _ => return (host, None),
        }
    } else if host.matches(':').count() > 1 {
        // A bare IPv6 address, as an operator may write it in a configured name.
        (format!("[{host}]"), None)
    } else {
        match host.rsplit_once(':') {
            Some((name, port)) => match port.parse::<u16>() {
                Ok(port) => (name.to_owned(), Some(port)),
                Err(_) => return (host, None),
            },
            None => (host.clone(), None),
        }
    };
    let name = name.strip_suffix('.').map_or(name.clone(), str::to_owned);
    (name, port)
}

fn ip_name(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("[{v6}]"),
    }
}

/// Refuses a request whose `Host` is not allowed (421), or that a web page on another site
/// sent (`Origin` not allowed: 403). `/healthz` answers whatever the name, for probes that
/// use an address.
pub async fn require_allowed_host(
    State(allowlist): State<Arc<HostAllowlist>>,
    request: Request,
    next: Next,
) -> Response {
    if request.uri().path() == super::HEALTH_PATH {
        return next.run(request).await;
    }
    let host = request
        .uri()
        .authority()
        .map(|authority| authority.as_str().to_owned())
        .or_else(|| header_text(&request, HOST));
    // No name at all comes only from clients that are not browsers (HTTP/1.0): a rebinding
    // attack always carries the attacker's name.
    let host = host.unwrap_or_else(|| LOOPBACK_NAMES[1].to_owned());
    if !allowlist.allows(&host) {
        let (name, _) = normalize(&host);
        return ApiError::new(
            StatusCode::MISDIRECTED_REQUEST,
            "host_not_allowed",
            format!(
                "this server does not answer for the host `{}`; to allow it, start tasker serve \
                 with --allowed-host {} (or TASKER_ALLOWED_HOSTS={})",
                cut(&host),
                cut(&name),
                cut(&name)
            ),
        )
        .into_response();
    }
    if let Some(origin) = header_text(&request, ORIGIN) {
        if !same_origin(&origin, &host) {
            return ApiError::new(
                StatusCode::FORBIDDEN,
                "origin_not_allowed",
                format!(
                    "requests from web pages at `{}` are refused: only pages served from `{}` \
                     itself may call it",
                    cut(&origin),
                    cut(&host)
                ),
            )
            .into_response();
        }
    }
    next.run(request).await
}

/// True when the browser's `Origin` names the host and port the request was sent to (a page
/// the server itself served). Without a port in `Host`, the origin's default port (80 or 443,
/// as behind a proxy) matches.
fn same_origin(origin: &str, host: &str) -> bool {
    let Ok(origin) = url::Url::parse(origin) else {
        return false;
    };
    let (Some(origin_host), Some(origin_port)) =
        (origin.host_str(), origin.port_or_known_default())
    else {
        return false;
    };
    let (origin_name, _) = normalize(origin_host);
    let (name, port) = normalize(host);
    origin_name == name && port.map_or(matches!(origin_port, 80 | 443), |port| port == origin_port)
}

fn header_text(request: &Request, name: axum::http::HeaderName) -> Option<String> {
    request
        .headers()
        .get(name)
        .map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned())
}

fn cut(text: &str) -> String {
    text.chars().take(100).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(text: &str) -> SocketAddr {
        text.parse().unwrap()
    }

    #[test]
    fn loopback_serves_the_loopback_names_on_any_port() {
        let list = HostAllowlist::for_bind(addr("127.0.0.1:3000"), &[]).unwrap();
        for host in [
            "localhost",
            "LOCALHOST:3000",
            "localhost.:3000",
            "127.0.0.1:9",
            "127.0.0.1",
            "[::1]:3000",
            "[::1]",
        ] {
            assert!(list.allows(host), "{host}");
        }
        for host in [
            "rebind.attacker.example:3000",
            "localhost.attacker.example",
            "127.0.0.1.nip.io",
            "",
            "[::2]",
            "[::1]junk",
            "localhost:http",
        ] {
            assert!(!list.allows(host), "{host}");
        }
    }

    #[test]
    fn beyond_loopback_the_names_are_required() {
        assert!(HostAllowlist::for_bind(addr("0.0.0.0:3000"), &[]).is_err());
        let names = ["tasker.internal".to_owned()];
        let list = HostAllowlist::for_bind(addr("10.0.0.5:3000"), &names).unwrap();
        assert!(list.allows("Tasker.Internal:3000"));
        assert!(list.allows("10.0.0.5:3000"));
        assert!(!list.allows("localhost"));
        let any = HostAllowlist::for_bind(addr("0.0.0.0:3000"), &["*".to_owned()]).unwrap();
        assert!(any.allows("whatever.example"));
        let v6 = HostAllowlist::for_bind(addr("[::]:3000"), &["2001:db8::1".to_owned()]).unwrap();
        assert!(v6.allows("[2001:db8::1]:3000"));
        let other_loopback = HostAllowlist::for_bind(addr("127.0.0.2:3000"), &[]).unwrap();
        assert!(other_loopback.allows("127.0.0.2:3000"));
    }

    #[test]
    fn only_the_servers_own_origin_passes() {
        assert!(same_origin("http://localhost:3000", "localhost:3000"));
        assert!(same_origin("http://LOCALHOST:3000", "localhost:3000"));
        assert!(same_origin("https://tasker.example", "tasker.example"));
        assert!(!same_origin("http://localhost:5173", "localhost:3000"));
        assert!(!same_origin("https://attacker.example", "localhost:3000"));
        assert!(!same_origin("null", "localhost:3000"));
        assert!(!same_origin("http://127.0.0.1:3000", "localhost:3000"));
    }
}
