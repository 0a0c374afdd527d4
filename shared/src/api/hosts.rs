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
        let mut names: Vec<String> = configured.iter().map(|name| normalize(name)).collect();
        if listen.ip().is_loopback() {
            names.extend(LOOPBACK_NAMES.map(str::to_owned));
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
                let name = normalize(host);
                names.iter().any(|allowed| allowed == &name)
            }
        }
    }
}

/// A `Host` value without its port, lower-cased.
fn normalize(host: &str) -> String {
    let host = host.trim();
    let name = if host.starts_with('[') {
        host.split_inclusive(']').next().unwrap_or(host)
    } else {
        match host.rsplit_once(':') {
            Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
            _ => host,
        }
    };
    name.to_ascii_lowercase()
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
    let Some(host) = host.filter(|host| allowlist.allows(host)) else {
        let shown = header_text(&request, HOST).unwrap_or_else(|| "(none)".to_owned());
        let name = normalize(&shown);
        return ApiError::new(
            StatusCode::MISDIRECTED_REQUEST,
            "host_not_allowed",
            format!(
                "this server does not answer for the host `{}`; to allow it, start tasker serve \
                 with --allowed-host {} (or TASKER_ALLOWED_HOSTS={})",
                cut(&shown),
                cut(&name),
                cut(&name)
            ),
        )
        .into_response();
    };
    if let Some(origin) = header_text(&request, ORIGIN) {
        let origin_host = url::Url::parse(&origin)
            .ok()
            .and_then(|url| url.host_str().map(str::to_owned));
        if !origin_host.is_some_and(|origin_host| allowlist.allows(&origin_host)) {
            return ApiError::new(
                StatusCode::FORBIDDEN,
                "origin_not_allowed",
                format!(
                    "requests from web pages at `{}` are refused (the API is for `{}`); allow \
                     that name with --allowed-host or TASKER_ALLOWED_HOSTS",
                    cut(&origin),
                    cut(&host)
                ),
            )
            .into_response();
        }
    }
    next.run(request).await
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
            "127.0.0.1:9",
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
    }
}
