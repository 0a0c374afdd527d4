//! What a `sendWebhook` payload may not ask for, checked at create and again at send: headers
//! that frame the request or route it are Tasker's to set. A `Content-Length` of the caller's
//! would cut the body the signature covers; a `Host` would reach another name-based virtual
//! host behind an address the resolver allowed; `Connection`, `Upgrade`, `Transfer-Encoding`
//! and the other hop-by-hop headers would change how the request travels.

use crate::task::ValidationError;

/// Headers a payload may not set (compared without regard to case).
pub const REFUSED_HEADERS: [&str; 11] = [
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "upgrade",
    "keep-alive",
    "proxy-connection",
    "proxy-authorization",
    "proxy-authenticate",
    "te",
    "trailer",
];

/// Refuses a payload whose `headers` object names a header of [`REFUSED_HEADERS`]. Anything
/// else about the payload is the sender's to judge when it runs (a payload that is not an
/// object passes here).
pub fn check_payload(payload: &str) -> Result<(), ValidationError> {
    let Ok(serde_json::Value::Object(payload)) = serde_json::from_str(payload) else {
        return Ok(());
    };
    let Some(serde_json::Value::Object(headers)) = payload.get("headers") else {
        return Ok(());
    };
    match headers
        .keys()
        .find(|name| REFUSED_HEADERS.contains(&name.trim().to_ascii_lowercase().as_str()))
    {
        Some(name) => Err(ValidationError::Invalid {
            field: "payload.headers",
            reason: format!(
                "may not set {name:?}: the request's framing, host and hop-by-hop headers are \
                 Tasker's to set"
            ),
        }),
        None => Ok(()),
    }
}

/// The host (and port, when the URL names one) a `sendWebhook` payload's `url` points at, in
/// lower case: what its circuit breaker is per. `None` for a payload without a readable one.
pub fn target_host(payload: &str) -> Option<String> {
    let serde_json::Value::Object(payload) = serde_json::from_str(payload).ok()? else {
        return None;
    };
    let url = payload.get("url")?.as_str()?;
    let (_, rest) = url.split_once("://")?;
    let authority = rest.split(['/', '?', '#']).next()?;
    let host = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host);
    (!host.is_empty()).then(|| host.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn framing_host_and_hop_by_hop_headers_are_refused_in_any_case() {
        for name in [
            "Host",
            "content-length",
            "Transfer-Encoding",
            "CONNECTION",
            "Upgrade",
            "TE",
        ] {
            let payload = format!(r#"{{"url":"http://x","body":1,"headers":{{"{name}":"v"}}}}"#);
            let err = check_payload(&payload).expect_err(name);
            assert!(err.to_string().contains(name), "{err}");
            assert!(err.to_string().starts_with("`payload.headers`"), "{err}");
        }
    }

    #[test]
    fn other_headers_and_other_shapes_pass() {
        let ok = r#"{"url":"http://x","body":1,"headers":{"Authorization":"Bearer t","X-Id":"1"}}"#;
        assert!(check_payload(ok).is_ok());
        assert!(check_payload(r#"{"url":"http://x","body":1}"#).is_ok());
        assert!(check_payload("[1,2]").is_ok());
    }

    #[test]
    fn the_target_host_is_the_urls_authority_in_lower_case() {
        let host = |url: &str| target_host(&format!(r#"{{"url": "{url}", "body": 1}}"#));
        assert_eq!(
            host("https://Hooks.Example.com/a?b#c").as_deref(),
            Some("hooks.example.com")
        );
        assert_eq!(
            host("http://u:p@127.0.0.1:8080/x").as_deref(),
            Some("127.0.0.1:8080")
        );
        assert_eq!(host("not a url"), None);
        assert_eq!(target_host("[1]"), None);
    }
}
